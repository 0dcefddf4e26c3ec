//! One decoder block: pre-norm attention and a SiLU-gated MLP or a routed mixture of experts,
//! plus the seam the compressor uses to swap a linear's weight in place ([`DecoderBlock::set_linear`]).
//! The forward itself is the staged one of [`super::stage`], run to the end.

use burn::tensor::Tensor;

use super::stage::Stage;
use super::{Attention, Linear, Mlp, Moe, RmsNorm, Rope, Tap, TapPoint};
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

    /// A forward run only as far as `tap` wants anything: the stages after the last wanted
    /// point are not computed (in block mode the dense pass only gathers statistics, so the
    /// down projection, whose output nobody reads unless `MlpDownOut`/`ExpertDownOut` is tapped,
    /// is skipped). Same observations as [`Self::forward`], no output.
    pub fn observe_forward(&self, hidden: Tensor<3>, rope: &Rope, tap: &mut dyn Tap) -> Result<()> {
        let stages = self.stages();
        let experts = match &self.ffn {
            Ffn::Moe(m) => m.experts.len(),
            Ffn::Dense(_) => 0,
        };
        let wants_in = |s: Stage| self.stage_points(s).into_iter().any(|p| tap.wants(p));
        // What advancing a stage shows the tap: routing (MoE `Mlp`), down outputs (`Down`).
        let wants_out = |s: Stage| match s {
            Stage::Mlp => tap.wants_routing(),
            Stage::Down => {
                tap.wants(TapPoint::MlpDownOut)
                    || (0..experts).any(|e| tap.wants(TapPoint::ExpertDownOut(e)))
            }
            _ => false,
        };
        let ins: Vec<bool> = stages.iter().map(|&s| wants_in(s)).collect();
        let outs: Vec<bool> = stages.iter().map(|&s| wants_out(s)).collect();
        if !ins.iter().chain(&outs).any(|&w| w) {
            return Ok(());
        }
        let mut st = self.begin(hidden, false)?;
        for i in 0..stages.len() {
            self.observe(&st, tap)?;
            if !(ins[i + 1..].iter().any(|&w| w) || outs[i..].iter().any(|&w| w)) {
                break;
            }
            self.advance(&mut st, rope, tap)?;
        }
        Ok(())
    }

    /// The fused linear holding `role` and the rows `offset..offset + rows` that are `role`'s.
    pub(super) fn locate(&mut self, role: LinearRole) -> Result<(&mut Linear, usize, usize)> {
        let (qo, kvo) = self.attn.q_k_widths();
        fn part(mlp: &mut Mlp, p: MlpPart) -> (&mut Linear, usize, usize) {
            let f = mlp.ffn;
            match p {
                MlpPart::Gate => (&mut mlp.gate_up, 0, f),
                MlpPart::Up => (&mut mlp.gate_up, f, f),
                MlpPart::Down => {
                    let n = mlp.down.out_features();
                    (&mut mlp.down, 0, n)
                }
            }
        }
        Ok(match (role, &mut self.ffn) {
            (LinearRole::Q, _) => (&mut self.attn.qkv, 0, qo),
            (LinearRole::K, _) => (&mut self.attn.qkv, qo, kvo),
            (LinearRole::V, _) => (&mut self.attn.qkv, qo + kvo, kvo),
            (LinearRole::O, _) => {
                let n = self.attn.o.out_features();
                (&mut self.attn.o, 0, n)
            }
            (LinearRole::Mlp(p), Ffn::Dense(mlp)) => part(mlp, p),
            (LinearRole::Router, Ffn::Moe(moe)) => {
                let n = moe.router.out_features();
                (&mut moe.router, 0, n)
            }
            (LinearRole::Expert { index, part: p }, Ffn::Moe(moe)) => {
                let n = moe.experts.len();
                match moe.experts.get_mut(index) {
                    Some(mlp) => part(mlp, p),
                    None => {
                        return Err(PareError::Internal(format!(
                            "expert {index} does not exist (the block has {n})"
                        )));
                    }
                }
            }
            (role, _) => {
                return Err(PareError::Internal(format!(
                    "this block has no {role:?} linear"
                )));
            }
        })
    }

    /// Replaces the weight of the linear `role` (`[out, in]`, Hugging Face orientation) in place;
    /// the fused q|k|v and gate|up GEMMs get the new rows at the right offset.
    pub fn set_linear(&mut self, role: LinearRole, w: &Matrix) -> Result<()> {
        let (lin, offset, rows) = self.locate(role)?;
        if w.rows != rows {
            return Err(PareError::Internal(format!(
                "set_linear: {role:?} has {rows} rows, the new weight {}",
                w.rows
            )));
        }
        lin.set_rows(offset, w)
    }

    /// A copy of the weight of the linear `role` (`[out, in]`) as the block holds it now.
    pub fn linear_weight(&mut self, role: LinearRole) -> Result<Matrix> {
        let (lin, offset, rows) = self.locate(role)?;
        Ok(lin.rows(offset, rows))
    }
}
