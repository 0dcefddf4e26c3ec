//! The streamed gradient pass (GBLM, ALGORITHMS.md §4; DESIGN-NEXT.md c3): the gradient of the
//! dense model's causal-LM loss for every block weight, per calibration sequence (batch 1), with
//! never more than one block's weights in memory.
//!
//! For a chunk of sequences (as many as fit [`ACTIVATION_BUDGET`], at least one):
//! 1. a forward, block by block on the host kernels, keeping each block's input per sequence
//!    (`blocks × seq × hidden` floats per sequence);
//! 2. the loss and its gradient at the last hidden states ([`HeadLoss`]);
//! 3. block by block in reverse: the block is read again, recomputed from its kept input and
//!    back-propagated: a dense block on the host with pare's backward kernels
//!    ([`DecoderBlock::vjp_host`]), an MoE block (or any block off the host) rebuilt on burn's
//!    autodiff device ([`DecoderBlock::vjp`]); each weight
//!    gradient `g` adds `(α g)²` into the memory-mapped artefact ([`GradientWriter`]) and the
//!    input gradient goes on to the block below.
//!
//! Memory: one block's weights (and on the autodiff device their gradients and the block's
//! intermediates for one sequence), the kept inputs of the chunk, embeddings and head. Time: a
//! forward, then per block and sequence a recomputed forward and a backward (about twice the
//! forward's GEMM work, plus the attention recomputed per head); each block is read from the
//! checkpoint twice per chunk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::backward::{BackwardHooks, backward_chunk};
use super::{ModelRunner, Progress};
use crate::calib::CalibrationSet;
use crate::compress::GradientSource;
use crate::error::{PareError, Result};
use crate::gradients::{FORMAT, GradientFile, GradientWriter, model_fingerprint, tensor_name};
use crate::model::grad::{HeadLoss, autodiff_device};
use crate::model::on_host;

/// Kept block inputs per chunk of sequences, in bytes.
pub const ACTIVATION_BUDGET: usize = 256 << 20;

/// What a finished pass reports.
#[derive(Clone, Debug, Serialize)]
pub struct GradientSummary {
    pub file: PathBuf,
    pub sequences: usize,
    pub seq_len: usize,
    pub alpha: f32,
    /// Mean over sequences of each sequence's mean next-token loss (nats).
    pub mean_loss: f64,
    /// Sequences whose forward and backward ran together (the kept inputs' chunk).
    pub chunk: usize,
    pub seconds: f64,
    pub notes: Vec<String>,
}

/// Adds each sequence's `(α g)²` into the artefact and drops a block's share from memory once
/// the block is done.
struct Accumulate<'a> {
    writer: &'a mut GradientWriter,
}

impl BackwardHooks for Accumulate<'_> {
    fn wants(&self, _: &crate::arch::LinearSlot) -> bool {
        true
    }

    fn gradient(
        &mut self,
        _: usize,
        slot: &crate::arch::LinearSlot,
        g: &crate::matrix::Matrix,
    ) -> Result<()> {
        self.writer.add_squared(&tensor_name(slot), g)
    }

    fn block_done(&mut self, _: usize, slots: &[crate::arch::LinearSlot]) -> Result<()> {
        for slot in slots {
            self.writer.release(&tensor_name(slot))?;
        }
        Ok(())
    }
}

/// Runs the pass over `calib` and writes the artefact to `dest` (temporary name, renamed once
/// complete). `model` is how the provenance names the model.
pub fn gradient_pass(
    runner: &ModelRunner,
    calib: &CalibrationSet,
    alpha: f32,
    dest: &Path,
    progress: &dyn Progress,
) -> Result<GradientSummary> {
    let t0 = Instant::now();
    let cfg = runner.cfg();
    let seq = calib.seq_len();
    if calib.ids.is_empty() || seq < 2 {
        return Err(PareError::Usage(format!(
            "the gradient pass needs calibration sequences of at least 2 tokens (have {} of {seq})",
            calib.ids.len()
        )));
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(PareError::Usage(format!(
            "gradient scale alpha {alpha} must be a positive number"
        )));
    }
    let (n_blocks, d) = (cfg.num_layers, cfg.hidden_size);
    let slots = runner.arch.all_linears();
    let mut notes = Vec::new();
    if cfg.num_experts > 0 {
        notes.push(
            "MoE: the routing enters as constants, so routers get no gradient and the gradients \
             of blocks below an MoE block lack the router's path"
                .to_string(),
        );
    }
    let fingerprint = model_fingerprint(&runner.arch, &runner.store)?;
    let mut meta = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("pare".to_string(), crate::VERSION.to_string()),
        ("model".to_string(), runner.dir.display().to_string()),
        ("model_fingerprint".to_string(), fingerprint),
        ("alpha".to_string(), alpha.to_string()),
        (
            "norm".to_string(),
            "l2: sqrt(sum_n (alpha*g_n)^2)".to_string(),
        ),
        (
            "loss".to_string(),
            "causal-LM mean next-token cross-entropy per sequence, batch 1".to_string(),
        ),
        ("calibration".to_string(), calib.source.clone()),
        ("calibration_seed".to_string(), calib.seed.to_string()),
        ("samples".to_string(), calib.ids.len().to_string()),
        ("seq_len".to_string(), seq.to_string()),
        ("mean_loss".to_string(), "pending".to_string()),
    ]);
    let mut writer = GradientWriter::create(dest, &slots, alpha, &meta)?;
    let ad = autodiff_device(&runner.device);
    // The head's loss on the host reads the model's own head; elsewhere a copy on `ad`.
    let head = (!on_host(&runner.device)).then(|| HeadLoss::new(&runner.ends, &ad));
    let mut loss = |_: usize, s: &[u32], hv: Vec<f32>| match &head {
        Some(head) => head.loss_and_grad(hv, s),
        None => runner.ends.loss_and_grad_host(&hv, s),
    };
    let per_seq = n_blocks * seq * d * 4;
    let chunk = (ACTIVATION_BUDGET / per_seq.max(1)).clamp(1, calib.ids.len());
    let mut loss_sum = 0f64;
    progress.start("gradients", (calib.ids.len() * n_blocks * 2) as u64);
    let mut hooks = Accumulate {
        writer: &mut writer,
    };
    for ids in calib.ids.chunks(chunk) {
        loss_sum += backward_chunk(runner, ids, &mut hooks, &mut loss, progress)?;
    }
    progress.finish();
    let mean_loss = loss_sum / calib.ids.len() as f64;
    meta.insert("mean_loss".to_string(), format!("{mean_loss:.6}"));
    let file = writer.finish(&meta)?;
    Ok(GradientSummary {
        file,
        sequences: calib.ids.len(),
        seq_len: seq,
        alpha,
        mean_loss,
        chunk,
        seconds: t0.elapsed().as_secs_f64(),
        notes,
    })
}

