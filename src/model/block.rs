//! One decoder block: pre-norm attention and a SiLU-gated MLP or a routed mixture of experts,
//! plus the seam the compressor uses to swap a linear's weight in place ([`DecoderBlock::set_linear`]).
//! The forward itself is the staged one of [`super::stage`], run to the end.

use burn::tensor::Tensor;

use super::stage::Stage;
use super::{Attention, Mlp, Moe, RmsNorm, Rope, Tap};
use crate::error::{PareError, Result};
use crate::id::{LinearRole, MlpPart};
use crate::matrix::Matrix;

/// The feed-forward half of a block.
#[derive(Clone)]
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

/// A whole decoder block.
#[derive(Clone)]
pub struct DecoderBlock {
    pub input_norm: RmsNorm,
    pub attn: Attention,
    pub post_norm: RmsNorm,
    pub ffn: Ffn,
}

impl DecoderBlock {
    /// `hidden`: `[batch, seq, hidden]` → same shape. `tap` sees every linear's input (and the
    /// down projections' outputs and the routing decisions, when it wants them).
    pub fn forward(&self, hidden: Tensor<3>, rope: &Rope, tap: &mut dyn Tap) -> Result<Tensor<3>> {
        let mut st = self.begin(hidden, false)?;
        loop {
            self.observe(&st, tap)?;
            if st.stage() == Stage::Done {
                return Ok(st.output());
            }
            self.advance(&mut st, rope, tap)?;
        }
    }

    /// Replaces the weight of the linear `role` (`[out, in]`, Hugging Face orientation) in place;
    /// the fused q|k|v and gate|up GEMMs get the new rows at the right offset.
    pub fn set_linear(&mut self, role: LinearRole, w: &Matrix) -> Result<()> {
        let (qo, kvo) = self.attn.q_k_widths();
        let mlp_part = |mlp: &mut Mlp, part: MlpPart| -> Result<()> {
            let f = mlp.ffn;
            match part {
                MlpPart::Gate => mlp.gate_up.set_rows(0, w),
                MlpPart::Up => mlp.gate_up.set_rows(f, w),
                MlpPart::Down => mlp.down.set_rows(0, w),
            }
        };
        match (role, &mut self.ffn) {
            (LinearRole::Q, _) => self.attn.qkv.set_rows(0, w),
            (LinearRole::K, _) => self.attn.qkv.set_rows(qo, w),
            (LinearRole::V, _) => self.attn.qkv.set_rows(qo + kvo, w),
            (LinearRole::O, _) => self.attn.o.set_rows(0, w),
            (LinearRole::Mlp(p), Ffn::Dense(mlp)) => mlp_part(mlp, p),
            (LinearRole::Router, Ffn::Moe(moe)) => moe.router.set_rows(0, w),
            (LinearRole::Expert { index, part }, Ffn::Moe(moe)) => match moe.experts.get_mut(index)
            {
                Some(mlp) => mlp_part(mlp, part),
                None => Err(PareError::Internal(format!(
                    "set_linear: expert {index} does not exist (the block has {})",
                    moe.experts.len()
                ))),
            },
            (role, _) => Err(PareError::Internal(format!(
                "set_linear: this block has no {role:?} linear"
            ))),
        }
    }
}
