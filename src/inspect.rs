//! `pare inspect`: what a checkpoint holds — architecture, parameters, dtype, every linear by
//! canonical id with shape, sparsity, 2:4 conformity, storage format and bits per weight, NaN/Inf
//! counts, and the tokenizer's vocabulary size.

use std::path::Path;

use serde::Serialize;

use crate::arch::Architecture;
use crate::checkpoint::TensorStore;
use crate::config::HfConfig;
use crate::error::Result;
use crate::tokenizer::TextTokenizer;

/// One linear layer as stored.
#[derive(Clone, Debug, Serialize)]
pub struct LinearInfo {
    pub id: String,
    pub key: String,
    pub shape: [usize; 2],
    /// Fraction of exact zeros in the (dequantised) weight.
    pub zeros: f64,
    /// Every aligned group of 4 input columns has at most 2 non-zeros (and d_in is a multiple
    /// of 4).
    pub is_2of4: bool,
    /// `"2:4"` or `"4:8"`: the N:M pattern (keep N of M) every *whole* aligned group of M
    /// columns satisfies (2:4 checked first), when the layer is at least 50% sparse that way.
    pub n_of_m: Option<String>,
    /// With `n_of_m`: the columns at the end of each row outside the whole groups (d_in mod M),
    /// when there are any. The layer is then not exactly N:M (pare keeps `ceil(len·N/M)` of
    /// such a tail group).
    pub n_of_m_tail: Option<usize>,
    /// `dense`, `pack-quantized`, `sparse-bitmask` or `sparse-24-bitmask`.
    pub format: String,
    /// Stored bytes of this linear's tensors.
    pub bytes: u64,
    /// Stored bits per weight (bytes·8 / weights).
    pub bits_per_weight: f64,
    pub non_finite: usize,
}

/// The whole `inspect` answer.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub dir: String,
    pub architecture: String,
    pub parameters: u64,
    pub dtype: String,
    pub layers: usize,
    pub tokenizer_vocab: Option<usize>,
    pub linears: Vec<LinearInfo>,
    pub linear_bytes: u64,
    pub total_bytes: u64,
    /// NaN/Inf values over all float tensors.
    pub non_finite: usize,
    pub quantization_format: Option<String>,
}

/// Inspects the checkpoint in `dir`.
pub fn inspect(dir: &Path) -> Result<Inspection> {
    let cfg = HfConfig::load(dir)?;
    let mut store = TensorStore::open(dir)?;
    store.set_check_finite(false); // counted and shown, not refused
    let qcfg = match cfg.raw.get("quantization_config") {
        Some(v) => crate::checkpoint::QuantizationConfig::from_config(v, &dir.join("config.json"))?,
        None => None,
    };
    let quantization_format = cfg
        .raw
        .get("quantization_config")
        .and_then(|q| q.get("format"))
        .and_then(|f| f.as_str())
        .map(str::to_string);
    let tokenizer_vocab = TextTokenizer::load(dir).ok().map(|t| t.vocab_size());
    let arch = Architecture::new(cfg);
    let mut linears = Vec::new();
    let mut linear_bytes = 0;
    let mut non_finite = 0;
    for slot in arch.all_linears() {
        let w = store.read_linear(&slot.key, slot.rows, slot.cols, qcfg.as_ref())?;
        let prefix = format!("{}.", slot.key);
        let names: Vec<&str> = store
            .names()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(".bias"))
            .collect();
        let bytes: u64 = names
            .iter()
            .filter_map(|n| store.info(n))
            .map(|i| i.bytes() as u64)
            .sum();
        let format = if names.iter().any(|n| n.ends_with(".weight_packed")) {
            "pack-quantized"
        } else if names.iter().any(|n| n.ends_with(".compressed")) {
            if names.iter().any(|n| n.ends_with(".row_offsets")) {
                "sparse-bitmask"
            } else {
                "sparse-24-bitmask"
            }
        } else {
            "dense"
        };
        let nf = w.non_finite();
        non_finite += nf;
        linear_bytes += bytes;
        let (n_of_m, n_of_m_tail) = n_of_m_of(&w);
        linears.push(LinearInfo {
            id: slot.id.to_string(),
            key: slot.key,
            shape: [slot.rows, slot.cols],
            zeros: w.sparsity(),
            is_2of4: w.satisfies_n_of_m(2, 4),
            n_of_m,
            n_of_m_tail,
            format: format.to_string(),
            bytes,
            bits_per_weight: bytes as f64 * 8.0 / (slot.rows * slot.cols) as f64,
            non_finite: nf,
        });
    }
    let mut parameters: u64 = linears
        .iter()
        .map(|l| (l.shape[0] * l.shape[1]) as u64)
        .sum();
    for name in arch.passthrough_tensors(&store) {
        if let Some(info) = store.info(&name) {
            parameters += info.shape.iter().product::<usize>() as u64;
            if matches!(
                info.dtype,
                crate::checkpoint::Dtype::F32
                    | crate::checkpoint::Dtype::BF16
                    | crate::checkpoint::Dtype::F16
            ) {
                let (_, v) = store.read_f32(&name)?;
                non_finite += v.iter().filter(|x| !x.is_finite()).count();
            }
        }
    }
    Ok(Inspection {
        dir: dir.display().to_string(),
        architecture: arch.cfg.architecture.clone(),
        parameters,
        dtype: format!("{:?}", store.main_float_dtype()),
        layers: arch.cfg.num_layers,
        tokenizer_vocab,
        linears,
        linear_bytes,
        total_bytes: store.total_bytes(),
        non_finite,
        quantization_format,
    })
}

