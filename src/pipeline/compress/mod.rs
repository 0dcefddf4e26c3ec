//! The compression block loop (DESIGN.md "data flow"): for each decoder block, gather the
//! statistics the recipe's steps need from the block's calibration inputs, compress each
//! targeted linear with every step in order, and compute the block's outputs as the next
//! block's inputs — in the ordering the plan's `sequential` chooses (see [`block`]). Only one
//! block's weights are in memory; each block is written as it finishes.
//!
//! Design notes (against DESIGN-NEXT.md's proposal, which this follows otherwise):
//! - `protect` is applied here, once, not by each method: no method can forget it.
//! - The block's statistics are gathered per stage in `linear` mode and passed to every
//!   compressor as one [`crate::stats::Stats`] with the linear's tap point, so a method can also
//!   read routing or another point's statistics (MC-MoE, Super Experts).
//! - Pre-passes fill the [`crate::allocate::Allocation`] before this loop
//!   ([`crate::pipeline::allocate`]); the `Profiler` trait lives in `allocate/` so that methods
//!   can hand out profilers without depending on the pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;

use super::progress::Progress;
use super::runner::ModelRunner;
use crate::allocate::Allocation;
use crate::calib::CalibrationSet;
use crate::checkpoint::{CheckpointWriter, OutTensor};
use crate::compress::CompressedLinear;
use crate::compress::kit::select::tail_note;
use crate::error::Result;
use crate::model::Rope;
use crate::recipe::{CalibSource, Plan, Propagate, Sequential};
use crate::report::{BlockTiming, CalibrationInfo, LinearReport, Report};

mod block;
mod experts;
mod export;
mod metrics;
pub mod resume;

use block::{BlockJob, LoopCtx};
use metrics::relative_error;

/// Input rows kept per tap point for measuring reconstruction error: at most this many.
const ERROR_TOKENS: usize = 1024;
/// At least this many (or every calibration token, when there are fewer).
const MIN_ERROR_TOKENS: usize = 128;
/// The error measurement runs two GEMMs per linear over the kept rows, so keeping at most
/// 1/`ERROR_SHARE` of the calibration tokens bounds its cost by 2/`ERROR_SHARE` of one forward
/// (1/8 here). With a fixed 1,024 rows, 16 × 256 calibration of a 7B-shaped model spent half a
/// forward on the metric alone.
const ERROR_SHARE: usize = 16;

/// Calibration rows the reported ‖WX − W′X‖ / ‖WX‖ is measured on, of `tokens` in all: the
/// first `tokens / 16`, clamped to `128..=1024` (and never more than `tokens`).
fn error_tokens(tokens: usize) -> usize {
    (tokens / ERROR_SHARE)
        .clamp(MIN_ERROR_TOKENS, ERROR_TOKENS)
        .min(tokens)
}

/// Where a finished linear goes: its report row, then its tensors into the writer, as soon as
/// the last step has compressed it (so that its original and compressed copies can be dropped).
pub(super) struct Sink<'a> {
    writer: &'a mut CheckpointWriter,
    export: &'a mut export::ExportState,
    report: &'a mut Report,
    plan: &'a Plan,
    device: &'a burn::tensor::Device,
}

impl Sink<'_> {
    /// Reports and writes a compressed linear; `kept` are the first calibration rows of its
    /// input, for the reconstruction error against `original`.
    fn finish(
        &mut self,
        st: &block::LinearState,
        original: &crate::matrix::Matrix,
        c: &CompressedLinear,
        kept: Option<&crate::matrix::Matrix>,
    ) -> Result<()> {
        let rel_error = match kept {
            Some(x) => relative_error(original, &c.weight, x, self.device)?,
            None => None,
        };
        let pattern = self
            .plan
            .steps
            .iter()
            .filter(|s| s.targets.contains(&st.orig))
            .find_map(|s| s.pattern());
        self.report.linears.push(LinearReport {
            id: st.slot.id.to_string(),
            shape: [st.slot.rows, st.slot.cols],
            method: st.methods.join(" + "),
            sparsity: c.weight.sparsity(),
            bits: c.quant.as_ref().map(|q| q.scheme.bits as f32),
            pattern: pattern.map(|p| format!("{}:{}", p.n, p.m)),
            pattern_exact: pattern.map(|p| tail_note(st.slot.cols, p).is_none()),
            rel_error,
            warnings: st.notes.clone(),
        });
        self.write(&st.slot, c, st.hints, true)
    }

    /// Writes a linear's tensors in the export layout (`compressed`: some step touched it).
    fn write(
        &mut self,
        slot: &crate::arch::LinearSlot,
        c: &CompressedLinear,
        hints: crate::compress::ExportHints,
        compressed: bool,
    ) -> Result<()> {
        for (name, t) in self.export.encode(slot, c, hints, compressed)? {
            self.writer.add(name, t)?;
        }
        Ok(())
    }
}

