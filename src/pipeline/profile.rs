//! Pre-passes: what runs before the block loop to decide the [`Allocation`].
//!
//! A step whose method needs a model-wide decision (OWL's per-block sparsities need every
//! block's outlier ratio before block 0 is pruned) hands the pipeline [`Profiler`]s. The
//! *profile pass* is one streamed forward of the dense model over the calibration set, one
//! block in memory at a time: each block is run with a [`StatsTap`] gathering the union of what
//! the profilers need, every profiler sees the block's weights and statistics, and the dense
//! block's output feeds the next block. Profilers keep only small summaries (a number per
//! block or per expert) and finally write their decisions into the allocation.
//!
//! A gradient pass (GBLM's streamed backward) is the other kind of pre-pass; it writes a
//! per-weight artefact rather than a summary, and runs here too once a method asks for it.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::compress::load_calibration;
use super::{ModelRunner, Progress};
use crate::allocate::{Allocation, Profiler};
use crate::arch::BlockWeights;
use crate::error::Result;
use crate::model::{Rope, TapPoint};
use crate::recipe::Plan;
use crate::stats::{StatSet, StatsTap};

/// Runs the pre-passes the plan's steps ask for and returns the allocation (empty when none
/// asks).
///
/// Steps that score with gradients (GBLM) get their artefact here too
/// ([`super::gradients::open_for_plan`]); a pass computed for this run is written beside `out`
/// while it runs. Steps that learn masks end to end (MaskLLM) are trained here, after the
/// profile pass that gives their priors ([`super::mask_training::train`]).
pub fn allocate(
    runner: &ModelRunner,
    plan: &Plan,
    out: &std::path::Path,
    progress: &dyn Progress,
) -> Result<Allocation> {
    let mut profilers: Vec<Box<dyn Profiler>> = plan
        .steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.method.compressor().profilers(i, &s.targets))
        .collect();
    if plan.protect_super_experts {
        profilers.push(Box::new(crate::allocate::super_experts::SuperExperts::new(
            runner.cfg().num_layers,
            true,
        )));
    }
    if let Some(o) = plan.odp {
        profilers.push(Box::new(crate::compress::mc_moe::odp::OdpProfiler::new(
            o.skip, o.tokens,
        )));
    }
    let mut allocation = Allocation::default();
    allocation.gradients =
        super::gradients::open_for_plan(runner, plan, out, &mut allocation.profiles, progress)?;
    if !profilers.is_empty() {
        profile_pass(runner, plan, &mut profilers, progress)?;
        for p in profilers {
            for note in p.finish(&mut allocation)? {
                progress.warn(&note);
            }
        }
    }
    // End-to-end MaskLLM: the masks are learned now, from the priors the profilers left.
    for (i, step) in plan.steps.iter().enumerate() {
        if let Some(params) = step.method.compressor().end_to_end() {
            let s = super::mask_training::train(
                runner,
                plan,
                i,
                params,
                &step.targets,
                &mut allocation,
                progress,
            )?;
            progress.warn(&format!(
                "steps[{i}]: MaskLLM end to end over {} linears, {} iterations of {} sequences in {:.1} s ({:?} loss {:.4} → {:.4})",
                s.linears, s.iterations, s.batch, s.seconds, s.loss, s.loss_first, s.loss_last
            ));
        }
    }
    Ok(allocation)
}

/// The streamed dense forward with every profiler watching each block.
pub fn profile_pass(
    runner: &ModelRunner,
    plan: &Plan,
    profilers: &mut [Box<dyn Profiler>],
    progress: &dyn Progress,
) -> Result<()> {
    let calib = load_calibration(runner, plan)?;
    profile_calibration(runner, &calib, profilers, progress)
}

/// [`profile_pass`] over a given calibration set.
pub fn profile_calibration(
    runner: &ModelRunner,
    calib: &crate::calib::CalibrationSet,
    profilers: &mut [Box<dyn Profiler>],
    progress: &dyn Progress,
) -> Result<()> {
    let rope = Rope::new(runner.cfg(), calib.seq_len().max(1), &runner.device);
    let mut hidden: Vec<Tensor<3>> = calib
        .ids
        .chunks(runner.batch.max(1))
        .map(|c| runner.ends.embed(c))
        .collect::<Result<_>>()?;
    let n = runner.cfg().num_layers;
    progress.start("profile", n as u64);
    for b in 0..n {
        let weights = runner
            .arch
            .read_block(&runner.store, b, runner.qcfg.as_ref())?;
        let block = runner.arch.build_block(&weights, &runner.device)?;
        let mut points: BTreeMap<TapPoint, (usize, StatSet)> = BTreeMap::new();
        for p in profilers.iter() {
            for (point, kinds) in p.needs(&weights) {
                let width = point_width(&weights, point);
                let e = points.entry(point).or_insert((width, StatSet::EMPTY));
                e.1 = e.1.union(kinds);
            }
        }
        let mut keep = BTreeMap::new();
        let mut keep_tokens = 0;
        for (point, tokens) in profilers.iter().filter_map(|p| p.keep(&weights)) {
            keep.insert(point, point_width(&weights, point));
            keep_tokens = keep_tokens.max(tokens);
        }
        let mut tap = StatsTap::new(points, None, keep, keep_tokens);
        for h in hidden.iter_mut() {
            tap.batch_seqs = h.dims()[0];
            *h = block.forward(h.clone(), &rope, &mut tap)?;
        }
        let (stats, kept) = tap.finish();
        let view = crate::allocate::BlockView {
            cfg: runner.cfg(),
            kept: &kept,
        };
        for p in profilers.iter_mut() {
            p.observe_block(&weights, &stats, &view)?;
        }
        progress.step();
    }
    progress.finish();
    Ok(())
}

/// Width of the tensor at `point` of a block: the d_in of the linears reading it, or the d_out
/// of the down projection writing it.
fn point_width(w: &BlockWeights, point: TapPoint) -> usize {
    w.linears
        .iter()
        .find_map(|(s, _, _)| {
            let role = s.id.role;
            if TapPoint::input_of(role) == point {
                Some(s.cols)
            } else {
                match (point, role) {
                    (
                        TapPoint::MlpDownOut,
                        crate::id::LinearRole::Mlp(crate::id::MlpPart::Down),
                    ) => Some(s.rows),
                    (
                        TapPoint::ExpertDownOut(e),
                        crate::id::LinearRole::Expert {
                            index,
                            part: crate::id::MlpPart::Down,
                        },
                    ) if e == index => Some(s.rows),
                    _ => None,
                }
            }
        })
        .unwrap_or(0)
}
