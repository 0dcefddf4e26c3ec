//! MaskLLM (Fang et al., NeurIPS 2024; NVlabs/MaskLLM; ALGORITHMS.md §6): learns an N:M mask
//! per linear by Gumbel-softmax over the C(M, N) candidate masks of each group of M consecutive
//! input weights, with Adam on the logits only.
//!
//! The reference trains all logits on the language-model loss over 2 B tokens on 64 GPUs. Two
//! modes here:
//! * `mode: layer` (default, this module's `compress`): each linear's logits minimise its own
//!   reconstruction error `tr(ΔW H ΔWᵀ)` relative to the dense output (see [`math`]), computed
//!   from the Hessian the block loop gathers: no activation is stored and a linear costs one
//!   `[rows, d] × [d, d]` GEMM per iteration.
//! * `mode: end-to-end` ([`end_to_end`]): all logits together on the whole model's loss
//!   (distillation against the dense model, or the reference's causal-LM loss) through the
//!   streamed backward, before the block loop; the block loop applies the learned masks. The
//!   options below hold for both unless said; `batch` and `loss` are end-to-end only.
//!
//! Recipe: `- maskllm: { pattern: "2:4", iterations: 300, prior: sparsegpt, reconstruct: true }`
//! (`compensate: true` additionally learns a correction `δ` of the kept weights with the mask,
//! loss `‖(W − (W + δ) ⊙ M̃) X‖²`, so the mask is chosen for compensated weights; the OBS update
//! then replaces `δ`).
//!
//! * **Weights.** The mask is learned on the weights as read (frozen, as the reference's
//!   mask-only training). Without `reconstruct` the kept weights keep those values; with
//!   `reconstruct: true` SparseGPT's OBS update for the learned (fixed) mask is applied
//!   afterwards (the `Given` mask rule), which is what SparseGPT itself does once its mask is
//!   chosen.
//! * **Prior** (logits `N(0, 0.01²)` plus `(o_k − 1) · std · prior_strength`, `o_k` the overlap
//!   of candidate k with the prior mask): `sparsegpt` (default: SparseGPT's N:M mask on the
//!   Hessian, its weight update discarded, as the reference's prior), `wanda` (`|W|·sqrt(H_jj)`),
//!   `magnitude`, `previous` (the mask the previous pruning step left, which must be this
//!   pattern) or `none`.
//! * **Schedules** (linear in t/T): temperature 4 → 0.05 and logit scale 100 → 500, as the
//!   reference's shipped training scripts; Adam β (0.9, 0.95), ε 1e-5, decoupled weight decay
//!   0.1, cosine learning-rate decay to a tenth; the weight regulariser
//!   `λ (1 − t/T) ‖W ⊙ M̃‖² / ‖W‖²` is subtracted. The final mask is the argmax per group.
//! * **Defaults, and why.** The reference's learning rate (5e-4 for the logits) is tuned for
//!   2,000 iterations of 256 × 4096-token minibatches; the layer loss here is exact, so fewer,
//!   larger steps suffice. Measured on stories260k, 2:4 with `reconstruct` (perplexity, SparseGPT
//!   2:4 33.6): 300 iterations at lr 0.01 give 29.7–30.2 (two noise seeds), lr 0.003 29.9, lr 0.1
//!   39.0; 100 iterations 32.2, 1,000 iterations 29.6; weight_reg 0.5 30.6 (no gain, so 0);
//!   prior strength 1 31.8 (so the reference's 3); prior `wanda` 30.4. Hence `iterations 300`,
//!   `lr 0.01`, `weight_reg 0`, `prior sparsegpt`. `compensate` is off by default: it tied
//!   SparseGPT on tiny-llama (mean KLD 0.002186 against 0.002188, where plain `reconstruct` gave
//!   0.00270) but lost on stories260k (34.9).
//! * **Tail.** When d_in is not a multiple of M, the shorter last group of each row is not
//!   learned: it keeps the prior's mask (proportional N:M, noted).
//! * **Candidates.** At most 70 per group (`4:8`); larger C(M, N) is refused.
//! * **Memory and time.** While a linear is learned: the logits and their two Adam moments
//!   (`3 · K/M` floats per weight, 4.5 for 2:4) and four `[rows, d]` work buffers, about 8.5 × the
//!   linear in f32 for 2:4 (1.5 GB for a 7B down projection; `compensate` adds 3 more). Each
//!   iteration costs one `[rows, d] × [d, d]` GEMM plus O(weights · K) elementwise work.