/// What `compress` produced.
pub struct CompressOutcome {
    pub out: PathBuf,
    pub report: Report,
}

/// What identifies a run for `--resume`: pare's version, the applied recipe, the model's
/// directory and files (names, sizes, modification times), the calibration tokens' source and
/// shape.
fn resume_fingerprint(
    runner: &ModelRunner,
    plan: &Plan,
    recipe_text: &str,
    calib: &CalibrationSet,
) -> serde_json::Value {
    // Name, size and modification time (ns) of every file: a weight edited in place changes it.
    let mut files: Vec<(String, u64, u64)> = std::fs::read_dir(&runner.dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let m = e.metadata().ok();
            let modified = m
                .as_ref()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            (
                e.file_name().to_string_lossy().into_owned(),
                m.map_or(0, |m| m.len()),
                modified,
            )
        })
        .collect();
    files.sort();
    let model = runner
        .dir
        .canonicalize()
        .unwrap_or_else(|_| runner.dir.clone());
    serde_json::json!({
        "pare": crate::VERSION,
        "recipe": recipe_text,
        "recipe_path": plan.recipe_path,
        "model": model,
        "files": files,
        "calibration": { "source": calib.source, "samples": calib.ids.len(), "seq_len": calib.seq_len(), "seed": calib.seed },
    })
}

/// Loads the calibration set the plan asks for.
pub fn load_calibration(runner: &ModelRunner, plan: &Plan) -> Result<CalibrationSet> {
    let c = &plan.calibration;
    match &c.source {
        CalibSource::Text(path) => {
            CalibrationSet::from_text(path, &runner.tokenizer, c.samples, c.seq_len, c.seed)
        }
        CalibSource::Ids(path) => {
            CalibrationSet::from_ids_file(path, Some(c.samples), Some(c.seq_len), runner.ends.vocab)
        }
        // A data-free recipe: no sequences (no statistics, no reconstruction error).
        CalibSource::None => Ok(CalibrationSet {
            ids: Vec::new(),
            source: "none".into(),
            seed: c.seed,
        }),
    }
}

/// The plan's expert-pruning step, if any, with the architecture of the output (fewer experts
/// per MoE block). It must target every MoE router (the config has one expert count) and keep
/// at least `num_experts_per_tok` experts.
fn expert_pruning(
    runner: &ModelRunner,
    plan: &Plan,
) -> Result<
    Option<(
        crate::compress::expert_prune::Params,
        crate::arch::Architecture,
    )>,
> {
    use crate::compress::Method;
    let mut found = plan.steps.iter().filter_map(|s| match &s.method {
        Method::ExpertPrune(p) => Some((s, p)),
        _ => None,
    });
    let Some((step, p)) = found.next() else {
        return Ok(None);
    };
    let err = |m: String| crate::PareError::recipe(&plan.recipe_path, step.key.clone(), m);
    if found.next().is_some() {
        return Err(err("expert-prune may appear once in a recipe".into()));
    }
    let cfg = runner.cfg();
    let routers: Vec<crate::id::LinearId> = (0..cfg.num_layers)
        .filter(|&b| cfg.is_moe_block(b))
        .map(|b| crate::id::LinearId::new(b, crate::id::LinearRole::Router))
        .collect();
    if let Some(r) = routers.iter().find(|r| !step.targets.contains(r)) {
        return Err(err(format!(
            "`{r}` is not targeted: config.json holds one expert count, so expert-prune must prune every MoE block (target `blocks.*.moe.router`)"
        )));
    }
    if p.kept < cfg.experts_per_token {
        return Err(err(format!(
            "fraction {} keeps {} of {} experts, fewer than num_experts_per_tok {}",
            p.fraction, p.kept, p.experts, cfg.experts_per_token
        )));
    }
    let mut out = cfg.clone();
    out.num_experts = p.kept;
    Ok(Some((p.clone(), crate::arch::Architecture::new(out))))
}

