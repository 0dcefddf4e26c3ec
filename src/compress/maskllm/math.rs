//! Pure math of layer-local MaskLLM (ALGORITHMS.md §6): the candidate masks of a group, the
//! prior initialisation, the Gumbel-softmax mask, the layer loss from the Hessian and its
//! gradient, and Adam on the logits.
//!
//! Shapes: the weight `W` is `[rows, d]` row-major; its whole groups of `M` consecutive input
//! columns are numbered row-major (`g = i · (d / M) + c`, a shorter tail group is not learned);
//! the logits are `[groups, K]` with `K = C(M, N)` candidates.
//!
//! The loss of a soft mask `M̃` is the layer reconstruction error relative to the dense output,
//! `e = tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)` with `ΔW = W ⊙ (1 − M̃)` and `H = (2/n) Σ x xᵀ`, which is
//! `‖(W − W⊙M̃) X‖² / ‖W X‖²`, so no activation is stored. Minus the weight regulariser
//! `λ_t · ‖W ⊙ M̃‖² / ‖W‖²`. Both are multiplied by the number of groups, so a logit's gradient
//! does not shrink with the layer's size (Adam's ε then stays negligible, as in the reference).

use rand::{RngExt, SeedableRng, rngs::SmallRng};
use rand_distr::{Exp1, StandardNormal};
use rayon::prelude::*;

use crate::compress::NofM;
use crate::compress::kit::obs::times_hessian;

/// The candidate masks of a group of `M` for N:M, as bitmasks (bit `j` set = column `j` kept),
/// in the reference's order: kept positions in lexicographic order (`2:4`: `1100, 1010, 1001,
/// 0110, 0101, 0011` reading column 0 first).
pub fn candidates(nm: NofM) -> Vec<u64> {
    fn rec(start: usize, left: usize, m: usize, acc: u64, out: &mut Vec<u64>) {
        if left == 0 {
            out.push(acc);
            return;
        }
        for j in start..=m - left {
            rec(j + 1, left - 1, m, acc | 1 << j, out);
        }
    }
    let mut out = Vec::new();
    if nm.n <= nm.m && nm.m <= 64 {
        rec(0, nm.n, nm.m, 0, &mut out);
    }
    out
}

/// The schedules, linear in `t / T` as the reference's `DifferentiableMask`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Schedule {
    pub iterations: usize,
    /// Gumbel-softmax temperature τ, first and last.
    pub temperature: [f32; 2],
    /// Logit scale κ, first and last.
    pub scale: [f32; 2],
    /// Peak learning rate; cosine decay to a tenth of it.
    pub lr: f32,
    /// Weight-regulariser strength λ₀, removed linearly.
    pub weight_reg: f32,
    /// Decoupled weight decay of the logits (Megatron's AdamW).
    pub weight_decay: f32,
}

impl Schedule {
    fn frac(&self, t: usize) -> f32 {
        t as f32 / self.iterations.max(1) as f32
    }
    pub fn temperature_at(&self, t: usize) -> f32 {
        let [a, b] = self.temperature;
        a + (b - a) * self.frac(t)
    }
    pub fn scale_at(&self, t: usize) -> f32 {
        let [a, b] = self.scale;
        a + (b - a) * self.frac(t)
    }
    pub fn lr_at(&self, t: usize) -> f32 {
        let min = self.lr / 10.0;
        min + 0.5 * (self.lr - min) * (1.0 + (std::f32::consts::PI * self.frac(t)).cos())
    }
    pub fn weight_reg_at(&self, t: usize) -> f32 {
        self.weight_reg * (1.0 - self.frac(t))
    }
}

/// `x`, or 0 below 1e-18 in magnitude: its square would be subnormal (below f32's 1.2e-38), which
/// runs on the CPU's slow path, and against Adam's ε = 1e-5 such a moment moves no logit.
#[inline]
fn flush(x: f32) -> f32 {
    if x.abs() < 1e-18 { 0.0 } else { x }
}

/// Adam's constants as the reference's training scripts (β = (0.9, 0.95), ε = 1e-5).
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.95;
const EPS: f32 = 1e-5;

