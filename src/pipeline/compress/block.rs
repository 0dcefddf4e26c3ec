//! Compressing one decoder block: the per-linear state and the two ways statistics are gathered.
//!
//! * **Staged** (dense models with `propagate: compressed`, the default): the block is run one
//!   linear group at a time — q/k/v, then o, then gate/up, then down — and each group is
//!   calibrated on inputs produced by the *already compressed* groups before it ("true
//!   sequential", as in the GPTQ and SparseGPT reference scripts' `--true-sequential`). Each
//!   group's input is computed once and cached, so the whole block costs about one forward pass
//!   plus one extra gate/up GEMM, instead of two full passes; the last stage's output is the
//!   next block's input. This differs from llm-compressor, which calibrates every linear of a
//!   block from one pass of the dense block.
//! * **Two-pass** (MoE blocks, `propagate: original`, and data-free recipes): pass 1 runs the
//!   dense block with a tap that gathers every group's statistics at once (for data-free methods
//!   only the first ~1k tokens, for the error measurement); pass 2 recomputes the outputs.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::Tensor;

use super::ERROR_TOKENS;
use crate::arch::{BlockWeights, LinearSlot, tap_point};
use crate::compress::quant::ScaleDtype;
use crate::compress::{CompressedLinear, InputStats, Needs};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;
use crate::model::{NoTap, Rope, TapPoint};
use crate::pipeline::stats_tap::StatsTap;
use crate::pipeline::{ModelRunner, Progress};
use crate::recipe::PlanStep;

/// One linear's journey through the recipe's steps.
pub struct LinearState {
    pub original: Matrix,
    pub current: CompressedLinear,
    pub methods: Vec<String>,
    pub warnings: Vec<String>,
}

/// A block being compressed: its weights, per-linear states and the inputs kept for errors.
pub struct BlockJob<'a> {
    pub weights: BlockWeights,
    pub states: BTreeMap<String, LinearState>,
    pub kept_inputs: BTreeMap<TapPoint, Matrix>,
    steps: &'a [PlanStep],
    targeted: &'a [BTreeSet<String>],
    sdt: ScaleDtype,
}

impl<'a> BlockJob<'a> {
    pub fn new(
        weights: BlockWeights,
        steps: &'a [PlanStep],
        targeted: &'a [BTreeSet<String>],
        sdt: ScaleDtype,
    ) -> Self {
        let states = weights
            .linears
            .iter()
            .map(|(slot, m, _)| {
                let st = LinearState {
                    original: m.clone(),
                    current: CompressedLinear {
                        weight: m.clone(),
                        quant: None,
                    },
                    methods: Vec::new(),
                    warnings: Vec::new(),
                };
                (slot.id.clone(), st)
            })
            .collect();
        Self {
            weights,
            states,
            kept_inputs: BTreeMap::new(),
            steps,
            targeted,
            sdt,
        }
    }

    /// The block's weights with every linear's current (compressed so far) weight.
    pub fn current_weights(&self) -> BlockWeights {
        let mut out = self.weights.clone();
        for (slot, m, _) in out.linears.iter_mut() {
            if let Some(st) = self.states.get(&slot.id) {
                *m = st.current.weight.clone();
            }
        }
        out
    }

    /// Linears read at `point` that some step targets.
    fn group(&self, point: Option<TapPoint>) -> Vec<LinearSlot> {
        self.weights
            .linears
            .iter()
            .map(|(s, _, _)| s)
            .filter(|s| point.is_none_or(|p| tap_point(&s.id) == p))
            .filter(|s| self.targeted.iter().any(|t| t.contains(&s.id)))
            .cloned()
            .collect()
    }

    /// Union of what the steps need for the linears in `ids`.
    fn needs_of(&self, ids: &[LinearSlot]) -> Needs {
        self.steps
            .iter()
            .zip(self.targeted)
            .filter(|(_, t)| ids.iter().any(|s| t.contains(&s.id)))
            .fold(Needs::NONE, |n, (s, _)| n.union(s.method.needs()))
    }

    /// True when some step targeting this block needs calibration statistics.
    pub fn needs_data(&self) -> bool {
        self.needs_of(&self.group(None)).any()
    }

    /// Applies every step, in order, to the linears in `ids` with the gathered `stats`.
    fn apply(
        &mut self,
        ids: &[LinearSlot],
        stats: &BTreeMap<TapPoint, InputStats>,
        progress: &dyn Progress,
    ) -> Result<()> {
        for (step, targets) in self.steps.iter().zip(self.targeted) {
            for slot in ids.iter().filter(|s| targets.contains(&s.id)) {
                let st = self
                    .states
                    .get_mut(&slot.id)
                    .ok_or_else(|| PareError::Usage(format!("no state for {}", slot.id)))?;
                let point_stats = stats.get(&tap_point(&slot.id));
                let (cl, warnings) =
                    step.method
                        .apply(&slot.id, &st.current.weight, point_stats, self.sdt)?;
                for w in &warnings {
                    progress.warn(&format!("{}: {w}", slot.id));
                }
                // A later pruning step invalidates an earlier quantisation's integers.
                let quant = cl.quant.or_else(|| {
                    if cl.weight == st.current.weight {
                        st.current.quant.take()
                    } else {
                        None
                    }
                });
                st.current = CompressedLinear {
                    weight: cl.weight,
                    quant,
                };
                st.methods.push(step.name.clone());
                st.warnings.extend(warnings);
            }
        }
        Ok(())
    }

