//! The block forward cut into stages, one per group of linears that read the same input:
//!
//! | stage | linears run when it advances | inputs a tap sees |
//! |---|---|---|
//! | `Attn` | q, k, v (and the attention itself) | `AttnIn` |
//! | `AttnOut` | o | `AttnOutIn` |
//! | `Mlp` | gate, up (dense) or the router (MoE) | `MlpIn`; MoE: the routing decision |
//! | `Experts` | every expert's gate, up | `ExpertIn(e)` |
//! | `Down` | down (dense) or every expert's down | `MlpDownIn` / `ExpertDownIn(e)`; outputs `MlpDownOut` / `ExpertDownOut(e)` |
//!
//! [`DecoderBlock::forward`] is `begin`, then `observe` and `advance` until `Done`. The
//! true-sequential compressor runs the same stages over all calibration batches at once,
//! swapping a group's weights ([`DecoderBlock::set_linear`]) between observing its inputs and
//! advancing past it, so each input is computed once and from the already compressed groups.
//!
//! A *lean* state (for holding many batches) keeps the MLP-wide activations only while they are
//! used: the down input is recomputed from the MLP input when it is observed and again when the
//! stage advances (one extra gate/up GEMM), instead of being held for every batch.

use std::collections::BTreeSet;

use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use super::block::{DecoderBlock, Ffn};
use super::moe::{Routed, gather_rows};
use super::{Rope, Tap, TapPoint};
use crate::error::{PareError, Result};

/// Where a staged forward stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Attn,
    AttnOut,
    Mlp,
    Experts,
    Down,
    Done,
}

/// Per-expert state of an MoE block between `Mlp` and `Done`.
struct ExpertsState {
    routed: Routed,
    /// The MoE input of every token (what an expert's statistics see when the tap asks for
    /// all tokens, [`Tap::all_expert_tokens`]).
    all: Tensor<2>,
    idx: Vec<Option<Tensor<1, Int>>>,
    /// Gate/up input of each routed expert.
    inputs: Vec<Option<Tensor<2>>>,
    /// Down input of each routed expert (not held in a lean state).
    acts: Vec<Option<Tensor<2>>>,
}

/// One batch's forward through one block, paused between stages.
pub struct Staged {
    b: usize,
    s: usize,
    d: usize,
    lean: bool,
    stage: Stage,
    /// The residual stream `[b*s, hidden]`.
    h: Tensor<2>,
    /// The input of the current dense stage (normed hidden, attention output or MLP input).
    x: Option<Tensor<2>>,
    /// Dense down input (not held in a lean state).
    act: Option<Tensor<2>>,
    experts: Option<ExpertsState>,
}

impl Staged {
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Sequences in this batch.
    pub fn batch(&self) -> usize {
        self.b
    }

    /// The block's output `[b, s, hidden]` (the residual stream; final once `Done`).
    pub fn output(self) -> Tensor<3> {
        self.h.reshape([self.b, self.s, self.d])
    }

    /// Takes the current stage's input out of the state (no copy when nothing else holds it).
    fn take_x(&mut self) -> Result<Tensor<2>> {
        self.x.take().ok_or_else(|| {
            PareError::Internal(format!("staged forward: no input at {:?}", self.stage))
        })
    }

    /// Takes the residual stream out of the state, leaving an empty tensor until it is put back.
    fn take_h(&mut self) -> Tensor<2> {
        let device = self.h.device();
        std::mem::replace(&mut self.h, Tensor::<2>::empty([0, self.d], &device))
    }

    fn x(&self) -> Result<Tensor<2>> {
        self.x.clone().ok_or_else(|| {
            PareError::Internal(format!("staged forward: no input at {:?}", self.stage))
        })
    }
}

fn observe(tap: &mut dyn Tap, p: TapPoint, x: impl FnOnce() -> Result<Tensor<2>>) -> Result<()> {
    if tap.wants(p) {
        tap.observe(p, &x()?)
    } else {
        Ok(())
    }
}