pub mod end_to_end;
pub mod math;

use serde::{Deserialize, Serialize};

use crate::compress::MethodSpec;
use crate::compress::kit::obs::inverse_factor;
use crate::compress::kit::select::{prune_n_of_m_rows, tail_note};
use crate::compress::sparsegpt::math::{MaskRule, sparsegpt_sweep};
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, LinearInput, LinearOutput, MethodKind, NofM, pattern_name,
};
use crate::error::{PareError, Result};
use crate::stats::{StatKind, StatSet};

/// The name recipes use.
pub const NAME: &str = "maskllm";

/// Largest number of candidate masks per group.
pub const MAX_CANDIDATES: usize = 70;

/// Where the logits' prior comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prior {
    Sparsegpt,
    Wanda,
    Magnitude,
    Previous,
    None,
}

/// What the logits are trained on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Each linear on its own reconstruction error from the Hessian (the block loop).
    #[default]
    Layer,
    /// All targeted linears together on the whole model's loss, through the streamed backward
    /// before the block loop ([`end_to_end`]).
    EndToEnd,
}

/// The end-to-end loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// The causal-LM next-token cross-entropy (labels = inputs), as the reference.
    Lm,
    /// `KL(p_dense ‖ p_masked)` at every position against the dense model's own outputs.
    Distill,
}

/// `maskllm:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// `N:M` (required): keep N of every M consecutive input weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Adam steps per linear (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iterations: Option<usize>,
    /// Peak learning rate of the logits (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior: Option<Prior>,
    /// Prior strength, in standard deviations of the initial logits (default 3, as the
    /// reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_strength: Option<f64>,
    /// Gumbel-softmax temperature, first and last (default [4, 0.05]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<[f64; 2]>,
    /// Logit scale κ, first and last (default [100, 500]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<[f64; 2]>,
    /// Weight-regulariser strength λ (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_reg: Option<f64>,
    /// Decoupled weight decay of the logits (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Apply SparseGPT's OBS update for the learned mask (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstruct: Option<bool>,
    /// Learn the mask together with a correction of the kept weights, so that it is chosen
    /// for compensated weights (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compensate: Option<bool>,
    /// SparseGPT's dampening for the `sparsegpt` prior and `reconstruct` (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// Seed of the logits' initialisation and the Gumbel noise (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// `layer` (default) or `end-to-end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// End-to-end: calibration sequences per iteration (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// End-to-end: `distill` (default) or `lm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Loss>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked MaskLLM parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    #[serde(serialize_with = "pattern_name")]
    pub pattern: Option<NofM>,
    pub schedule: math::Schedule,
    pub prior: Prior,
    pub prior_strength: f32,
    pub reconstruct: bool,
    pub compensate: bool,
    pub dampening: f32,
    pub seed: u64,
    /// Set when the logits are trained end to end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end: Option<EndToEnd>,
}

/// The end-to-end mode's settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct EndToEnd {
    /// Calibration sequences per iteration.
    pub batch: usize,
    pub loss: Loss,
}

impl Params {
    fn nm(&self) -> Result<NofM> {
        self.pattern
            .ok_or_else(|| PareError::Internal("maskllm without an N:M pattern".into()))
    }

