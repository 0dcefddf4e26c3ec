//! Taps: how a caller sees a block's forward — the input of every linear layer, the outputs of
//! the down projections, and MoE routing decisions (the hook the compressors and profilers use).
//! Linears that read the same tensor share one `TapPoint`.

use burn::tensor::Tensor;

use super::moe::RoutingDecision;
use crate::error::Result;
use crate::id::{LinearRole, MlpPart};

/// A place in a decoder block where a tensor is observed.
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
    /// Output of down (dense MLP), before the residual add.
    MlpDownOut,
    /// Input of gate/up of expert `e`: the tokens routed to it (all tokens when the tap asks,
    /// [`Tap::all_expert_tokens`]).
    ExpertIn(usize),
    /// Input of down of expert `e`.
    ExpertDownIn(usize),
    /// Output of down of expert `e`, before the gate weight.
    ExpertDownOut(usize),
}

impl TapPoint {
    /// Where the input of a linear with `role` is observed.
    pub fn input_of(role: LinearRole) -> TapPoint {
        match role {
            LinearRole::Q | LinearRole::K | LinearRole::V => TapPoint::AttnIn,
            LinearRole::O => TapPoint::AttnOutIn,
            LinearRole::Mlp(MlpPart::Down) => TapPoint::MlpDownIn,
            LinearRole::Mlp(_) | LinearRole::Router => TapPoint::MlpIn,
            LinearRole::Expert {
                index,
                part: MlpPart::Down,
            } => TapPoint::ExpertDownIn(index),
            LinearRole::Expert { index, .. } => TapPoint::ExpertIn(index),
        }
    }

    /// True for the points of one expert (which see only the tokens routed to it).
    pub fn is_expert(self) -> bool {
        matches!(
            self,
            TapPoint::ExpertIn(_) | TapPoint::ExpertDownIn(_) | TapPoint::ExpertDownOut(_)
        )
    }
}

/// Receives `[tokens, width]` tensors at tap points, and routing decisions.
pub trait Tap {
    /// True when this tap wants `point` (lets the forward skip work nobody reads).
    fn wants(&self, point: TapPoint) -> bool;
    /// Called with the tensor at `point`.
    fn observe(&mut self, point: TapPoint, x: &Tensor<2>) -> Result<()>;
    /// True when expert `expert`'s input points (`ExpertIn`, `ExpertDownIn`) should show every
    /// token of the batch rather than only those routed to it ("calibrate all experts").
    /// Outputs (`ExpertDownOut`) and the block's result still come from the routed tokens only.
    fn all_expert_tokens(&self, _expert: usize) -> bool {
        false
    }
    /// True when this tap wants MoE routing decisions.
    fn wants_routing(&self) -> bool {
        false
    }
    /// Called with each batch's routing decision of an MoE block, before the experts run.
    fn observe_routing(&mut self, _decision: &RoutingDecision<'_>) -> Result<()> {
        Ok(())
    }
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