/// The gradient artefacts of the plan's steps that score with one (GBLM), by step index: each
/// `gradients: FILE` opened and checked against the model and the step's targets, or computed
/// by [`gradient_pass`] over the plan's calibration (once per α; written beside `out` under a
/// hidden name and unlinked once mapped, so nothing is left behind). Each entry of `profiles`
/// says where a step's gradients came from.
pub fn open_for_plan(
    runner: &ModelRunner,
    plan: &crate::recipe::Plan,
    out: &Path,
    profiles: &mut Vec<serde_json::Value>,
    progress: &dyn Progress,
) -> Result<BTreeMap<usize, std::sync::Arc<GradientFile>>> {
    let mut opened = BTreeMap::new();
    let mut computed: Vec<(f32, std::sync::Arc<GradientFile>)> = Vec::new();
    let all = runner.arch.all_linears();
    let mut fingerprint = None;
    for (i, step) in plan.steps.iter().enumerate() {
        let Some(source) = step.method.compressor().gradients() else {
            continue;
        };
        let fp = match &fingerprint {
            Some(f) => f,
            None => fingerprint.insert(model_fingerprint(&runner.arch, &runner.store)?),
        };
        let slots: Vec<_> = all
            .iter()
            .filter(|s| step.targets.contains(&s.id))
            .cloned()
            .collect();
        let file = match source {
            GradientSource::File(path) => {
                let mut f = GradientFile::open(&path)?;
                f.check(fp, &slots)?;
                profiles.push(serde_json::json!({
                    "profile": "gradients", "step": i, "file": path,
                    "alpha": f.metadata.get("alpha"), "samples": f.metadata.get("samples"),
                    "seq_len": f.metadata.get("seq_len"), "mean_loss": f.metadata.get("mean_loss"),
                }));
                std::sync::Arc::new(f)
            }
            GradientSource::Pass { alpha } => {
                if let Some((_, f)) = computed.iter().find(|(a, _)| *a == alpha) {
                    opened.insert(i, f.clone());
                    continue;
                }
                let calib = super::compress::load_calibration(runner, plan)?;
                let name = out
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "out".into());
                let parent = match out.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                std::fs::create_dir_all(&parent).map_err(|e| {
                    PareError::input(&parent, format!("cannot create the output's folder: {e}"))
                })?;
                let dest = parent.join(format!(
                    ".{name}.gradients-{}.safetensors",
                    std::process::id()
                ));
                let summary = gradient_pass(runner, &calib, alpha, &dest, progress)?;
                for n in &summary.notes {
                    progress.warn(&format!("steps[{i}]: {n}"));
                }
                progress.warn(&format!(
                    "steps[{i}]: gradient pass over {} sequences of {} tokens in {:.1} s (mean loss {:.4}); to reuse it across recipes, write it once with `pare gradients` and set `gradients: FILE`",
                    summary.sequences, summary.seq_len, summary.seconds, summary.mean_loss
                ));
                let opened_file = GradientFile::open(&dest);
                // Mapped (or failed): the file itself is no longer needed.
                let _ = std::fs::remove_file(&dest);
                let mut f = opened_file?;
                f.check(fp, &all)?;
                let mut entry = serde_json::to_value(&summary).map_err(|e| {
                    PareError::Internal(format!("cannot serialise the gradient summary: {e}"))
                })?;
                if let Some(o) = entry.as_object_mut() {
                    o.insert("profile".into(), "gradients".into());
                    o.insert("step".into(), i.into());
                    o.insert("file".into(), "computed for this run".into());
                }
                profiles.push(entry);
                let f = std::sync::Arc::new(f);
                computed.push((alpha, f.clone()));
                f
            }
        };
        opened.insert(i, file);
    }
    Ok(opened)
}