/// The learnable state of one linear's mask.
pub struct MaskLogits {
    pub nm: NofM,
    pub cands: Vec<u64>,
    /// Whole groups per row.
    pub per_row: usize,
    pub rows: usize,
    /// `[groups, K]`.
    pub logits: Vec<f32>,
    m1: Vec<f32>,
    m2: Vec<f32>,
    /// With compensation: the learned correction `δ` of the kept weights, `[rows, d]`, and its
    /// Adam moments.
    delta: Option<Compensation>,
}

struct Compensation {
    delta: Vec<f32>,
    m1: Vec<f32>,
    m2: Vec<f32>,
    /// Learning rate of `δ` per unit of the logits' one: rms(W).
    lr_scale: f32,
}

/// SplitMix64, to derive independent seeds per (iteration, row).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl MaskLogits {
    /// Logits `N(0, 0.01²)` (seeded), plus `(o_k − 1) · std · strength` where `o_k` is how many
    /// of candidate k's kept columns the prior keeps (`prior[i·d + j]` = true when pruned).
    pub fn init(
        rows: usize,
        d: usize,
        nm: NofM,
        prior: Option<&[bool]>,
        strength: f32,
        seed: u64,
    ) -> Self {
        let cands = candidates(nm);
        let k = cands.len();
        let per_row = d / nm.m;
        let groups = rows * per_row;
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut logits: Vec<f32> = (0..groups * k)
            .map(|_| 0.01 * rng.sample::<f32, _>(StandardNormal))
            .collect();
        if let Some(prior) = prior {
            let n = logits.len().max(1) as f64;
            let mean = logits.iter().map(|v| *v as f64).sum::<f64>() / n;
            let var = logits
                .iter()
                .map(|v| (*v as f64 - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0).max(1.0);
            let std = var.sqrt() as f32;
            for g in 0..groups {
                let (i, c) = (g / per_row, g % per_row);
                let base = i * d + c * nm.m;
                let kept: u64 = (0..nm.m)
                    .filter(|&j| !prior[base + j])
                    .fold(0, |a, j| a | 1 << j);
                for (kk, cand) in cands.iter().enumerate() {
                    let o = (cand & kept).count_ones() as f32;
                    logits[g * k + kk] += (o - 1.0) * std * strength;
                }
            }
        }
        Self {
            nm,
            cands,
            per_row,
            rows,
            m1: vec![0.0; logits.len()],
            m2: vec![0.0; logits.len()],
            logits,
            delta: None,
        }
    }

    /// Also learns a correction `δ` of the kept weights, so that the loss becomes
    /// `‖(W − (W + δ) ⊙ M̃) X‖²`: the mask is chosen knowing the kept weights will be
    /// compensated (the OBS update of `reconstruct` then replaces `δ`). `w` is the weight.
    pub fn with_compensation(mut self, w: &[f32]) -> Self {
        let n = w.len().max(1) as f64;
        let rms = (w.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n).sqrt() as f32;
        self.delta = Some(Compensation {
            delta: vec![0.0; w.len()],
            m1: vec![0.0; w.len()],
            m2: vec![0.0; w.len()],
            lr_scale: rms,
        });
        self
    }

    /// The soft mask `M̃` `[rows, d]` from probabilities `p` `[groups, K]`; tail columns are 1.
    fn soft_mask(&self, p: &[f32], d: usize, out: &mut [f32]) {
        let (k, m, per_row) = (self.cands.len(), self.nm.m, self.per_row);
        out.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            row.iter_mut().for_each(|v| *v = 1.0);
            for c in 0..per_row {
                let g = i * per_row + c;
                let pg = &p[g * k..(g + 1) * k];
                let dst = &mut row[c * m..(c + 1) * m];
                dst.iter_mut().for_each(|v| *v = 0.0);
                for (pk, cand) in pg.iter().zip(&self.cands) {
                    for (j, v) in dst.iter_mut().enumerate() {
                        if cand >> j & 1 == 1 {
                            *v += pk;
                        }
                    }
                }
            }
        });
    }

    /// The final mask: per group the candidate with the largest logit; `true` = pruned. Tail
    /// columns come from `tail` (the prior), or stay kept.
    pub fn hard_mask(&self, d: usize, tail: Option<&[bool]>) -> Vec<bool> {
        let (k, m) = (self.cands.len(), self.nm.m);
        let mut mask = vec![false; self.rows * d];
        for i in 0..self.rows {
            for c in 0..self.per_row {
                let g = i * self.per_row + c;
                let lg = &self.logits[g * k..(g + 1) * k];
                let best = (0..k)
                    .max_by(|&a, &b| lg[a].total_cmp(&lg[b]).then(b.cmp(&a)))
                    .unwrap_or(0);
                for j in 0..m {
                    mask[i * d + c * m + j] = self.cands[best] >> j & 1 == 0;
                }
            }
            if let Some(t) = tail {
                for j in self.per_row * m..d {
                    mask[i * d + j] = t[i * d + j];
                }
            }
        }
        mask
    }
}

