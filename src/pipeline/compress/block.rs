//! Compressing one decoder block, in either ordering of the recipe's `sequential` key:
//!
//! * **`block`** (the reference ordering of llm-compressor and the Wanda/SparseGPT scripts):
//!   one forward of the block as loaded gathers every linear's statistics at once; every
//!   targeted linear is compressed; a second forward, of the compressed block (or the original
//!   one with `propagate: original`), gives the next block's inputs. About two block forwards.
//! * **`linear`** (true-sequential, the GPTQ/SparseGPT scripts' `--true-sequential`): the
//!   block's staged forward ([`crate::model::Stage`]) runs over all calibration batches one
//!   stage at a time — q/k/v, then o, then gate/up (or the router, then the experts' gate/up),
//!   then down — and each group is compressed, and swapped into the block, between observing
//!   its inputs and advancing past it. Each group is calibrated on inputs produced by the
//!   already compressed groups, each input is computed once, and the last stage's output is the
//!   next block's input: about one block forward (plus one gate/up GEMM in the lean state).
//!
//! Either way the block is built on the device once and compressed linears are swapped in with
//! [`crate::model::DecoderBlock::set_linear`]. Memory: the block's weights are held once (the
//! device block, which on the host is where the CPU kernels read them); a linear's original and
//! compressed copies exist only while it is being compressed — every step runs on one linear
//! before the next, and the finished linear is reported and written at once ([`super::Sink`]).
//! Untouched linears are written when the job starts.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::Tensor;

use super::Sink;
use crate::allocate::Allocation;
use crate::arch::LinearSlot;
use crate::compress::kit::obs::FactorMemo;
use crate::compress::quant::ScaleDtype;
use crate::compress::{CompressedLinear, ExportHints, LinearInput, Method};
use crate::error::{PareError, Result};
use crate::id::{LinearId, LinearRole};
use crate::matrix::Matrix;
use crate::model::{DecoderBlock, Ffn, NoTap, Rope, Stage, TapPoint};
use crate::pipeline::Progress;
use crate::recipe::{ExpertCalibration, PlanStep};
use crate::report::ExpertReport;
use crate::stats::{StatKind, StatSet, Stats, StatsTap};

/// The report row of expert `expert` of `block`, created on first use.
fn expert_row(
    rows: &mut BTreeMap<usize, ExpertReport>,
    block: usize,
    expert: usize,
) -> &mut ExpertReport {
    rows.entry(expert).or_insert_with(|| ExpertReport {
        block,
        expert,
        ..ExpertReport::default()
    })
}

/// One linear's journey through the recipe's steps (its weights live in the device block).
pub struct LinearState {
    /// The linear as the output names it.
    pub slot: LinearSlot,
    /// Its id in the model as read (the plan's targets and the allocation use it); differs from
    /// `slot.id` for experts renumbered by expert pruning.
    pub orig: LinearId,
    pub point: TapPoint,
    /// Steps applied, by name.
    pub methods: Vec<String>,
    pub notes: Vec<String>,
    pub hints: ExportHints,
}

/// What every block of a run shares: the steps, their target sets and the allocation.
pub struct LoopCtx<'a> {
    pub steps: &'a [PlanStep],
    pub targeted: Vec<BTreeSet<LinearId>>,
    pub allocation: &'a Allocation,
    pub scale_dtype: ScaleDtype,
    /// MoE: which tokens expert statistics see (`calibrate_all_experts`).
    pub experts: ExpertCalibration,
    /// Input rows kept per tap point for the error measurement.
    pub error_tokens: usize,
}

impl<'a> LoopCtx<'a> {
    pub fn new(
        steps: &'a [PlanStep],
        allocation: &'a Allocation,
        scale_dtype: ScaleDtype,
        experts: ExpertCalibration,
        error_tokens: usize,
    ) -> Self {
        Self {
            steps,
            targeted: steps
                .iter()
                .map(|s| s.targets.iter().copied().collect())
                .collect(),
            allocation,
            scale_dtype,
            experts,
            error_tokens,
        }
    }