    /// The prior mask of `w` (`[out, in]`; `true` = pruned) for a prior other than
    /// `previous`; `factor` holds the input's Hessian (needed by `sparsegpt` and `wanda`).
    fn prior_mask(
        &self,
        prior: Prior,
        w: &crate::matrix::Matrix,
        factor: &Factor<'_>,
    ) -> Result<Option<Vec<bool>>> {
        let nm = self.nm()?;
        let (rows, d) = (w.rows, w.cols);
        Ok(match prior {
            Prior::None => None,
            Prior::Previous => {
                return Err(PareError::Internal(
                    "the previous step's mask is not a prior computed here".into(),
                ));
            }
            Prior::Magnitude | Prior::Wanda => {
                let mut c = w.data.clone();
                let scale: Vec<f32> = match prior {
                    Prior::Wanda => {
                        let h = factor.hessian()?;
                        (0..d).map(|j| h.get(j, j).max(0.0).sqrt()).collect()
                    }
                    _ => vec![1.0; d],
                };
                prune_n_of_m_rows(&mut c, d, nm, |j, v| v.abs() * scale[j]);
                Some(c.iter().map(|v| *v == 0.0).collect())
            }
            Prior::Sparsegpt => {
                let f = factor.get()?;
                let mut c = w.data.clone();
                for &j in &f.dead {
                    for r in 0..rows {
                        c[r * d + j] = 0.0;
                    }
                }
                let block = (128 / nm.m).max(1) * nm.m;
                sparsegpt_sweep(&mut c, d, &f.u, block, MaskRule::NofM(nm));
                Some(c.iter().map(|v| *v == 0.0).collect())
            }
        })
    }

    /// The layer mode: learns the mask of `input`'s linear on its Hessian `h` (`true` = pruned).
    fn learn_layer(
        &self,
        input: &LinearInput<'_>,
        h: &crate::matrix::Matrix,
        factor: &Factor<'_>,
        notes: &mut Vec<String>,
    ) -> Result<Vec<bool>> {
        let nm = self.nm()?;
        let w = input.original;
        let (rows, d) = (w.rows, w.cols);
        let prior: Option<Vec<bool>> = match self.prior {
            Prior::Previous => Some(input.weight().data.iter().map(|v| *v == 0.0).collect()),
            p => self.prior_mask(p, w, factor)?,
        };
        let mut ml = math::MaskLogits::init(
            rows,
            d,
            nm,
            prior.as_deref(),
            self.prior_strength,
            linear_seed(self.seed, &input.id),
        );
        if self.compensate {
            ml = ml.with_compensation(&w.data);
        }
        let norms = math::Norms::of(&w.data, &h.data, d);
        let mut buf = math::Buffers::new(&ml, d);
        let seed = linear_seed(self.seed ^ 0x5eed, &input.id);
        for t in 0..self.schedule.iterations {
            math::step(
                &mut ml,
                &w.data,
                &h.data,
                d,
                &norms,
                &self.schedule,
                t,
                seed,
                &mut buf,
            );
        }
        drop(buf);
        let tail = if d % nm.m != 0 {
            // The prior (or magnitude) decides the tail group.
            notes.extend(tail_note(d, nm));
            Some(self.tail_mask(w, prior.as_deref())?)
        } else {
            None
        };
        Ok(ml.hard_mask(d, tail.as_deref()))
    }

    /// The mask of the tail group (d_in not a multiple of M) from the prior, or by magnitude.
    fn tail_mask(&self, w: &crate::matrix::Matrix, prior: Option<&[bool]>) -> Result<Vec<bool>> {
        Ok(match prior {
            Some(p) => p.to_vec(),
            None => {
                let mut c = w.data.clone();
                prune_n_of_m_rows(&mut c, w.cols, self.nm()?, |_, v| v.abs());
                c.iter().map(|v| *v == 0.0).collect()
            }
        })
    }
}