    fn tap_for(&self, ids: &[LinearSlot], all_points: bool) -> StatsTap {
        let needs = self.needs_of(ids);
        let mut points: BTreeMap<TapPoint, (usize, Needs)> = BTreeMap::new();
        for s in ids {
            points.insert(tap_point(&s.id), (s.cols, needs));
        }
        if all_points {
            for (s, _, _) in &self.weights.linears {
                points
                    .entry(tap_point(&s.id))
                    .or_insert((s.cols, Needs::NONE));
            }
        }
        StatsTap::new(points, ERROR_TOKENS)
    }

    /// Staged compression of a dense block; replaces `hidden` with the block's outputs.
    pub fn run_staged(
        &mut self,
        runner: &ModelRunner,
        hidden: &mut [Tensor<3>],
        rope: &Rope,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut cache: Vec<Tensor<2>> = Vec::with_capacity(hidden.len());
        for point in [
            TapPoint::AttnIn,
            TapPoint::AttnOutIn,
            TapPoint::MlpIn,
            TapPoint::MlpDownIn,
        ] {
            let block = runner
                .arch
                .build_block(&self.current_weights(), &runner.device)?;
            let mlp = dense_mlp(&block)?;
            let ids = self.group(Some(point));
            let d_in = self
                .weights
                .linears
                .iter()
                .find(|(s, _, _)| tap_point(&s.id) == point)
                .map(|(s, _, _)| s.cols)
                .unwrap_or(0);
            let needs = self.needs_of(&ids);
            let mut tap = StatsTap::new(BTreeMap::from([(point, (d_in, needs))]), ERROR_TOKENS);
            for (i, h) in hidden.iter().enumerate() {
                let [b, s, d] = h.dims();
                tap.batch_seqs = b;
                let h2 = h.clone().reshape([b * s, d]);
                let x = match point {
                    TapPoint::AttnIn => block.input_norm.forward(h2),
                    TapPoint::AttnOutIn => {
                        let a = block.attn.attend(block.input_norm.forward(h2), b, s, rope);
                        cache.push(a.clone());
                        a
                    }
                    TapPoint::MlpIn => {
                        let h1 = h2 + block.attn.o.forward(cache[i].clone());
                        cache[i] = h1.clone();
                        block.post_norm.forward(h1)
                    }
                    _ => mlp.activation(block.post_norm.forward(cache[i].clone())),
                };
                crate::model::Tap::observe(&mut tap, point, &x)?;
            }
            let (stats, kept) = tap.finish();
            self.kept_inputs.extend(kept);
            self.apply(&ids, &stats, progress)?;
        }
        // The block's output from the fully compressed block.
        let block = runner
            .arch
            .build_block(&self.current_weights(), &runner.device)?;
        let mlp = dense_mlp(&block)?;
        for (h, h1) in hidden.iter_mut().zip(cache) {
            let [b, s, d] = h.dims();
            let out = h1.clone()
                + mlp
                    .down
                    .forward(mlp.activation(block.post_norm.forward(h1)));
            *h = out.reshape([b, s, d]);
        }
        Ok(())
    }

    /// Two-pass compression; replaces `hidden` with the outputs of the compressed block
    /// (`propagate_compressed`) or of the original one.
    pub fn run_two_pass(
        &mut self,
        runner: &ModelRunner,
        hidden: &mut [Tensor<3>],
        rope: &Rope,
        propagate_compressed: bool,
        progress: &dyn Progress,
    ) -> Result<()> {
        let ids = self.group(None);
        if !ids.is_empty() {
            let block = runner.arch.build_block(&self.weights, &runner.device)?;
            let mut tap = self.tap_for(&ids, true);
            let data = self.needs_of(&ids).any();
            let mut tokens = 0;
            for h in hidden.iter() {
                if !data && tokens >= ERROR_TOKENS {
                    break;
                }
                let [b, s, _] = h.dims();
                tap.batch_seqs = b;
                tokens += b * s;
                block.forward(h.clone(), rope, &mut tap)?;
            }
            let (stats, kept) = tap.finish();
            self.kept_inputs = kept;
            self.apply(&ids, &stats, progress)?;
        }
        let next = if propagate_compressed {
            self.current_weights()
        } else {
            self.weights.clone()
        };
        let block = runner.arch.build_block(&next, &runner.device)?;
        for h in hidden.iter_mut() {
            *h = block.forward(h.clone(), rope, &mut NoTap)?;
        }
        Ok(())
    }
}

/// The dense MLP of a block (staged compression is only chosen for dense blocks).
fn dense_mlp(block: &crate::model::DecoderBlock) -> Result<&crate::model::Mlp> {
    match &block.ffn {
        crate::model::Ffn::Dense(mlp) => Ok(mlp),
        crate::model::Ffn::Moe(_) => Err(PareError::Usage(
            "staged compression needs a dense MLP".into(),
        )),
    }
}