    /// The statistics the steps targeting `id` need.
    fn needs(&self, id: LinearId) -> StatSet {
        self.steps
            .iter()
            .zip(&self.targeted)
            .filter(|(_, t)| t.contains(&id))
            .fold(StatSet::EMPTY, |n, (s, _)| {
                n.union(s.method.compressor().stats())
            })
    }

    fn targets(&self, id: LinearId) -> bool {
        self.targeted.iter().any(|t| t.contains(&id))
    }
}

/// A block being compressed: its device copy and its linears' states.
pub struct BlockJob<'a> {
    ctx: &'a LoopCtx<'a>,
    block: DecoderBlock,
    pub states: Vec<LinearState>,
    /// The first calibration rows at each compressed linear's input, for the error measurement.
    pub kept_inputs: BTreeMap<TapPoint, Matrix>,
    /// MoE: how each expert with a compressed linear was calibrated, by expert index.
    pub experts: BTreeMap<usize, ExpertReport>,
    /// MoE: per expert, its statistics see every token (else the routed ones).
    all_tokens: Vec<bool>,
}

impl<'a> BlockJob<'a> {
    /// A job for `block` (its linears described by `slots`, each with its id in the model as
    /// read); the linears no step targets are written to `sink` at once.
    pub fn new(
        ctx: &'a LoopCtx<'a>,
        mut block: DecoderBlock,
        slots: Vec<(LinearSlot, LinearId)>,
        sink: &mut Sink<'_>,
    ) -> Result<Self> {
        let mut states = Vec::with_capacity(slots.len());
        for (slot, orig) in slots {
            if !ctx.targets(orig) {
                let w = block.linear_weight(slot.id.role)?;
                sink.write(
                    &slot,
                    &CompressedLinear::dense(w),
                    ExportHints::default(),
                    false,
                )?;
            }
            states.push(LinearState {
                point: TapPoint::input_of(slot.id.role),
                slot,
                orig,
                methods: Vec::new(),
                notes: Vec::new(),
                hints: ExportHints::default(),
            });
        }
        Ok(Self {
            ctx,
            block,
            states,
            kept_inputs: BTreeMap::new(),
            experts: BTreeMap::new(),
            all_tokens: Vec::new(),
        })
    }

    /// Indices of the targeted linears whose input is at one of `points` (all when `None`).
    fn group(&self, points: Option<&BTreeSet<TapPoint>>) -> Vec<usize> {
        (0..self.states.len())
            .filter(|&i| {
                let s = &self.states[i];
                self.ctx.targets(s.orig) && points.is_none_or(|p| p.contains(&s.point))
            })
            .collect()
    }

    /// True when some step targeting this block needs calibration statistics.
    pub fn needs_data(&self) -> bool {
        self.group(None)
            .iter()
            .any(|&i| !self.ctx.needs(self.states[i].orig).is_empty())
    }

    fn experts(&self) -> Option<usize> {
        match &self.block.ffn {
            Ffn::Moe(m) => Some(m.experts.len()),
            Ffn::Dense(_) => None,
        }
    }

    /// Decides which experts' statistics see every token: all or none by the recipe, or with
    /// `auto` those routed fewer tokens (`routed`, per expert) than their widest input.
    fn choose_expert_tokens(&mut self, routed: Option<&[u64]>) {
        let Some(n) = self.experts() else {
            return;
        };
        self.all_tokens = match self.ctx.experts {
            ExpertCalibration::All => vec![true; n],
            ExpertCalibration::Routed => vec![false; n],
            ExpertCalibration::Auto => (0..n)
                .map(|e| {
                    let width = self
                        .states
                        .iter()
                        .filter(|s| matches!(s.slot.id.role, LinearRole::Expert { index, .. } if index == e))
                        .map(|s| s.slot.cols)
                        .max()
                        .unwrap_or(0);
                    routed.and_then(|r| r.get(e)).is_none_or(|&t| (t as usize) < width)
                })
                .collect(),
        };
    }