fn positive(ctx: &ResolveCtx<'_>, field: &str, v: f64, what: &str) -> Result<f32> {
    if v.is_finite() && v > 0.0 {
        Ok(v as f32)
    } else {
        Err(ctx.err(field, format!("{field} {v} must be positive ({what})")))
    }
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        let Some(text) = self.pattern.as_deref() else {
            return Err(ctx.err(
                "pattern",
                "required: MaskLLM learns N:M masks, e.g. `pattern: \"2:4\"`",
            ));
        };
        let (_, pattern) = ctx.prune(None, Some(text))?;
        let Some(nm) = pattern else {
            return Err(ctx.err(
                "pattern",
                "MaskLLM learns N:M masks; for unstructured sparsity use wanda or sparsegpt (optionally followed by dsnot)",
            ));
        };
        let k = math::candidates(nm).len();
        if k > MAX_CANDIDATES {
            return Err(ctx.err(
                "pattern",
                format!("`{}:{}` has C({}, {}) = {k} candidate masks per group; at most {MAX_CANDIDATES} (e.g. 2:4, 1:4, 4:8)", nm.n, nm.m, nm.m, nm.n),
            ));
        }
        let prior = self.prior.unwrap_or(Prior::Sparsegpt);
        let mode = self.mode.unwrap_or_default();
        let end_to_end = match mode {
            Mode::Layer => {
                for (field, set) in [("batch", self.batch.is_some()), ("loss", self.loss.is_some())] {
                    if set {
                        return Err(ctx.err(
                            field,
                            format!("`{field}` belongs to `mode: end-to-end`; the layer mode trains each linear on its Hessian"),
                        ));
                    }
                }
                None
            }
            Mode::EndToEnd => {
                if prior == Prior::Previous {
                    return Err(ctx.err(
                        "prior",
                        "`mode: end-to-end` trains before the block loop, when no earlier step has pruned yet; use `sparsegpt`, `wanda`, `magnitude` or `none`",
                    ));
                }
                if self.compensate == Some(true) {
                    return Err(ctx.err(
                        "compensate",
                        "`compensate` belongs to the layer mode; end to end, use `reconstruct: true` for SparseGPT's OBS update of the learned mask",
                    ));
                }
                let batch = self.batch.unwrap_or(4);
                if batch == 0 {
                    return Err(ctx.err("batch", "batch must be at least 1 sequence (default 4)"));
                }
                Some(EndToEnd {
                    batch,
                    loss: self.loss.unwrap_or(Loss::Distill),
                })
            }
        };
        if prior == Prior::Previous {
            let earlier = ctx.earlier_mask("maskllm with `prior: previous`")?;
            if earlier != Some(nm) {
                return Err(ctx.err(
                    "prior",
                    format!("`previous` takes the earlier step's mask as the prior, but that step is not {}:{}; give it `pattern: \"{}:{}\"` or use another prior", nm.n, nm.m, nm.n, nm.m),
                ));
            }
        } else {
            ctx.no_earlier(
                "maskllm",
                "use `prior: previous` to start from that step's mask, or drop it",
            )?;
        }
        let (it0, lr0) = match mode {
            Mode::Layer => (300, 0.01),
            Mode::EndToEnd => (end_to_end::ITERATIONS, end_to_end::LR),
        };
        let iterations = self.iterations.unwrap_or(it0);
        if iterations == 0 {
            return Err(ctx.err(
                "iterations",
                format!("iterations must be at least 1 (default {it0})"),
            ));
        }
        let lr = positive(ctx, "lr", self.lr.unwrap_or(lr0), &format!("default {lr0}"))?;
        let [t0, t1] = self.temperature.unwrap_or([4.0, 0.05]);
        let temperature = [
            positive(ctx, "temperature", t0, "default [4, 0.05]")?,
            positive(ctx, "temperature", t1, "default [4, 0.05]")?,
        ];
        let [s0, s1] = self.scale.unwrap_or([100.0, 500.0]);
        let scale = [
            positive(ctx, "scale", s0, "default [100, 500]")?,
            positive(ctx, "scale", s1, "default [100, 500]")?,
        ];
        let nonneg = |field: &str, v: f64, dflt: &str| -> Result<f32> {
            if v.is_finite() && v >= 0.0 {
                Ok(v as f32)
            } else {
                Err(ctx.err(field, format!("{field} {v} must be ≥ 0 (default {dflt})")))
            }
        };
        let weight_reg = nonneg("weight_reg", self.weight_reg.unwrap_or(0.0), "0")?;
        let weight_decay = nonneg("weight_decay", self.weight_decay.unwrap_or(0.1), "0.1")?;
        let prior_strength = nonneg("prior_strength", self.prior_strength.unwrap_or(3.0), "3")?;
        Ok(Params {
            pattern: Some(nm),
            schedule: math::Schedule {
                iterations,
                temperature,
                scale,
                lr,
                weight_reg,
                weight_decay,
            },
            prior,
            prior_strength,
            reconstruct: self.reconstruct.unwrap_or(false),
            compensate: self.compensate.unwrap_or(false),
            dampening: ctx.dampening(self.dampening)?,
            seed: self.seed.unwrap_or(0),
            end_to_end,
        })
    }
}