/// `tr(A H Aᵀ)` in f64 for row-major `a` `[rows, d]`, given `ah = A·H`.
fn trace_form(a: &[f32], ah: &[f32]) -> f64 {
    a.par_iter().zip(ah).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// The relative layer error `tr(ΔW H ΔWᵀ) / tr(W H Wᵀ)` of a mask (`true` = pruned).
pub fn layer_error(w: &[f32], h: &[f32], d: usize, pruned: &[bool]) -> f64 {
    let mut tmp = vec![0f32; w.len()];
    let dw: Vec<f32> = w
        .iter()
        .zip(pruned)
        .map(|(v, p)| if *p { *v } else { 0.0 })
        .collect();
    times_hessian(&dw, h, d, &mut tmp);
    let num = trace_form(&dw, &tmp);
    times_hessian(w, h, d, &mut tmp);
    let den = trace_form(w, &tmp);
    if den > 0.0 { num / den } else { 0.0 }
}

/// Per-iteration figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepLoss {
    /// Relative error of the soft mask.
    pub error: f64,
    /// `‖W ⊙ M̃‖² / ‖W‖²`.
    pub kept_energy: f64,
}

/// Work buffers for [`step`], `[rows, d]` and `[groups, K]`.
pub struct Buffers {
    p: Vec<f32>,
    mask: Vec<f32>,
    dw: Vec<f32>,
    g: Vec<f32>,
}

impl Buffers {
    /// What [`sample`] and [`update_logits`] need (no layer-loss work buffer): the end-to-end
    /// trainer's per-linear state.
    pub fn for_sampling(ml: &MaskLogits, d: usize) -> Self {
        let n = ml.rows * d;
        Self {
            p: vec![0.0; ml.logits.len()],
            mask: vec![0.0; n],
            dw: Vec::new(),
            g: vec![0.0; n],
        }
    }

    pub fn new(ml: &MaskLogits, d: usize) -> Self {
        let n = ml.rows * d;
        Self {
            p: vec![0.0; ml.logits.len()],
            mask: vec![0.0; n],
            dw: vec![0.0; n],
            g: vec![0.0; n],
        }
    }
}

/// Constants of one linear: `tr(W H Wᵀ)` and `‖W‖²`.
pub struct Norms {
    pub dense: f64,
    pub sq: f64,
}

impl Norms {
    pub fn of(w: &[f32], h: &[f32], d: usize) -> Self {
        let mut tmp = vec![0f32; w.len()];
        times_hessian(w, h, d, &mut tmp);
        Self {
            dense: trace_form(w, &tmp).max(f64::MIN_POSITIVE),
            sq: w
                .iter()
                .map(|v| (*v as f64).powi(2))
                .sum::<f64>()
                .max(f64::MIN_POSITIVE),
        }
    }
}