    /// With `auto` in an MoE block whose experts need statistics: the routing counts of the
    /// calibration batches, from a forward that stops after the router.
    fn count_routing(&self, hidden: &[Tensor<3>], rope: &Rope) -> Result<Option<Vec<u64>>> {
        let wanted = self.ctx.experts == ExpertCalibration::Auto
            && self.group(None).iter().any(|&i| {
                let s = &self.states[i];
                s.slot.id.role.is_expert() && !self.ctx.needs(s.orig).is_empty()
            });
        let Some(n) = self.experts().filter(|_| wanted) else {
            return Ok(None);
        };
        let mut tap = StatsTap::new(BTreeMap::new(), Some(n), BTreeMap::new(), 0);
        for h in hidden {
            self.block.observe_forward(h.clone(), rope, &mut tap)?;
        }
        Ok(tap.finish().0.routing().ok().map(|r| r.tokens.clone()))
    }

    /// A tap gathering what the linears `group` need, keeping their inputs' first rows; with
    /// `routing`, also the routing decisions an expert step needs (a tap that runs the router).
    fn tap_for(&self, group: &[usize], routing: bool) -> StatsTap {
        let mut points: BTreeMap<TapPoint, (usize, StatSet)> = BTreeMap::new();
        let mut keep = BTreeMap::new();
        let mut wants_routing = false;
        for &i in group {
            let s = &self.states[i];
            let need = self.ctx.needs(s.orig);
            // Routing counts go into the report's expert table whenever an expert is compressed.
            wants_routing |= need.contains(StatKind::Routing) || s.slot.id.role.is_expert();
            let e = points
                .entry(s.point)
                .or_insert((s.slot.cols, StatSet::EMPTY));
            e.1 = e.1.union(need);
            keep.insert(s.point, s.slot.cols);
        }
        let experts = self.experts().filter(|_| routing && wants_routing);
        let mut tap = StatsTap::new(points, experts, keep, self.ctx.error_tokens);
        tap.all_experts = self.all_tokens.clone();
        tap
    }