/// SparseGPT's inverse factor of a linear's Hessian, computed on first use (for the prior and
/// the reconstruction) and at most once.
pub(crate) struct Factor<'h> {
    h: Option<&'h crate::matrix::Matrix>,
    dampening: f32,
    cell: std::cell::OnceCell<crate::compress::kit::obs::InverseFactor>,
}

impl<'h> Factor<'h> {
    pub(crate) fn new(h: Option<&'h crate::matrix::Matrix>, dampening: f32) -> Self {
        Self {
            h,
            dampening,
            cell: std::cell::OnceCell::new(),
        }
    }

    fn hessian(&self) -> Result<&'h crate::matrix::Matrix> {
        self.h
            .ok_or_else(|| PareError::Internal("maskllm: no Hessian gathered".into()))
    }

    fn get(&self) -> Result<&crate::compress::kit::obs::InverseFactor> {
        if let Some(f) = self.cell.get() {
            return Ok(f);
        }
        let f = inverse_factor(self.hessian()?, self.dampening)?;
        Ok(self.cell.get_or_init(|| f))
    }

    /// The factorisation's warnings, when it ran.
    fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.cell.get().into_iter().flat_map(|f| f.warnings.iter().cloned())
    }
}

/// A seed per linear, from the step's seed and the linear's name.
pub(crate) fn linear_seed(seed: u64, id: &crate::id::LinearId) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(id.to_string().as_bytes());
    h.write_u64(seed);
    h.finish()
}

impl Compressor for Params {
    fn kind(&self) -> MethodKind {
        MethodKind::Prune {
            pattern: self.pattern,
        }
    }

    fn stats(&self) -> StatSet {
        match self.end_to_end.is_none() || self.reconstruct {
            true => StatSet::of(&[StatKind::Hessian]),
            false => StatSet::EMPTY,
        }
    }

    fn profilers(
        &self,
        step: usize,
        targets: &[crate::id::LinearId],
    ) -> Vec<Box<dyn crate::allocate::Profiler>> {
        match (self.end_to_end, self.prior) {
            (Some(_), Prior::Sparsegpt | Prior::Wanda) => vec![Box::new(
                end_to_end::PriorProfiler::new(self.clone(), step, targets),
            )],
            _ => Vec::new(),
        }
    }

    fn end_to_end(&self) -> Option<&Params> {
        self.end_to_end.map(|_| self)
    }

