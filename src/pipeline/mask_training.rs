//! End-to-end MaskLLM's training loop ([`crate::compress::maskllm::end_to_end`]): before the
//! block loop, every targeted linear's mask logits are trained together on the whole model's
//! loss through the streamed backward ([`super::backward`]), and the learned masks go into the
//! allocation for the block loop to apply.
//!
//! Iteration `t` takes the next `batch` calibration sequences (in order, wrapping round), samples
//! every linear's soft mask, runs the forward and backward of the masked model on them (each
//! block read from the checkpoint twice, its targeted linears multiplied by their soft masks)
//! and takes one AdamW step on every linear's logits.
//!
//! Memory: the trainer's state (about 36 bytes per targeted weight for 2:4, all linears),
//! one block's weights, the batch's kept block inputs and, with `loss: distill`, the dense
//! model's final hidden states for every calibration sequence (`samples × seq × hidden` floats).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::backward::{BackwardHooks, backward_chunk};
use super::{ModelRunner, Progress, Silent};
use crate::allocate::Allocation;
use crate::arch::{BlockWeights, LinearSlot};
use crate::compress::maskllm::end_to_end::{LinearMask, STATE_BUDGET, bytes_per_weight};
use crate::compress::maskllm::{Loss, Params};
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::matrix::Matrix;
use crate::model::to_host;

/// What a finished training reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainingSummary {
    pub profile: &'static str,
    pub step: usize,
    pub linears: usize,
    pub weights: u64,
    pub iterations: usize,
    pub batch: usize,
    pub loss: Loss,
    /// Mean loss of the first and the last tenth of the iterations (nats).
    pub loss_first: f64,
    pub loss_last: f64,
    pub sequences: usize,
    pub seq_len: usize,
    pub seconds: f64,
    /// Of which: the masks' sampling and updates, and the model's forwards and backwards.
    pub mask_seconds: f64,
    pub model_seconds: f64,
}

struct Hooks<'a> {
    masks: &'a mut BTreeMap<LinearId, LinearMask>,
    scale: f32,
}

impl BackwardHooks for Hooks<'_> {
    fn edit(&mut self, w: &mut BlockWeights) -> Result<()> {
        for (slot, m, _) in w.linears.iter_mut() {
            if let Some(lm) = self.masks.get(&slot.id) {
                lm.apply(m)?;
            }
        }
        Ok(())
    }

    fn wants(&self, slot: &LinearSlot) -> bool {
        self.masks.contains_key(&slot.id)
    }

    fn gradient(&mut self, _: usize, slot: &LinearSlot, g: &Matrix) -> Result<()> {
        match self.masks.get_mut(&slot.id) {
            Some(lm) => lm.add_gradient(g, self.scale),
            None => Ok(()),
        }
    }
}