/// Samples the soft mask of iteration `t` into `buf`: Gumbel noise (seeded by `seed`, `t` and
/// the row, so results do not depend on the thread count), the probabilities
/// `p = softmax((κ π + g) / τ)` `[groups, K]` and the soft mask `M̃` `[rows, d]`.
pub fn sample(ml: &MaskLogits, d: usize, sched: &Schedule, t: usize, seed: u64, buf: &mut Buffers) {
    let k = ml.cands.len();
    let (tau, kappa) = (sched.temperature_at(t), sched.scale_at(t));
    let per_row = ml.per_row;
    // p = softmax((κ π + g) / τ), g ~ Gumbel(0, 1).
    buf.p
        .par_chunks_mut(per_row * k)
        .zip(ml.logits.par_chunks(per_row * k))
        .enumerate()
        .for_each(|(i, (p, lg))| {
            let mut rng = SmallRng::seed_from_u64(mix(seed ^ mix(t as u64) ^ (i as u64) << 1));
            for (pg, lgg) in p.chunks_mut(k).zip(lg.chunks(k)) {
                let mut hi = f32::NEG_INFINITY;
                for (q, l) in pg.iter_mut().zip(lgg) {
                    // Gumbel(0, 1) = −ln E, E ~ Exp(1) (ziggurat: one logarithm per sample).
                    let e: f32 = rng.sample::<f32, _>(Exp1).max(1e-30);
                    *q = (kappa * l - e.ln()) / tau;
                    hi = hi.max(*q);
                }
                let mut s = 0.0;
                for q in pg.iter_mut() {
                    // Flushed below e^-80 (f32's subnormals start near e^-87): such a
                    // probability changes no sum, and subnormal soft-mask weights would run
                    // the model's GEMMs on the CPU's slow path.
                    let x = *q - hi;
                    *q = if x > -80.0 { x.exp() } else { 0.0 };
                    s += *q;
                }
                pg.iter_mut().for_each(|q| *q /= s);
            }
        });
    ml.soft_mask(&buf.p, d, &mut buf.mask);
}

/// The soft mask [`sample`] left in `buf`, `[rows, d]`.
pub fn soft_mask_of(buf: &Buffers) -> &[f32] {
    &buf.mask
}

/// The mask's gradient slot in `buf` (`[rows, d]`): write `∂L/∂M̃` here before
/// [`update_logits`].
pub fn mask_grad_mut(buf: &mut Buffers) -> &mut [f32] {
    &mut buf.g
}

/// One Adam step at iteration `t` (0-based) of `sched`: samples Gumbel noise (seeded by
/// `seed`, `t` and the row, so results do not depend on the thread count), forms the soft
/// mask, the loss and its gradient with respect to the logits, and updates them.
#[allow(clippy::too_many_arguments)]
pub fn step(
    ml: &mut MaskLogits,
    w: &[f32],
    h: &[f32],
    d: usize,
    norms: &Norms,
    sched: &Schedule,
    t: usize,
    seed: u64,
    buf: &mut Buffers,
) -> StepLoss {
    sample(ml, d, sched, t, seed, buf);
    // E = W − (W + δ) ⊙ M̃ (δ = 0 without compensation).
    match &ml.delta {
        None => buf
            .dw
            .par_iter_mut()
            .zip(w)
            .zip(&buf.mask)
            .for_each(|((o, w), m)| *o = w * (1.0 - m)),
        Some(c) => buf
            .dw
            .par_iter_mut()
            .zip(w)
            .zip(&buf.mask)
            .zip(&c.delta)
            .for_each(|(((o, w), m), dl)| *o = w - (w + dl) * m),
    }
    times_hessian(&buf.dw, h, d, &mut buf.g);
    let scale = (ml.rows * ml.per_row).max(1) as f64;
    let error = trace_form(&buf.dw, &buf.g) / norms.dense;
    let kept_energy = w
        .par_iter()
        .zip(&buf.mask)
        .map(|(w, m)| ((*w * *m) as f64).powi(2))
        .sum::<f64>()
        / norms.sq;
    // dL/dM̃ = s · (−2 (W + δ) (E H) / dense − λ_t 2 W² M̃ / ‖W‖²), into buf.g; with
    // compensation first dL/dδ = −2 s M̃ (E H) / dense and an Adam step on δ (no weight decay).
    let a = (scale * 2.0 / norms.dense) as f32;
    let b = (scale * 2.0 * sched.weight_reg_at(t) as f64 / norms.sq) as f32;
    let lr = sched.lr_at(t);
    let (c1, c2) = (
        1.0 - BETA1.powi(t as i32 + 1),
        1.0 - BETA2.powi(t as i32 + 1),
    );
    match &mut ml.delta {
        None => buf
            .g
            .par_iter_mut()
            .zip(w)
            .zip(&buf.mask)
            .for_each(|((g, w), m)| *g = -a * w * *g - b * w * w * m),
        Some(c) => {
            let lr_d = lr * c.lr_scale;
            buf.g
                .par_iter_mut()
                .zip(w)
                .zip(&buf.mask)
                .zip(c.delta.par_iter_mut().zip(c.m1.par_iter_mut().zip(c.m2.par_iter_mut())))
                .for_each(|(((g, w), m), (dl, (m1, m2)))| {
                    let eh = *g;
                    let gd = -a * m * eh;
                    *m1 = BETA1 * *m1 + (1.0 - BETA1) * gd;
                    *m2 = BETA2 * *m2 + (1.0 - BETA2) * gd * gd;
                    let dnew = *dl - lr_d * (*m1 / c1) / ((*m2 / c2).sqrt() + EPS);
                    *g = -a * (w + *dl) * eh - b * w * w * m;
                    *dl = dnew;
                });
        }
    }
    update_logits(ml, d, sched, t, buf);
    StepLoss { error, kept_energy }
}