    fn fallback(&self) -> Option<crate::compress::Method> {
        Some(crate::compress::magnitude::Params::fallback(
            1.0 - self.pattern.map_or(0.5, |p| p.n as f32 / p.m as f32),
            self.pattern,
            None,
        ))
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let nm = self.nm()?;
        let w = input.original;
        let (rows, d) = (w.rows, w.cols);
        let mut notes = Vec::new();
        // End to end without the OBS update the block loop gathers nothing for this step.
        let h = match self.end_to_end.is_none() || self.reconstruct {
            true => Some(input.hessian()?),
            false => None,
        };
        let factor = Factor::new(h, self.dampening);
        let mask = match (self.end_to_end, h) {
            (Some(_), _) => {
                notes.extend(tail_note(d, nm));
                input.learned_mask()?.to_vec()
            }
            (None, Some(h)) => self.learn_layer(input, h, &factor, &mut notes)?,
            (None, None) => {
                return Err(PareError::Internal("maskllm: no Hessian gathered".into()));
            }
        };
        let mut out = w.clone();
        if self.reconstruct {
            let f = factor.get()?;
            let mut mask = mask;
            for &j in &f.dead {
                for r in 0..rows {
                    mask[r * d + j] = true;
                }
            }
            let block = (128 / nm.m).max(1) * nm.m;
            sparsegpt_sweep(&mut out.data, d, &f.u, block, MaskRule::Given(&mask));
            let bad = out.non_finite();
            if bad > 0 {
                return Err(PareError::Numerical(format!(
                    "MaskLLM's OBS reconstruction produced {bad} non-finite weights"
                )));
            }
        } else {
            for (v, p) in out.data.iter_mut().zip(&mask) {
                if *p {
                    *v = 0.0;
                }
            }
        }
        notes.extend(factor.warnings());
        Ok(LinearOutput::new(CompressedLinear::pruned(out)).with_notes(notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::sparsegpt;
    use crate::compress::testing::{fixture_with, run};
    use crate::matrix::Matrix;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};

    pub(super) fn params(prior: Prior, reconstruct: bool) -> Params {
        Params {
            pattern: Some(NofM { n: 2, m: 4 }),
            schedule: math::Schedule {
                iterations: 200,
                temperature: [4.0, 0.05],
                scale: [100.0, 500.0],
                lr: 0.01,
                weight_reg: 0.0,
                weight_decay: 0.1,
            },
            prior,
            prior_strength: 3.0,
            reconstruct,
            compensate: false,
            dampening: 0.01,
            seed: 0,
            end_to_end: None,
        }
    }

    #[test]
    fn learned_mask_is_exact_and_beats_its_priors() {
        let (rows, d, t) = (16, 64, 256);
        let x = correlated_x(91, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(92, rows * d));
        let f = fixture_with(&w, stats_of(&x, t, d));
        let h = f.stats.hessian(crate::model::TapPoint::AttnIn).unwrap().data.clone();
        let err = |m: &Matrix| {
            let pruned: Vec<bool> = m.data.iter().map(|v| *v == 0.0).collect();
            math::layer_error(&w.data, &h, d, &pruned)
        };
        let sg = run(
            &sparsegpt::Params {
                sparsity: 0.5,
                pattern: Some(NofM { n: 2, m: 4 }),
                owl: None,
                block_size: 16,
                dampening: 0.01,
            },
            &f,
        )
        .linear;
        let learned = run(&params(Prior::Sparsegpt, false), &f).linear;
        assert!(learned.weight.satisfies_n_of_m(2, 4));
        assert_eq!(learned.weight.sparsity(), 0.5);
        // Mask only: every kept weight is its original value.
        for (a, b) in learned.weight.data.iter().zip(&w.data) {
            assert!(*a == 0.0 || a == b);
        }
        let wanda_prior = run(&params(Prior::Wanda, false), &f).linear;
        let none = run(&params(Prior::None, false), &f).linear;
        // The SparseGPT mask with its weights left as read, against the learned ones.
        let e_sg = err(&sg.weight);
        let (e_l, e_w, e_n) = (err(&learned.weight), err(&wanda_prior.weight), err(&none.weight));
        assert!(e_l < e_sg, "learned {e_l} vs SparseGPT's mask {e_sg}");
        assert!(e_w < e_sg * 1.05 && e_n < e_sg * 1.2, "{e_w} {e_n} {e_sg}");
        // With reconstruction: the same mask, OBS-updated weights, a lower error than without.
        let rec = run(&params(Prior::Sparsegpt, true), &f).linear;
        let mask_of = |m: &Matrix| m.data.iter().map(|v| *v == 0.0).collect::<Vec<_>>();
        assert_eq!(mask_of(&rec.weight), mask_of(&learned.weight));
        let rel = crate::compress::sparsegpt::tests::rel_err;
        let (r_rec, r_l) = (rel(&w, &rec.weight, &x, t), rel(&w, &learned.weight, &x, t));
        assert!(r_rec < r_l, "reconstructed {r_rec} vs mask only {r_l}");
        // Exactly SparseGPT's fixed-mask OBS sweep of the weights as read.
        let fac = inverse_factor(&f.stats.hessian(crate::model::TapPoint::AttnIn).unwrap(), 0.01)
            .unwrap();
        let mut direct = w.data.clone();
        let mask = mask_of(&learned.weight);
        sparsegpt_sweep(&mut direct, d, &fac.u, 128, MaskRule::Given(&mask));
        assert_eq!(rec.weight.data, direct);
        // Deterministic.
        assert_eq!(run(&params(Prior::Sparsegpt, false), &f).linear.weight, learned.weight);
    }
}