/// Compresses `runner`'s model with `plan` and the pre-decided `allocation`, writing into
/// `out`.
pub fn compress(
    runner: &ModelRunner,
    plan: &Plan,
    allocation: &Allocation,
    recipe_text: &str,
    out: &Path,
    force: bool,
    resume: bool,
    progress: &dyn Progress,
) -> Result<CompressOutcome> {
    let t_start = Instant::now();
    let cfg = runner.cfg();
    let dtype = runner.store.main_float_dtype();
    let calib = load_calibration(runner, plan)?;
    let seq = calib.seq_len();
    let mut writer =
        CheckpointWriter::create(out, &runner.dir, force, plan.export.max_shard_bytes)?;
    for p in writer.removed_stale() {
        progress.warn(&format!(
            "removed {}, left by an interrupted earlier run",
            p.display()
        ));
    }
    let rope = Rope::new(cfg, seq.max(1), &runner.device);
    let mut hidden: Vec<Tensor<3>> = calib
        .ids
        .chunks(runner.batch.max(1))
        .map(|c| runner.ends.embed(c))
        .collect::<Result<_>>()?;
    let scale_dtype = plan.export.scale_dtype(dtype);
    let error_rows = error_tokens(calib.ids.iter().map(Vec::len).sum());
    let ctx = LoopCtx::new(
        &plan.steps,
        allocation,
        plan.export.grid(dtype),
        plan.calibration.experts,
        error_rows,
    );
    let mut report = Report::default();
    let mut export_state = export::ExportState::new(plan.export.format, dtype, scale_dtype);
    let pruning = expert_pruning(runner, plan)?;

    // The resume state: replay what a killed run finished, then go on from there.
    let fingerprint = resume_fingerprint(runner, plan, recipe_text, &calib);
    let (mut state, resumed, notes) = resume::ResumeDir::open(out, &fingerprint, resume)?;
    for n in &notes {
        progress.warn(n);
    }
    let first = match resumed {
        None => 0,
        Some(r) => {
            for b in 0..=r.last_block {
                for t in state.block_tensors(b)? {
                    writer.add_stored(t)?;
                }
            }
            let (rep, exp) = state.state(r.last_block)?;
            report = rep;
            export_state.restore(&exp).ok_or_else(|| {
                crate::PareError::Usage(format!(
                    "--resume: the saved export state of block {} is damaged; run without --resume",
                    r.last_block
                ))
            })?;
            hidden = state.hidden(r.last_block, &runner.device)?;
            r.last_block + 1
        }
    };
    writer.record();

    // The previous block's resume state, being written while this block runs.
    let mut pending = resume::PendingSave::default();
    progress.start("compress", cfg.num_layers as u64);
    for _ in 0..first {
        progress.step();
    }
    for b in first..cfg.num_layers {
        if crate::interrupt::check().is_err() {
            pending.wait()?;
            state.keep();
            return Err(crate::PareError::InterruptedResumable(
                state.dir().to_path_buf(),
            ));
        }
        let t_block = Instant::now();
        let weights = runner
            .arch
            .read_block(&runner.store, b, runner.qcfg.as_ref())?;
        // From here the block's weights live once, in `device_block` (on the host, the CPU
        // kernels compute from that copy): the host read is moved in.
        let (mut device_block, slots) = runner.arch.into_block(weights, &runner.device)?;
        let slots = match &pruning {
            Some((params, out_arch)) if cfg.is_moe_block(b) => {
                let protected: Vec<usize> = allocation
                    .protected_ids()
                    .into_iter()
                    .filter(|id| id.block == b)
                    .filter_map(|id| match id.role {
                        crate::id::LinearRole::Expert { index, .. } => Some(index),
                        _ => None,
                    })
                    .collect();
                let pruned = experts::prune(
                    &mut device_block,
                    slots,
                    out_arch,
                    b,
                    params,
                    &protected,
                    &hidden,
                    &rope,
                )?;
                export_state.count_removed(pruned.removed);
                report.expert_pruning.push(pruned.report);
                pruned.slots
            }
            _ => slots.into_iter().map(|s| (s.clone(), s.id)).collect(),
        };
        let mut sink = Sink {
            writer: &mut writer,
            export: &mut export_state,
            report: &mut report,
            plan,
            device: &runner.device,
        };
        let mut job = BlockJob::new(&ctx, device_block, slots, &mut sink)?;
        let linear = plan.sequential == Sequential::Linear && job.needs_data();
        let last = b + 1 == cfg.num_layers;
        let mut release = || pending.wait();
        if linear {
            job.run_linear_mode(&mut hidden, &rope, last, &mut release, &mut sink, progress)?;
        } else {
            job.run_block_mode(
                &mut hidden,
                &rope,
                plan.propagate == Propagate::Compressed,
                last,
                &mut release,
                &mut sink,
                progress,
            )?;
        }
        report
            .experts
            .extend(std::mem::take(&mut job.experts).into_values());
        drop(job);
        // The block's weights and per-batch buffers are free now; hand their pages back
        // before the next block allocates its own (see crate::mem).
        crate::mem::release_free_heap();
        report.blocks.push(BlockTiming {
            block: b,
            seconds: t_block.elapsed().as_secs_f64(),
        });
        // One writer at a time (both orderings have released it already).
        pending.wait()?;
        let (saving, stored) = state.save_block(
            b,
            writer.take_journal(),
            &report,
            export_state.snapshot(),
            &hidden,
        )?;
        pending = saving;
        // The output takes the block's tensors from the resume state's file.
        for t in stored {
            writer.add_stored(t)?;
        }
        progress.step();
    }
    pending.wait()?;
    writer.stop_recording()?;
    progress.finish();
    // Everything that is not a block linear: copied byte for byte.
    for name in runner.arch.passthrough_tensors(&runner.store) {
        let (dt, shape, bytes) = runner.store.read_raw(&name)?;
        writer.add(
            name,
            OutTensor {
                dtype: dt,
                shape,
                bytes: bytes.to_vec(),
            },
        )?;
    }
    let mut config = export_state.config_json(&cfg.raw, plan, allocation, &calib)?;
    if let (Some((p, _)), Some(obj)) = (&pruning, config.as_object_mut()) {
        // transformers 5 writes `num_local_experts`, transformers 4 `num_experts`: edit those
        // present.
        for key in ["num_local_experts", "num_experts"] {
            if obj.contains_key(key) {
                obj.insert(key.into(), p.kept.into());
            }
        }
    }
    let tokenizer_files: Vec<PathBuf> = [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
    ]
    .iter()
    .map(|f| runner.dir.join(f))
    .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert("pare_version".to_string(), crate::VERSION.to_string());
    metadata.insert("pare_calibration".to_string(), calib.source.clone());
    metadata.insert("pare_seed".to_string(), calib.seed.to_string());
    let extra = vec![("recipe.yaml".to_string(), recipe_text.as_bytes().to_vec())];
    // With `format: gguf`, model.gguf is converted from the finished checkpoint in the temporary
    // folder, so both appear together or not at all.
    let mut gguf_report = None;
    let out_dir = match plan.export.gguf {
        None => writer.finish(&config, &tokenizer_files, &extra, metadata)?,
        Some(ty) => {
            let name = out
                .file_name()
                .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
            writer.finish_with(&config, &tokenizer_files, &extra, metadata, &mut |tmp| {
                let mut r =
                    crate::gguf::convert_checkpoint(tmp, &tmp.join("model.gguf"), ty, &name)?;
                r.file = out.join("model.gguf").display().to_string();
                gguf_report = Some(r);
                Ok(())
            })?
        }
    };
    report.gguf = gguf_report;
    state.remove()?;

    report.provenance.calibration = Some(CalibrationInfo {
        source: calib.source.clone(),
        samples: calib.ids.len(),
        seq_len: seq,
        seed: calib.seed,
        error_tokens: error_rows,
    });
    report.provenance.recipe = Some(recipe_text.to_string());
    report.allocation = (!allocation.is_empty())
        .then(|| serde_json::to_value(allocation))
        .transpose()
        .map_err(|e| crate::PareError::Internal(format!("cannot serialise the allocation: {e}")))?;
    report.totals.seconds = t_start.elapsed().as_secs_f64();
    report.totals.params = runner.parameter_count();
    let (before, after, compact) = export_state.linear_bytes();
    report.totals.bytes_linear_before = before;
    report.totals.bytes_linear_after = after;
    report.totals.bytes_linear_compact = Some(compact);
    Ok(CompressOutcome {
        out: out_dir,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::error_tokens;

    #[test]
    fn error_rows_are_a_sixteenth_of_the_calibration_clamped() {
        // 16 × 256 (the 7B bench), 32 × 256, 128 × 256 (the shipped recipes), 128 × 512.
        assert_eq!(error_tokens(4096), 256);
        assert_eq!(error_tokens(8192), 512);
        assert_eq!(error_tokens(32768), 1024);
        assert_eq!(error_tokens(65536), 1024);
        // Small calibration sets keep at least 128 rows, or all of them.
        assert_eq!(error_tokens(1000), 128);
        assert_eq!(error_tokens(100), 100);
        assert_eq!(error_tokens(0), 0);
    }
}