/// Back-propagates `∂L/∂M̃` (in `buf`'s gradient slot, [`mask_grad_mut`]) through the convex
/// combination of candidates and the Gumbel softmax of [`sample`] (same `t`), then takes one
/// AdamW step on the logits.
pub fn update_logits(ml: &mut MaskLogits, d: usize, sched: &Schedule, t: usize, buf: &Buffers) {
    let k = ml.cands.len();
    let per_row = ml.per_row;
    let (tau, kappa) = (sched.temperature_at(t), sched.scale_at(t));
    let lr = sched.lr_at(t);
    let wd = sched.weight_decay;
    let (c1, c2) = (
        1.0 - BETA1.powi(t as i32 + 1),
        1.0 - BETA2.powi(t as i32 + 1),
    );
    // Back through the convex combination and the softmax, then Adam.
    let m = ml.nm.m;
    let n = ml.nm.n;
    let kt = kappa / tau;
    // Kept columns of each candidate, `[K, N]`.
    let kept: Vec<usize> = ml
        .cands
        .iter()
        .flat_map(|c| (0..m).filter(move |j| c >> j & 1 == 1))
        .collect();
    let gm = &buf.g;
    let p = &buf.p;
    ml.logits
        .par_chunks_mut(per_row * k)
        .zip(ml.m1.par_chunks_mut(per_row * k))
        .zip(ml.m2.par_chunks_mut(per_row * k))
        .enumerate()
        .for_each(|(i, ((lg, m1), m2))| {
            let mut dp = vec![0f32; k];
            for c in 0..per_row {
                let gcols = &gm[i * d + c * m..i * d + (c + 1) * m];
                let g0 = (i * per_row + c) * k;
                let pg = &p[g0..g0 + k];
                for (kk, d) in dp.iter_mut().enumerate() {
                    *d = kept[kk * n..(kk + 1) * n].iter().map(|&j| gcols[j]).sum();
                }
                let mean: f32 = pg.iter().zip(&dp).map(|(a, b)| a * b).sum();
                let off = c * k;
                for kk in 0..k {
                    let grad = flush(kt * pg[kk] * (dp[kk] - mean));
                    let j = off + kk;
                    m1[j] = flush(BETA1 * m1[j] + (1.0 - BETA1) * grad);
                    m2[j] = flush(BETA2 * m2[j] + (1.0 - BETA2) * grad * grad);
                    let upd = (m1[j] / c1) / ((m2[j] / c2).sqrt() + EPS);
                    lg[j] -= lr * (upd + wd * lg[j]);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};

    #[test]
    fn candidate_enumeration() {
        let c = candidates(NofM { n: 2, m: 4 });
        assert_eq!(c, vec![0b0011, 0b0101, 0b1001, 0b0110, 0b1010, 0b1100]);
        let c = candidates(NofM { n: 4, m: 8 });
        assert_eq!(c.len(), 70);
        assert!(c.iter().all(|m| m.count_ones() == 4 && *m < 256));
        let mut s = c.clone();
        s.sort();
        s.dedup();
        assert_eq!(s.len(), 70);
        assert_eq!(candidates(NofM { n: 1, m: 4 }), vec![1, 2, 4, 8]);
    }

    #[test]
    fn layer_loss_equals_the_direct_reconstruction_error() {
        // tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) = ‖(W − W⊙M) Xᵀ‖² / ‖W Xᵀ‖² for H = (2/n) Σ x xᵀ.
        let (rows, d, t) = (5, 8, 40);
        let x = correlated_x(71, t, d);
        let h = stats_of(&x, t, d).hessian.unwrap();
        let w = rand_vec(72, rows * d);
        let pruned: Vec<bool> = (0..rows * d).map(|i| (i * 7 + i / 3) % 4 < 2).collect();
        let (mut num, mut den) = (0f64, 0f64);
        for r in 0..rows {
            for k in 0..t {
                let xs = &x[k * d..(k + 1) * d];
                let (mut a, mut b) = (0f64, 0f64);
                for j in 0..d {
                    let v = w[r * d + j] as f64 * xs[j] as f64;
                    a += v;
                    if !pruned[r * d + j] {
                        b += v;
                    }
                }
                num += (a - b).powi(2);
                den += a * a;
            }
        }
        let got = layer_error(&w, &h.data, d, &pruned);
        assert!((got - num / den).abs() < 1e-5 * (num / den), "{got} vs {}", num / den);
    }

    #[test]
    fn prior_candidate_gets_the_largest_logit() {
        // One row, one 2:4 group, prior prunes columns 1 and 3 → keeps 0, 2 = candidate 0b0101.
        let prior = [false, true, false, true];
        let ml = MaskLogits::init(1, 4, NofM { n: 2, m: 4 }, Some(&prior), 3.0, 1);
        let best = (0..6)
            .max_by(|&a, &b| ml.logits[a].total_cmp(&ml.logits[b]))
            .unwrap();
        assert_eq!(ml.cands[best], 0b0101);
        assert_eq!(ml.hard_mask(4, None), prior.to_vec());
    }

    #[test]
    fn gradient_matches_finite_differences() {
        // With zero temperature noise removed (same seed twice), the analytic gradient of one
        // logit matches a central difference of the loss.
        let (rows, d, t) = (3, 8, 30);
        let x = correlated_x(81, t, d);
        let h = stats_of(&x, t, d).hessian.unwrap();
        let w = rand_vec(82, rows * d);
        let nm = NofM { n: 2, m: 4 };
        let norms = Norms::of(&w, &h.data, d);
        let sched = Schedule {
            iterations: 10,
            temperature: [2.0, 2.0],
            scale: [1.0, 1.0],
            lr: 0.0,
            weight_reg: 0.3,
            weight_decay: 0.0,
        };
        let loss = |ml: &mut MaskLogits| {
            let mut buf = Buffers::new(ml, d);
            let s = step(ml, &w, &h.data, d, &norms, &sched, 0, 9, &mut buf);
            let groups = (rows * d / 4) as f64;
            groups * (s.error - 0.3 * s.kept_energy)
        };
        let base = MaskLogits::init(rows, d, nm, None, 0.0, 5);
        // Analytic: one step with lr = 0 leaves logits; read m1 / (1 − β1) = grad.
        let mut ml = MaskLogits::init(rows, d, nm, None, 0.0, 5);
        let mut buf = Buffers::new(&ml, d);
        step(&mut ml, &w, &h.data, d, &norms, &sched, 0, 9, &mut buf);
        for j in [0usize, 4, 7, 13] {
            let grad = ml.m1[j] / (1.0 - BETA1);
            let e = 1e-2f32;
            let mut plus = MaskLogits::init(rows, d, nm, None, 0.0, 5);
            plus.logits = base.logits.clone();
            plus.logits[j] += e;
            let mut minus = MaskLogits::init(rows, d, nm, None, 0.0, 5);
            minus.logits = base.logits.clone();
            minus.logits[j] -= e;
            let fd = (loss(&mut plus) - loss(&mut minus)) / (2.0 * e as f64);
            assert!(
                (fd - grad as f64).abs() < 2e-2 * fd.abs().max(1e-2),
                "logit {j}: fd {fd} vs {grad}"
            );
        }
    }
}