impl DecoderBlock {
    /// Starts a staged forward of `hidden` `[batch, seq, hidden]`; `lean` drops MLP-wide
    /// activations between stages (see the module docs).
    pub fn begin(&self, hidden: Tensor<3>, lean: bool) -> Result<Staged> {
        let [b, s, d] = hidden.dims();
        let (h, x) = self.input_norm.forward_keep(hidden.reshape([b * s, d]))?;
        Ok(Staged {
            b,
            s,
            d,
            lean,
            stage: Stage::Attn,
            h,
            x: Some(x),
            act: None,
            experts: None,
        })
    }

    /// The stages this block goes through, in order (`Done` excluded).
    pub fn stages(&self) -> &'static [Stage] {
        match self.ffn {
            Ffn::Dense(_) => &[Stage::Attn, Stage::AttnOut, Stage::Mlp, Stage::Down],
            Ffn::Moe(_) => &[
                Stage::Attn,
                Stage::AttnOut,
                Stage::Mlp,
                Stage::Experts,
                Stage::Down,
            ],
        }
    }

    /// The tap points whose linears run when `stage` advances.
    pub fn stage_points(&self, stage: Stage) -> BTreeSet<TapPoint> {
        let experts = match &self.ffn {
            Ffn::Moe(m) => m.experts.len(),
            Ffn::Dense(_) => 0,
        };
        match (stage, &self.ffn) {
            (Stage::Attn, _) => BTreeSet::from([TapPoint::AttnIn]),
            (Stage::AttnOut, _) => BTreeSet::from([TapPoint::AttnOutIn]),
            (Stage::Mlp, _) => BTreeSet::from([TapPoint::MlpIn]),
            (Stage::Experts, Ffn::Moe(_)) => (0..experts).map(TapPoint::ExpertIn).collect(),
            (Stage::Down, Ffn::Dense(_)) => BTreeSet::from([TapPoint::MlpDownIn]),
            (Stage::Down, Ffn::Moe(_)) => (0..experts).map(TapPoint::ExpertDownIn).collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Shows `tap` the inputs of the current stage's linears.
    pub fn observe(&self, st: &Staged, tap: &mut dyn Tap) -> Result<()> {
        match (st.stage, &self.ffn) {
            (Stage::Attn, _) => observe(tap, TapPoint::AttnIn, || st.x()),
            (Stage::AttnOut, _) => observe(tap, TapPoint::AttnOutIn, || st.x()),
            (Stage::Mlp, _) => observe(tap, TapPoint::MlpIn, || st.x()),
            (Stage::Down, Ffn::Dense(mlp)) => observe(tap, TapPoint::MlpDownIn, || match &st.act {
                Some(a) => Ok(a.clone()),
                None => mlp.activation(st.x()?),
            }),
            (Stage::Experts | Stage::Down, Ffn::Moe(moe)) => {
                let ex = experts(st)?;
                for e in 0..moe.experts.len() {
                    let all = tap.all_expert_tokens(e);
                    match (st.stage, &ex.inputs[e], &ex.acts[e]) {
                        // Calibrate all experts: every expert sees every token.
                        (Stage::Experts, _, _) if all => {
                            observe(tap, TapPoint::ExpertIn(e), || Ok(ex.all.clone()))?
                        }
                        (Stage::Down, _, _) if all => {
                            observe(tap, TapPoint::ExpertDownIn(e), || {
                                moe.experts[e].activation(ex.all.clone())
                            })?
                        }
                        (Stage::Experts, Some(xe), _) => {
                            observe(tap, TapPoint::ExpertIn(e), || Ok(xe.clone()))?
                        }
                        (Stage::Down, _, Some(a)) => {
                            observe(tap, TapPoint::ExpertDownIn(e), || Ok(a.clone()))?
                        }
                        (Stage::Down, Some(xe), None) => {
                            observe(tap, TapPoint::ExpertDownIn(e), || {
                                moe.experts[e].activation(xe.clone())
                            })?
                        }
                        _ => {}
                    }
                }
                Ok(())
            }
            (Stage::Done, _) => Ok(()),
            (stage, _) => Err(PareError::Internal(format!(
                "staged forward: stage {stage:?} does not exist in this block"
            ))),
        }
    }

    /// Runs the current stage's linears and moves to the next stage. Down-projection outputs
    /// and routing decisions are shown to `tap` here.
    pub fn advance(&self, st: &mut Staged, rope: &Rope, tap: &mut dyn Tap) -> Result<()> {
        match (st.stage, &self.ffn) {
            (Stage::Attn, _) => {
                let x = st.take_x()?;
                st.x = Some(self.attn.attend(x, st.b, st.s, rope)?);
                st.stage = Stage::AttnOut;
            }
            (Stage::AttnOut, _) => {
                let (x, h) = (st.take_x()?, st.take_h());
                let (h, xn) = self
                    .post_norm
                    .forward_keep(self.attn.o.forward_add(x, h)?)?;
                st.h = h;
                st.x = Some(xn);
                st.stage = Stage::Mlp;
            }
            (Stage::Mlp, Ffn::Dense(mlp)) => {
                if !st.lean {
                    st.act = Some(mlp.activation(st.take_x()?)?);
                }
                st.stage = Stage::Down;
            }
            (Stage::Mlp, Ffn::Moe(moe)) => {
                let x = st.x()?;
                let routed = moe.route(x.clone())?;
                if tap.wants_routing() {
                    tap.observe_routing(&routed.decision(moe.experts.len()))?;
                }
                let n = moe.experts.len();
                let (mut idx, mut inputs) = (vec![None; n], vec![None; n]);
                for (e, rows) in routed.tokens.iter().enumerate() {
                    if !rows.is_empty() {
                        let (i, xe) = gather_rows(&x, rows);
                        idx[e] = Some(i);
                        inputs[e] = Some(xe);
                    }
                }
                st.x = None;
                st.experts = Some(ExpertsState {
                    routed,
                    all: x,
                    idx,
                    inputs,
                    acts: vec![None; n],
                });
                st.stage = Stage::Experts;
            }
            (Stage::Experts, Ffn::Moe(moe)) => {
                let lean = st.lean;
                let ex = experts_mut(st)?;
                if !lean {
                    for (e, input) in ex.inputs.iter_mut().enumerate() {
                        if let Some(xe) = input.take() {
                            ex.acts[e] = Some(moe.experts[e].activation(xe)?);
                        }
                    }
                }
                st.stage = Stage::Down;
            }
            (Stage::Down, Ffn::Dense(mlp)) => {
                let act = match st.act.take() {
                    Some(a) => a,
                    None => mlp.activation(st.take_x()?)?,
                };
                let h = st.take_h();
                if tap.wants(TapPoint::MlpDownOut) {
                    let y = mlp.down.forward(act)?;
                    tap.observe(TapPoint::MlpDownOut, &y)?;
                    st.h = h + y;
                } else {
                    st.h = mlp.down.forward_add(act, h)?;
                }
                st.x = None;
                st.stage = Stage::Done;
            }
            (Stage::Down, Ffn::Moe(moe)) => {
                let [t, d] = st.h.dims();
                let device = st.h.device();
                let ex = st.experts.take().ok_or_else(no_experts)?;
                let mut out = Tensor::<2>::zeros([t, d], &device);
                for (e, expert) in moe.experts.iter().enumerate() {
                    let Some(idx) = ex.idx[e].clone() else {
                        continue;
                    };
                    let act = match (&ex.acts[e], &ex.inputs[e]) {
                        (Some(a), _) => a.clone(),
                        (None, Some(xe)) => expert.activation(xe.clone())?,
                        (None, None) => return Err(no_experts()),
                    };
                    let ye = expert.down.forward(act)?;
                    observe(tap, TapPoint::ExpertDownOut(e), || Ok(ye.clone()))?;
                    let w = &ex.routed.weights[e];
                    let w =
                        Tensor::<2>::from_data(TensorData::new(w.clone(), [w.len(), 1]), &device);
                    out = out.select_assign(0, idx, ye * w, IndexingUpdateOp::Add);
                }
                st.h = st.h.clone() + out;
                st.stage = Stage::Done;
            }
            (stage, _) => {
                return Err(PareError::Internal(format!(
                    "staged forward: cannot advance from {stage:?} in this block"
                )));
            }
        }
        Ok(())
    }
}

fn no_experts() -> PareError {
    PareError::Internal("staged forward: expert state missing".into())
}

fn experts(st: &Staged) -> Result<&ExpertsState> {
    st.experts.as_ref().ok_or_else(no_experts)
}

fn experts_mut(st: &mut Staged) -> Result<&mut ExpertsState> {
    st.experts.as_mut().ok_or_else(no_experts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{LinearRole, MlpPart};
    use crate::model::{NoTap, to_host};
    use crate::pipeline::ModelRunner;

    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models/");

    fn runner(dir: &str) -> ModelRunner {
        ModelRunner::open(std::path::Path::new(dir), &burn::tensor::Device::flex()).unwrap()
    }

    fn host(t: Tensor<3>) -> Vec<f32> {
        let [b, s, d] = t.dims();
        to_host(t.reshape([b * s, d])).unwrap()
    }

    /// Staged (lean) run over two batches, stage by stage as the true-sequential compressor
    /// does, against the plain forward: bit-identical, for a dense and an MoE block.
    #[test]
    fn lean_staged_run_equals_the_forward() {
        for dir in [
            concat!(env!("CARGO_MANIFEST_DIR"), "/models/stories260k").to_string(),
            format!("{SHARED}tiny-mixtral"),
        ] {
            let r = runner(&dir);
            let ids: Vec<Vec<u32>> = (0..3)
                .map(|i| (0..40).map(|t| (t * 7 + i * 13) % 200 + 3).collect())
                .collect();
            let rope = Rope::new(r.cfg(), 40, &r.device);
            let (block, _) = r.load_block(1).unwrap();
            let hidden = vec![
                r.ends.embed(&ids[..2]).unwrap(),
                r.ends.embed(&ids[2..]).unwrap(),
            ];
            let plain: Vec<Vec<f32>> = hidden
                .iter()
                .map(|h| host(block.forward(h.clone(), &rope, &mut NoTap).unwrap()))
                .collect();
            let mut staged: Vec<Staged> = hidden
                .into_iter()
                .map(|h| block.begin(h, true).unwrap())
                .collect();
            for _ in block.stages() {
                for st in &staged {
                    block.observe(st, &mut NoTap).unwrap();
                }
                for st in staged.iter_mut() {
                    block.advance(st, &rope, &mut NoTap).unwrap();
                }
            }
            for (st, want) in staged.into_iter().zip(&plain) {
                assert_eq!(st.stage(), Stage::Done);
                assert_eq!(&host(st.output()), want, "{dir}");
            }
        }
    }

    /// `set_linear` on the fused q|k|v and gate|up GEMMs equals building the block with the
    /// new weights.
    #[test]
    fn set_linear_equals_rebuilding() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/stories260k");
        let r = runner(dir);
        let mut w = r.arch.read_block(&r.store, 0, None).unwrap();
        let mut block = r.arch.build_block(&w, &r.device).unwrap();
        for (slot, m, _) in w.linears.iter_mut() {
            if matches!(slot.id.role, LinearRole::K | LinearRole::Mlp(MlpPart::Up)) {
                m.data
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v *= if i % 3 == 0 { 0.0 } else { 1.5 });
                block.set_linear(slot.id.role, m).unwrap();
            }
        }
        let rebuilt = r.arch.build_block(&w, &r.device).unwrap();
        let ids = vec![(3..35).collect::<Vec<u32>>()];
        let rope = Rope::new(r.cfg(), 32, &r.device);
        let h = r.ends.embed(&ids).unwrap();
        let a = host(block.forward(h.clone(), &rope, &mut NoTap).unwrap());
        let b = host(rebuilt.forward(h, &rope, &mut NoTap).unwrap());
        assert_eq!(a, b);
        let e = block
            .set_linear(LinearRole::Router, &w.linears[0].1)
            .unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
    }

    /// Records what it is shown: the points it wants, in order, with their tensors.
    struct Recorder {
        wanted: Vec<TapPoint>,
        routing: bool,
        seen: Vec<(TapPoint, Vec<f32>)>,
        routings: usize,
    }

    impl Tap for Recorder {
        fn wants(&self, p: TapPoint) -> bool {
            self.wanted.contains(&p)
        }
        fn observe(&mut self, p: TapPoint, x: &Tensor<2>) -> Result<()> {
            self.seen.push((p, to_host(x.clone())?));
            Ok(())
        }
        fn wants_routing(&self) -> bool {
            self.routing
        }
        fn observe_routing(&mut self, _: &crate::model::RoutingDecision<'_>) -> Result<()> {
            self.routings += 1;
            Ok(())
        }
    }

    /// `observe_forward` shows a tap exactly what the full forward shows it (bit-identical
    /// tensors, same order), for dense and MoE blocks, whichever points are wanted; a tap
    /// that wants nothing sees nothing.
    #[test]
    fn observe_forward_shows_what_the_forward_shows() {
        for (dir, experts) in [
            (
                concat!(env!("CARGO_MANIFEST_DIR"), "/models/stories260k").to_string(),
                0,
            ),
            (format!("{SHARED}tiny-mixtral"), 4),
        ] {
            let r = runner(&dir);
            let ids: Vec<Vec<u32>> = (0..2)
                .map(|i| (0..24).map(|t| (t * 5 + i * 11) % 200 + 3).collect())
                .collect();
            let rope = Rope::new(r.cfg(), 24, &r.device);
            let (block, _) = r.load_block(0).unwrap();
            let h = r.ends.embed(&ids).unwrap();
            let mut sets = vec![
                vec![TapPoint::AttnIn],
                vec![TapPoint::AttnOutIn, TapPoint::MlpIn],
                vec![TapPoint::MlpDownIn, TapPoint::MlpDownOut],
                vec![],
            ];
            if experts > 0 {
                sets.push((0..experts).map(TapPoint::ExpertIn).collect());
                sets.push(vec![TapPoint::ExpertDownIn(1), TapPoint::ExpertDownOut(2)]);
            }
            for wanted in sets {
                for routing in [false, true] {
                    let mk = || Recorder {
                        wanted: wanted.clone(),
                        routing,
                        seen: vec![],
                        routings: 0,
                    };
                    let (mut full, mut lean) = (mk(), mk());
                    block.forward(h.clone(), &rope, &mut full).unwrap();
                    block.observe_forward(h.clone(), &rope, &mut lean).unwrap();
                    assert_eq!(lean.seen, full.seen, "{dir} {wanted:?}");
                    assert_eq!(lean.routings, full.routings, "{dir} {wanted:?}");
                    // Down points exist in a dense block only, expert points in an MoE one.
                    let exists = wanted.iter().any(|p| match p {
                        TapPoint::MlpDownIn | TapPoint::MlpDownOut => experts == 0,
                        p => !p.is_expert() || experts > 0,
                    }) || (routing && experts > 0);
                    assert_eq!(
                        !full.seen.is_empty() || full.routings > 0,
                        exists,
                        "{wanted:?}"
                    );
                }
            }
        }
    }
}
