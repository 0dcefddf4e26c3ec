//! Taps: how a caller sees the input of every linear layer during a block's forward pass (the
//! hook the compressors use). Linears that read the same tensor share one `TapPoint`.

use burn::tensor::Tensor;

use crate::error::Result;

/// A place in a decoder block where linear inputs are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TapPoint {
    /// Input of q, k and v (the normed hidden state).
    AttnIn,
    /// Input of o (the attention output before projection).
    AttnOutIn,
    /// Input of gate and up (dense MLP) or of the router (MoE).
    MlpIn,
    /// Input of down (dense MLP).
    MlpDownIn,
    /// Input of gate/up of expert `e`: only the tokens routed to it.
    ExpertIn(usize),
    /// Input of down of expert `e`.
    ExpertDownIn(usize),
}

/// Receives linear inputs as `[tokens, d_in]` tensors.
pub trait Tap {
    /// True when this tap wants `point` (lets the forward skip copies nobody reads).
    fn wants(&self, point: TapPoint) -> bool;
    /// Called with the input of the linears at `point`.
    fn observe(&mut self, point: TapPoint, x: &Tensor<2>) -> Result<()>;
}

/// A tap that observes nothing.
pub struct NoTap;

impl Tap for NoTap {
    fn wants(&self, _: TapPoint) -> bool {
        false
    }
    fn observe(&mut self, _: TapPoint, _: &Tensor<2>) -> Result<()> {
        Ok(())
    }
}