/// Trains the masks of step `step` (`params`, compressing `targets`) and leaves them in
/// `allocation.masks[step]`, replacing the priors a profiler left there; the summary goes into
/// the allocation's profiles.
pub fn train(
    runner: &ModelRunner,
    plan: &crate::recipe::Plan,
    step: usize,
    params: &Params,
    targets: &[LinearId],
    allocation: &mut Allocation,
    progress: &dyn Progress,
) -> Result<TrainingSummary> {
    let t0 = Instant::now();
    let e2e = params
        .end_to_end
        .ok_or_else(|| PareError::Internal("mask training of a layer-mode step".into()))?;
    let nm = params
        .pattern
        .ok_or_else(|| PareError::Internal("maskllm without an N:M pattern".into()))?;
    let calib = super::compress::load_calibration(runner, plan)?;
    let seq = calib.seq_len();
    if calib.ids.is_empty() || seq < 2 {
        return Err(PareError::Usage(format!(
            "steps[{step}]: end-to-end MaskLLM needs calibration sequences of at least 2 tokens (have {} of {seq})",
            calib.ids.len()
        )));
    }
    let cfg = runner.cfg();
    let slots: Vec<LinearSlot> = runner
        .arch
        .all_linears()
        .into_iter()
        .filter(|s| targets.contains(&s.id))
        .collect();
    let weights: u64 = slots.iter().map(|s| (s.rows * s.cols) as u64).sum();
    // The masks' state, and with distillation the dense model's final hidden states.
    let teacher_bytes = match e2e.loss {
        Loss::Lm => 0,
        Loss::Distill => (calib.ids.len() * seq * cfg.hidden_size * 4) as u64,
    };
    let state = (weights as f64 * bytes_per_weight(nm)) as u64 + teacher_bytes;
    if state > STATE_BUDGET {
        return Err(PareError::Usage(format!(
            "steps[{step}]: end-to-end MaskLLM would hold {:.1} GiB ({weights} weights' mask state, {:.1} GiB of it the dense model's hidden states for distillation; limit {} GiB); use `mode: layer` for a model this size, or fewer calibration samples",
            state as f64 / (1u64 << 30) as f64,
            teacher_bytes as f64 / (1u64 << 30) as f64,
            STATE_BUDGET >> 30
        )));
    }
    // The trainable masks, from the weights as read and the profiled priors.
    let mut priors = allocation.masks.remove(&step).unwrap_or_default();
    let mut masks = BTreeMap::new();
    for b in 0..cfg.num_layers {
        let w = runner
            .arch
            .read_block(&runner.store, b, runner.qcfg.as_ref())?;
        for (slot, m, _) in w.linears {
            if targets.contains(&slot.id) {
                let prior = priors.remove(&slot.id);
                masks.insert(slot.id, LinearMask::new(params, slot.id, m, prior)?);
            }
        }
    }
    // The dense model's final hidden states, per sequence, for distillation.
    let teacher: Vec<Vec<f32>> = match e2e.loss {
        Loss::Lm => Vec::new(),
        Loss::Distill => {
            let mut out = Vec::with_capacity(calib.ids.len());
            for h in runner.final_hidden(&calib.ids, &Silent)? {
                let [b, s, d] = h.dims();
                let v = to_host(h.reshape([b * s, d]))?;
                out.extend(v.chunks(s * d).map(<[f32]>::to_vec));
            }
            out
        }
    };
    let n = calib.ids.len();
    let batch = e2e.batch.min(n);
    let iterations = params.schedule.iterations;
    let mut losses = Vec::with_capacity(iterations);
    let (mut mask_s, mut model_s) = (0f64, 0f64);
    progress.start("maskllm end-to-end", iterations as u64);
    for t in 0..iterations {
        crate::interrupt::check()?;
        let first = (t * batch) % n;
        let idx: Vec<usize> = (0..batch).map(|i| (first + i) % n).collect();
        let ids: Vec<Vec<u32>> = idx.iter().map(|&i| calib.ids[i].clone()).collect();
        let tm = Instant::now();
        for lm in masks.values_mut() {
            lm.sample(params, t);
        }
        mask_s += tm.elapsed().as_secs_f64();
        let mut loss = |i: usize, s: &[u32], h: Vec<f32>| match e2e.loss {
            Loss::Lm => runner.ends.loss_and_grad_host(&h, s),
            Loss::Distill => runner.ends.distill_loss_and_grad_host(&h, &teacher[idx[i]]),
        };
        let mut hooks = Hooks {
            masks: &mut masks,
            scale: 1.0 / batch as f32,
        };
        let tb = Instant::now();
        let sum = backward_chunk(runner, &ids, &mut hooks, &mut loss, &Silent)?;
        model_s += tb.elapsed().as_secs_f64();
        losses.push(sum / batch as f64);
        let tm = Instant::now();
        for lm in masks.values_mut() {
            lm.update(params, t);
        }
        mask_s += tm.elapsed().as_secs_f64();
        progress.step();
    }
    progress.finish();
    let tenth = (iterations / 10).max(1);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let learned: BTreeMap<LinearId, Vec<bool>> =
        masks.iter().map(|(id, lm)| (*id, lm.hard_mask())).collect();
    allocation.masks.insert(step, learned);
    let summary = TrainingSummary {
        profile: "maskllm-end-to-end",
        step,
        linears: masks.len(),
        weights,
        iterations,
        batch,
        loss: e2e.loss,
        loss_first: mean(&losses[..tenth.min(losses.len())]),
        loss_last: mean(&losses[losses.len().saturating_sub(tenth)..]),
        sequences: n,
        seq_len: seq,
        seconds: t0.elapsed().as_secs_f64(),
        mask_seconds: mask_s,
        model_seconds: model_s,
    };
    allocation.profiles.push(
        serde_json::to_value(&summary)
            .map_err(|e| PareError::Internal(format!("cannot serialise the training: {e}")))?,
    );
    Ok(summary)
}