    /// Applies every step, in order, to each linear of `group` in turn with the gathered `stats`,
    /// swaps the result into the device block when `push`, and hands it to `sink`.
    fn compress(
        &mut self,
        group: &[usize],
        stats: &Stats,
        push: bool,
        sink: &mut Sink<'_>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let ctx = self.ctx;
        // q/k/v and gate/up share an input: its Hessian is factorised once for the group.
        let factors = FactorMemo::default();
        for &i in group {
            let (id, orig) = (self.states[i].slot.id, self.states[i].orig);
            let original = self
                .block
                .linear_weight(id.role)
                .map_err(|e| e.in_layer(id))?;
            let mut current: Option<CompressedLinear> = None;
            let st = &mut self.states[i];
            for (si, (step, targets)) in ctx.steps.iter().zip(&ctx.targeted).enumerate() {
                // Expert pruning ran before this block's steps (it removes whole experts).
                if !targets.contains(&orig) || matches!(step.method, Method::ExpertPrune(_)) {
                    continue;
                }
                let settings = ctx.allocation.settings(si, orig);
                if settings.protect {
                    let note = format!("{}: protected, left unchanged", step.name);
                    if !st.notes.contains(&note) {
                        st.notes.push(note);
                    }
                    continue;
                }
                let cur = current
                    .take()
                    .unwrap_or_else(|| CompressedLinear::dense(original.clone()));
                // An expert whose input saw no calibration token has no statistics: the step's
                // data-free form compresses it instead (never a zeroed expert).
                let tokens = stats.point(st.point).map_or(0, |p| p.n_tokens);
                let needs_data = !step.method.compressor().stats().per_point().is_empty();
                let fallback = match (needs_data && tokens == 0, id.role) {
                    (true, LinearRole::Expert { index, .. }) => {
                        step.method.compressor().fallback().map(|m| (index, m))
                    }
                    _ => None,
                };
                if let LinearRole::Expert { index, part } = id.role {
                    let row = expert_row(&mut self.experts, id.block, index);
                    row.tokens_for_statistics = row.tokens_for_statistics.max(tokens as u64);
                    if let Ok(r) = stats.routing() {
                        row.tokens_routed = r.tokens.get(index).copied().unwrap_or(0);
                    }
                    if let Some((_, m)) = &fallback {
                        let what = format!("{} → {}", step.method.name(), m.name());
                        let part = part.name();
                        match row.fallbacks.iter_mut().find(|f| f.starts_with(&what)) {
                            Some(f) => {
                                f.truncate(f.len() - 1);
                                f.push_str(&format!(", {part})"));
                            }
                            None => {
                                // Once per expert and step; each linear's row carries the note.
                                progress.warn(&format!(
                                    "blocks.{}.moe.experts.{index}: {}: no calibration token \
                                     reached this expert; its linears use the data-free {} instead",
                                    id.block,
                                    step.name,
                                    m.name()
                                ));
                                row.fallbacks.push(format!("{what} ({part})"));
                            }
                        }
                    }
                }
                let method = match &fallback {
                    Some((index, m)) => {
                        st.notes.push(format!(
                            "{}: expert {index} saw no calibration token; compressed by its \
                             data-free form {} instead",
                            step.name,
                            m.name()
                        ));
                        m
                    }
                    None => &step.method,
                };
                let input = LinearInput {
                    id,
                    original: &original,
                    current: &cur,
                    stats,
                    point: st.point,
                    settings: &settings,
                    scale_dtype: ctx.scale_dtype,
                    gradients: match ctx.allocation.gradients.get(&si) {
                        Some(f) => Some(f.linear(orig).ok_or_else(|| {
                            crate::PareError::Internal(format!(
                                "{}: no gradient for {orig} in {}",
                                step.name,
                                f.path.display()
                            ))
                        })?),
                        None => None,
                    },
                    mask: ctx
                        .allocation
                        .masks
                        .get(&si)
                        .and_then(|m| m.get(&orig))
                        .map(Vec::as_slice),
                    factors: Some(&factors),
                };
                let out = method
                    .compressor()
                    .compress(&input)
                    .map_err(|e| e.in_layer(id))?;
                for n in &out.notes {
                    progress.warn(&format!("{id}: {n}"));
                }
                current = Some(out.linear);
                st.hints = out.hints;
                st.methods.push(match &fallback {
                    Some((_, m)) => format!("{} (fallback: {})", step.name, m.name()),
                    None => step.name.clone(),
                });
                st.notes.extend(out.notes);
            }
            let c = current.unwrap_or_else(|| CompressedLinear::dense(original.clone()));
            if push && !st.methods.is_empty() {
                self.block
                    .set_linear(id.role, &c.weight)
                    .map_err(|e| e.in_layer(id))?;
            }
            let st = &self.states[i];
            if st.methods.is_empty() {
                // Protected from every step: written as it is.
                sink.write(&st.slot, &c, st.hints, false)?;
            } else {
                sink.finish(st, &original, &c, self.kept_inputs.get(&st.point))?;
            }
        }
        Ok(())
    }