/// The first of 2:4 and 4:8 that every whole aligned group of `w` satisfies, and the tail width
/// when d_in is not a multiple of M.
fn n_of_m_of(w: &crate::Matrix) -> (Option<String>, Option<usize>) {
    for (n, m) in [(2usize, 4usize), (4, 8)] {
        let whole = w.cols / m * m;
        if whole == 0 || w.sparsity() < 0.5 - 1e-9 {
            continue;
        }
        let ok = (0..w.rows).all(|r| {
            w.row(r)[..whole]
                .chunks(m)
                .all(|g| g.iter().filter(|v| **v != 0.0).count() <= n)
        });
        if ok {
            let tail = w.cols - whole;
            return (Some(format!("{n}:{m}")), (tail > 0).then_some(tail));
        }
    }
    (None, None)
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model         {}", self.dir)?;
        writeln!(
            f,
            "architecture  {} ({} blocks)",
            self.architecture, self.layers
        )?;
        writeln!(f, "parameters    {}", self.parameters)?;
        writeln!(f, "dtype         {}", self.dtype)?;
        if let Some(q) = &self.quantization_format {
            writeln!(f, "format        {q}")?;
        }
        match self.tokenizer_vocab {
            Some(v) => writeln!(f, "tokenizer     {v} tokens")?,
            None => writeln!(f, "tokenizer     (no tokenizer.json)")?,
        }
        writeln!(
            f,
            "bytes         {} total, {} in block linears",
            self.total_bytes, self.linear_bytes
        )?;
        if self.non_finite > 0 {
            writeln!(
                f,
                "WARNING       {} NaN/Inf values in the weights",
                self.non_finite
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<32} {:>12} {:>7} {:>13} {:>18} {:>6}",
            "linear", "shape", "zeros", "N:M", "format", "bits"
        )?;
        for l in &self.linears {
            let nm = match (&l.n_of_m, l.n_of_m_tail) {
                (Some(p), None) => p.clone(),
                (Some(p), Some(t)) => format!("{p}+tail {t}"),
                (None, _) => "-".to_string(),
            };
            writeln!(
                f,
                "{:<32} {:>12} {:>6.1}% {:>13} {:>18} {:>6.2}{}",
                l.id,
                format!("{}x{}", l.shape[0], l.shape[1]),
                l.zeros * 100.0,
                nm,
                l.format,
                l.bits_per_weight,
                if l.non_finite > 0 {
                    format!("  ({} NaN/Inf)", l.non_finite)
                } else {
                    String::new()
                }
            )?;
        }
        Ok(())
    }
}

/// `pare inspect --super-experts`: the Super-Experts profile of `runner`'s model on `calib`
/// (one streamed dense forward; see [`crate::allocate::super_experts`]).
pub fn super_experts(
    runner: &crate::pipeline::ModelRunner,
    calib: &crate::calib::CalibrationSet,
    progress: &dyn crate::pipeline::Progress,
) -> Result<crate::allocate::super_experts::SuperExpertProfile> {
    use crate::allocate::super_experts::SuperExperts;
    let profiler = SuperExperts::new(runner.cfg().num_layers, false);
    let found = profiler.found.clone();
    let mut profilers: Vec<Box<dyn crate::allocate::Profiler>> = vec![Box::new(profiler)];
    crate::pipeline::profile::profile_calibration(runner, calib, &mut profilers, progress)?;
    let mut allocation = crate::allocate::Allocation::default();
    for p in profilers {
        p.finish(&mut allocation)?;
    }
    Ok(found.take())
}

/// The profile as text: the rule's thresholds, the super experts, the largest expert peaks and
/// the dense blocks' largest down_proj channels.
pub fn super_experts_text(p: &crate::allocate::super_experts::SuperExpertProfile) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "super experts (max |down_proj output| > P99.5 = {:.4} and > floor(max/10) = {}, blocks < {}):",
        p.p99_5, p.tenth_of_max, p.blocks_below
    );
    if p.peaks.is_empty() {
        let _ = writeln!(s, "  none: the model has no MoE experts in those blocks");
    } else if p.super_experts.is_empty() {
        let _ = writeln!(s, "  none");
    }
    for e in &p.super_experts {
        let _ = writeln!(
            s,
            "  blocks.{}.moe.experts.{}  max |out| {:.4}",
            e.block, e.expert, e.max_abs_out
        );
    }
    let mut peaks = p.peaks.clone();
    peaks.sort_by(|a, b| b.max_abs_out.total_cmp(&a.max_abs_out));
    if !peaks.is_empty() {
        let _ = writeln!(s, "largest expert peaks:");
        for e in peaks.iter().take(8) {
            let _ = writeln!(
                s,
                "  blocks.{}.moe.experts.{}  {:.4}",
                e.block, e.expert, e.max_abs_out
            );
        }
    }
    if !p.dense_channels.is_empty() {
        let _ = writeln!(
            s,
            "dense down_proj outputs (massive: > 100 and > 1000 × the median channel max):"
        );
        for c in &p.dense_channels {
            let _ = writeln!(
                s,
                "  blocks.{}.mlp.down  channel {}  max |out| {:.4}  median {:.4}{}",
                c.block,
                c.channel,
                c.max_abs_out,
                c.median_channel_max,
                if c.massive { "  massive" } else { "" }
            );
        }
    }
    s
}
