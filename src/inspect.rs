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
    /// Every aligned group of 4 input columns has at most 2 non-zeros.
    pub is_2of4: bool,
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
    let store = TensorStore::open(dir)?;
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
        linears.push(LinearInfo {
            id: slot.id,
            key: slot.key,
            shape: [slot.rows, slot.cols],
            zeros: w.sparsity(),
            is_2of4: w.satisfies_n_of_m(2, 4),
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
            "{:<32} {:>12} {:>7} {:>5} {:>18} {:>6}",
            "linear", "shape", "zeros", "2:4", "format", "bits"
        )?;
        for l in &self.linears {
            writeln!(
                f,
                "{:<32} {:>12} {:>6.1}% {:>5} {:>18} {:>6.2}{}",
                l.id,
                format!("{}x{}", l.shape[0], l.shape[1]),
                l.zeros * 100.0,
                if l.is_2of4 { "yes" } else { "no" },
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
