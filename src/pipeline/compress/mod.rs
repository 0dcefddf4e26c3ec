//! The compression block loop (DESIGN.md "data flow"): for each decoder block, for each recipe
//! step that targets it, pass 1 gathers the statistics the step's method needs from the block's
//! calibration inputs, the method compresses each targeted linear; pass 2 recomputes the block's
//! outputs (from the compressed block, or the original with `propagate: original`) as the next
//! block's inputs. Only one block's weights are in memory; each block is written as it finishes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;

use super::progress::Progress;
use super::runner::ModelRunner;
use super::stats_tap::relative_error;
use crate::arch::tap_point;
use crate::calib::CalibrationSet;
use crate::checkpoint::{CheckpointWriter, OutTensor};
use crate::config::ArchKind;
use crate::error::{PareError, Result};
use crate::model::Rope;
use crate::recipe::{CalibSource, Plan, Propagate, Sequential};
use crate::report::{BlockTiming, CalibrationInfo, LinearReport, Report};

mod block;
mod export;

use block::BlockJob;

pub use export::scale_dtype_for;

/// Input rows kept per tap point for measuring reconstruction error.
const ERROR_TOKENS: usize = 1024;

/// What `compress` produced.
pub struct CompressOutcome {
    pub out: PathBuf,
    pub report: Report,
    /// Seconds of one plain forward pass of the calibration set through all blocks, measured
    /// during the run (pass 2 of every block), for ratio benchmarks.
    pub forward_seconds: f64,
}

/// Loads the calibration set the plan asks for.
pub fn load_calibration(runner: &ModelRunner, plan: &Plan) -> Result<CalibrationSet> {
    let c = &plan.calibration;
    match &c.source {
        CalibSource::Text(path) => {
            CalibrationSet::from_text(path, &runner.tokenizer, c.samples, c.seq_len, c.seed)
        }
        CalibSource::Ids(path) => {
            let set = CalibrationSet::from_ids_file(
                path,
                Some(c.samples),
                Some(c.seq_len),
                runner.ends.vocab,
            )?;
            Ok(set)
        }
    }
}

/// Compresses `runner`'s model with `plan`, writing into `out`.
pub fn compress(
    runner: &ModelRunner,
    plan: &Plan,
    recipe_text: &str,
    out: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<CompressOutcome> {
    let t_start = Instant::now();
    let cfg = runner.cfg();
    let dtype = runner.store.main_float_dtype();
    let sdt = scale_dtype_for(dtype);
    let calib = load_calibration(runner, plan)?;
    let seq = calib.seq_len();
    let mut writer =
        CheckpointWriter::create(out, &runner.dir, force, plan.export.max_shard_bytes)?;
    let rope = Rope::new(cfg, seq.max(1), &runner.device);
    let batches: Vec<&[Vec<u32>]> = calib.ids.chunks(runner.batch.max(1)).collect();
    let mut hidden: Vec<Tensor<3>> = batches
        .iter()
        .map(|c| runner.ends.embed(c))
        .collect::<Result<_>>()?;
    let targeted: Vec<BTreeSet<String>> = plan
        .steps
        .iter()
        .map(|s| s.targets.iter().cloned().collect())
        .collect();
    let mut report = Report::default();
    let mut forward_seconds = 0.0;
    let mut export_state = export::ExportState::new(plan, dtype);

    progress.start("compress", cfg.num_layers as u64);
    for b in 0..cfg.num_layers {
        let t_block = Instant::now();
        let weights = runner
            .arch
            .read_block(&runner.store, b, runner.qcfg.as_ref())?;
        let mut job = BlockJob::new(weights, &plan.steps, &targeted, sdt);
        let t_fwd = Instant::now();
        let staged = cfg.kind == ArchKind::Llama
            && plan.sequential == Sequential::Linear
            && plan.propagate == Propagate::Compressed
            && job.needs_data();
        if staged {
            job.run_staged(runner, &mut hidden, &rope, progress)?;
        } else {
            job.run_two_pass(
                runner,
                &mut hidden,
                &rope,
                plan.propagate == Propagate::Compressed,
                progress,
            )?;
        }
        forward_seconds += t_fwd.elapsed().as_secs_f64();
        let BlockJob {
            weights,
            states,
            kept_inputs,
            ..
        } = job;
        // Report rows and the error measurement against the original weights.
        for (slot, _, _) in &weights.linears {
            let Some(st) = states.get(&slot.id) else {
                continue;
            };
            if st.methods.is_empty() {
                continue;
            }
            let rel_error = match kept_inputs.get(&tap_point(&slot.id)) {
                Some(x) => relative_error(&st.original, &st.current.weight, x, &runner.device)?,
                None => None,
            };
            report.linears.push(LinearReport {
                id: slot.id.clone(),
                shape: [slot.rows, slot.cols],
                method: st.methods.join(" + "),
                sparsity: st.current.weight.sparsity(),
                bits: st.current.quant.as_ref().map(|q| q.scheme.bits as f32),
                rel_error,
                warnings: st.warnings.clone(),
            });
        }
        // Write this block's linears and biases.
        for (slot, _, bias) in &weights.linears {
            let st = states
                .get(&slot.id)
                .ok_or_else(|| PareError::Usage(format!("no state for {}", slot.id)))?;
            for (name, t) in
                export_state.encode(&slot.key, &slot.id, &st.current, !st.methods.is_empty())?
            {
                writer.add(name, t)?;
            }
            let _ = bias; // biases are pass-through tensors, written below with the rest
        }
        report.blocks.push(BlockTiming {
            block: b,
            seconds: t_block.elapsed().as_secs_f64(),
        });
        progress.step();
    }
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
    let config = export_state.config_json(&cfg.raw, plan, &calib)?;
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
    let out_dir = writer.finish(&config, &tokenizer_files, &extra, metadata)?;

    report.provenance.calibration = Some(CalibrationInfo {
        source: calib.source.clone(),
        samples: calib.ids.len(),
        seq_len: seq,
        seed: calib.seed,
    });
    report.provenance.recipe = Some(recipe_text.to_string());
    report.totals.seconds = t_start.elapsed().as_secs_f64();
    report.totals.params = runner.parameter_count();
    let (before, after, compact) = export_state.linear_bytes();
    report.totals.bytes_linear_before = before;
    report.totals.bytes_linear_after = after;
    report.totals.bytes_linear_compact = Some(compact);
    Ok(CompressOutcome {
        out: out_dir,
        report,
        forward_seconds,
    })
}