    /// `sequential: block`: gather, compress all, re-run. Replaces `hidden` with the outputs of
    /// the compressed block (`propagate_compressed`) or of the original one; empties it instead
    /// when no block follows (`last`: nobody reads the last block's output). `release` is called
    /// once `hidden` has been read and before it is replaced (the previous block's resume state
    /// is written from it meanwhile).
    #[allow(clippy::too_many_arguments)]
    pub fn run_block_mode(
        &mut self,
        hidden: &mut Vec<Tensor<3>>,
        rope: &Rope,
        propagate_compressed: bool,
        last: bool,
        release: &mut dyn FnMut() -> Result<()>,
        sink: &mut Sink<'_>,
        progress: &dyn Progress,
    ) -> Result<()> {
        let group = self.group(None);
        if !group.is_empty() {
            let routed = self.count_routing(hidden, rope)?;
            self.choose_expert_tokens(routed.as_deref());
            let mut tap = self.tap_for(&group, true);
            for h in hidden.iter() {
                if tap.only_keeping_and_full() {
                    break; // data-free: only the error measurement's rows were needed
                }
                tap.batch_seqs = h.dims()[0];
                self.block.observe_forward(h.clone(), rope, &mut tap)?;
            }
            let (stats, kept) = tap.finish();
            self.kept_inputs = kept;
            self.compress(&group, &stats, propagate_compressed, sink, progress)?;
        }
        release()?;
        if last {
            hidden.clear();
            return Ok(());
        }
        for h in hidden.iter_mut() {
            *h = self.block.forward(h.clone(), rope, &mut NoTap)?;
        }
        Ok(())
    }

    /// `sequential: linear`: true-sequential compression over the block's stages; replaces
    /// `hidden` with the fully compressed block's outputs, or empties it when no block follows
    /// (`last`: the final stage is then not run). `release` is called first, before `hidden`
    /// is read (see [`Self::run_block_mode`]).
    pub fn run_linear_mode(
        &mut self,
        hidden: &mut Vec<Tensor<3>>,
        rope: &Rope,
        last: bool,
        release: &mut dyn FnMut() -> Result<()>,
        sink: &mut Sink<'_>,
        progress: &dyn Progress,
    ) -> Result<()> {
        // Starting the staged forward may copy a residual stream another handle still holds.
        release()?;
        let mut staged: Vec<_> = hidden
            .drain(..)
            .map(|h| self.block.begin(h, true))
            .collect::<Result<_>>()?;
        let mut stats = Stats::default();
        for &stage in self.block.stages() {
            let points = self.block.stage_points(stage);
            let group = self.group(Some(&points));
            if !group.is_empty() {
                if matches!(stage, Stage::Experts | Stage::Down) {
                    let routed = stats.routing().ok().map(|r| r.tokens.clone());
                    self.choose_expert_tokens(routed.as_deref());
                }
                let mut tap = self.tap_for(&group, false);
                for st in &staged {
                    tap.batch_seqs = st.batch();
                    self.block.observe(st, &mut tap)?;
                }
                let (s, kept) = tap.finish();
                stats.extend(s);
                self.kept_inputs.extend(kept);
                self.compress(&group, &stats, true, sink, progress)?;
                // This stage's linears are written: its Hessians and kept rows are not read
                // again (later stages tap other points).
                stats.remove_points(&points);
                self.kept_inputs.retain(|p, _| !points.contains(p));
            }
            if last && self.block.stages().last() == Some(&stage) {
                return Ok(()); // `hidden` stays empty: nobody reads the last block's output
            }
            // Routing decisions are made while advancing past the router, for the experts' steps.
            let mut tap = self.routing_tap(stage);
            for st in staged.iter_mut() {
                tap.batch_seqs = st.batch();
                self.block.advance(st, rope, &mut tap)?;
            }
            stats.extend(tap.finish().0);
        }
        for st in staged {
            if st.stage() != Stage::Done {
                return Err(PareError::Internal(format!(
                    "staged forward stopped at {:?}",
                    st.stage()
                )));
            }
            hidden.push(st.output());
        }
        Ok(())
    }

    /// A tap for the routing decisions made when advancing past `stage`, when an expert step
    /// needs them.
    fn routing_tap(&self, stage: Stage) -> StatsTap {
        let wanted = stage == Stage::Mlp
            && self.group(None).iter().any(|&i| {
                let s = &self.states[i];
                s.slot.id.role.is_expert() || self.ctx.needs(s.orig).contains(StatKind::Routing)
            });
        StatsTap::new(
            BTreeMap::new(),
            self.experts().filter(|_| wanted),
            BTreeMap::new(),
            0,
        )
    }
}
