//! The streamed backward of the whole model for a chunk of sequences (batch 1 each), with never
//! more than one block's weights in memory: the engine under the gradient pass (GBLM,
//! [`super::gradients`]) and end-to-end MaskLLM ([`super::mask_training`]).
//!
//! 1. A forward, block by block on the host kernels, keeping each block's input per sequence
//!    (`blocks × seq × hidden` floats per sequence);
//! 2. a loss and its gradient at the last hidden states, supplied by the caller;
//! 3. block by block in reverse: the block is read again, recomputed from its kept input and
//!    back-propagated: a dense block on the host with pare's backward kernels
//!    ([`DecoderBlock::vjp_host`]), an MoE block (or any block off the host) rebuilt on burn's
//!    autodiff device ([`DecoderBlock::vjp`]). Each weight gradient `∂L/∂W` (`[out, in]`) goes to
//!    the caller's [`BackwardHooks::gradient`]; the input gradient goes on to the block below.
//!
//! The caller may change a block's weights after each read ([`BackwardHooks::edit`]; the same
//! edit in the forward and the backward), so the gradient is the one of the edited model, with
//! respect to the weights as edited.

use burn::tensor::Tensor;

use super::{ModelRunner, Progress};
use crate::arch::{BlockWeights, LinearSlot};
use crate::error::{PareError, Result};
use crate::id::LinearRole;
use crate::matrix::Matrix;
use crate::model::grad::autodiff_device;
use crate::model::{NoTap, Rope, on_host, to_host};

/// What a streamed backward does with each block and each weight gradient.
pub trait BackwardHooks {
    /// Changes block `w.block`'s weights after each read (default: none).
    fn edit(&mut self, _w: &mut BlockWeights) -> Result<()> {
        Ok(())
    }
    /// Whether the gradient of `slot` is wanted (routers never get one).
    fn wants(&self, slot: &LinearSlot) -> bool;
    /// The gradient `∂L/∂W` `[out, in]` of `slot` for sequence `seq` of the chunk.
    fn gradient(&mut self, seq: usize, slot: &LinearSlot, g: &Matrix) -> Result<()>;
    /// Every sequence of the chunk has passed block `block`'s backward.
    fn block_done(&mut self, _block: usize, _slots: &[LinearSlot]) -> Result<()> {
        Ok(())
    }
}

/// The loss of sequence `i` of the chunk (its ids `ids`) from its last hidden states `h`
/// (`[seq, hidden]`): the loss and its gradient at `h`.
pub type LossFn<'a> = dyn FnMut(usize, &[u32], Vec<f32>) -> Result<(f64, Vec<f32>)> + 'a;

/// Reads block `b` and applies the caller's edit.
fn read(runner: &ModelRunner, b: usize, hooks: &mut dyn BackwardHooks) -> Result<BlockWeights> {
    let mut w = runner
        .arch
        .read_block(&runner.store, b, runner.qcfg.as_ref())?;
    hooks.edit(&mut w)?;
    Ok(w)
}

/// Runs the forward, the loss and the backward of `ids` (equal lengths, at least 2 tokens);
/// returns the sum of the sequences' losses. `progress` steps once per block and sequence, in
/// each direction.
pub fn backward_chunk(
    runner: &ModelRunner,
    ids: &[Vec<u32>],
    hooks: &mut dyn BackwardHooks,
    loss: &mut LossFn<'_>,
    progress: &dyn Progress,
) -> Result<f64> {
    let cfg = runner.cfg();
    let (n_blocks, d) = (cfg.num_layers, cfg.hidden_size);
    let seq = ids.first().map_or(0, Vec::len);
    if seq < 2 || ids.iter().any(|s| s.len() != seq) {
        return Err(PareError::Internal(format!(
            "backward_chunk: {} sequences, the first of {seq} tokens; all need the same length ≥ 2",
            ids.len()
        )));
    }
    let ad = autodiff_device(&runner.device);
    let rope = Rope::new(cfg, seq, &runner.device);
    let rope_ad = Rope::new(cfg, seq, &ad);
    // 1. Forward, keeping every block's input per sequence.
    let mut h: Vec<Tensor<3>> = ids
        .iter()
        .map(|s| runner.ends.embed(std::slice::from_ref(s)))
        .collect::<Result<_>>()?;
    let mut kept: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(n_blocks); ids.len()];
    for b in 0..n_blocks {
        crate::interrupt::check()?;
        let w = read(runner, b, hooks)?;
        let (block, _) = runner.arch.into_block(w, &runner.device)?;
        for (hs, k) in h.iter_mut().zip(kept.iter_mut()) {
            k.push(to_host(hs.clone().reshape([seq, d]))?);
            *hs = block.forward(hs.clone(), &rope, &mut NoTap)?;
            progress.step();
        }
    }
    // 2. Loss and its gradient at the final hidden states.
    let mut loss_sum = 0f64;
    let mut g = Vec::with_capacity(ids.len());
    for (i, (hs, s)) in h.into_iter().zip(ids).enumerate() {
        let (l, gl) = loss(i, s, to_host(hs.reshape([seq, d]))?)?;
        if !l.is_finite() {
            return Err(PareError::Numerical(format!(
                "the loss is {l}; the model's forward is not finite"
            )));
        }
        loss_sum += l;
        g.push(gl);
    }
    // 3. Backward, block by block in reverse.
    for b in (0..n_blocks).rev() {
        crate::interrupt::check()?;
        let w = read(runner, b, hooks)?;
        // Dense blocks on the host: pare's backward kernels; otherwise burn's autodiff.
        let host = on_host(&runner.device) && !cfg.is_moe_block(b);
        let (mut block, block_slots) = runner
            .arch
            .into_block(w, if host { &runner.device } else { &ad })?;
        if !host {
            block.track_linears()?;
        }
        let roles: Vec<LinearRole> = block_slots
            .iter()
            .filter(|s| !matches!(s.id.role, LinearRole::Router) && hooks.wants(s))
            .map(|s| s.id.role)
            .collect();
        for (i, (gs, k)) in g.iter_mut().zip(kept.iter_mut()).enumerate() {
            let x = k
                .pop()
                .ok_or_else(|| PareError::Internal(format!("no kept input for block {b}")))?;
            let gy = std::mem::take(gs);
            let out = match host {
                true => block
                    .vjp_host(&x, &gy, seq, &rope, &roles)?
                    .ok_or_else(|| PareError::Internal(format!("block {b} is not dense")))?,
                false => block.vjp(x, gy, seq, &rope_ad, &roles)?,
            };
            for (role, gm) in &out.linears {
                let slot = block_slots
                    .iter()
                    .find(|s| s.id.role == *role)
                    .ok_or_else(|| PareError::Internal(format!("no slot for {role:?}")))?;
                if gm.data.iter().any(|v| !v.is_finite()) {
                    return Err(PareError::Numerical(format!(
                        "the gradient of {} is not finite",
                        slot.id
                    )));
                }
                hooks.gradient(i, slot, gm)?;
            }
            *gs = out.input;
            progress.step();
        }
        hooks.block_done(b, &block_slots)?;
    }
    Ok(loss_sum)
}
