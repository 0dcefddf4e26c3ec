//! [`Accumulator`]: the statistics of one tap point, accumulated batch by batch.
//!
//! Column reductions (Σx², per-sequence mean and variance, max |x|) arrive already reduced (the
//! tap reduces them on the device and copies `d` floats) or are computed here from a host copy;
//! the Hessian's `XᵀX` is always built here with faer's parallel GEMM: per batch the upper
//! triangle by row panels (about half the flops), mirrored once in [`Accumulator::finish`].

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};

use super::{MeanVar, PointStats, StatKind, StatSet};
use crate::matrix::Matrix;

/// Row-panel width of the blocked upper-triangular `XᵀX` for inputs of width `d`. Measured on
/// 4,096-token batches (2 cores, AVX-512): the narrow 64-row panels ran at 0.70–0.78× the speed
/// of 192 (width 320 and 864) and 0.76× of 256 (width 4096); wider panels gain little more.
/// The panel only splits the output: each entry is summed over the tokens in the same order,
/// so the Hessian is bit for bit that of 64-row panels (a test checks it).
fn xtx_panel(d: usize) -> usize {
    if d <= 1024 { 192 } else { 256 }
}

/// `h[i, j] += Σ_t x[t, i]·x[t, j]` for `j ≥ i` (the upper triangle; the rest of `h` is not
/// touched), `x` row-major `[tokens, d]`, in row panels of `panel` rows.
fn add_upper_xtx(mut h: faer::MatMut<'_, f32>, x: &[f32], d: usize, tokens: usize, panel: usize) {
    // Row-major [tokens, d] read as column-major [d, tokens] is Xᵀ, contiguous.
    let xt = MatRef::from_column_major_slice(x, d, tokens);
    // Upper triangle by row panels: rectangular GEMMs h[j0..j1, j0..] += X[:, j0..j1]ᵀ
    // X[:, j0..] do about half the flops of the full product at full GEMM speed (faer's
    // triangular matmul and the full product both measured slower).
    for j0 in (0..d).step_by(panel.max(1)) {
        let j1 = (j0 + panel).min(d);
        let dst = h.as_mut().submatrix_mut(j0, j0, j1 - j0, d - j0);
        let lhs = xt.subrows(j0, j1 - j0);
        let rhs = xt.subrows(j0, d - j0).transpose();
        matmul(dst, Accum::Add, lhs, rhs, 1.0f32, Par::rayon(0));
    }
}

/// Accumulates the [`PointStats`] of one tap point over the calibration batches.
#[derive(Debug)]
pub struct Accumulator {
    width: usize,
    kinds: StatSet,
    n_seqs: usize,
    n_tokens: usize,
    /// Σ_t x_tj², per batch in f32 and summed across batches in f64.
    sq: Vec<f64>,
    /// Σ_t x_tj (MeanVar).
    sum: Vec<f64>,
    /// Σ_sequences tokens_s · var_s,j (MeanVar).
    var: Vec<f64>,
    max_abs: Vec<f32>,
    /// Σ_t x_t x_tᵀ (upper triangle only until `finish`), f32 like the references.
    xtx: Option<Mat<f32>>,
}

impl Accumulator {
    /// An empty accumulator for tensors of width `width` gathering `kinds` (routing is not a
    /// per-point statistic and is ignored here).
    pub fn new(width: usize, kinds: StatSet) -> Self {
        let col = |k: StatKind| if kinds.contains(k) { width } else { 0 };
        Accumulator {
            width,
            kinds,
            n_seqs: 0,
            n_tokens: 0,
            sq: vec![0.0; col(StatKind::SqNorms)],
            sum: vec![0.0; col(StatKind::MeanVar)],
            var: vec![0.0; col(StatKind::MeanVar)],
            max_abs: vec![0.0; col(StatKind::MaxAbs)],
            xtx: kinds
                .contains(StatKind::Hessian)
                .then(|| Mat::zeros(width, width)),
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn kinds(&self) -> StatSet {
        self.kinds
    }

    /// Counts one batch of `tokens` rows holding `n_seqs` sequences (call once per batch).
    pub fn count(&mut self, tokens: usize, n_seqs: usize) {
        self.n_tokens += tokens;
        self.n_seqs += n_seqs;
    }

    /// Adds a batch's per-column Σx² (length `width`).
    pub fn add_sq(&mut self, col_sq: &[f32]) {
        for (acc, s) in self.sq.iter_mut().zip(col_sq) {
            *acc += *s as f64;
        }
    }

    /// Adds a batch's per-group column means and biased variances, row-major `[groups, width]`,
    /// each group holding `per_group` tokens.
    pub fn add_mean_var(&mut self, means: &[f32], vars: &[f32], per_group: usize) {
        let d = self.width.max(1);
        let n = per_group as f64;
        for (m, v) in means.chunks_exact(d).zip(vars.chunks_exact(d)) {
            for j in 0..self.sum.len() {
                self.sum[j] += m[j] as f64 * n;
                self.var[j] += v[j] as f64 * n;
            }
        }
    }

    /// Adds a batch's per-column max |x|.
    pub fn add_max_abs(&mut self, col_max: &[f32]) {
        for (acc, m) in self.max_abs.iter_mut().zip(col_max) {
            *acc = acc.max(*m);
        }
    }

    /// Adds `XᵀX` of a row-major `[tokens, width]` host batch (when the Hessian is gathered).
    pub fn add_xtx(&mut self, x: &[f32], tokens: usize) {
        let d = self.width;
        let Some(h) = self.xtx.as_mut() else { return };
        let tokens = if d == 0 { 0 } else { tokens.min(x.len() / d) };
        if tokens == 0 {
            return;
        }
        add_upper_xtx(h.as_mut(), &x[..tokens * d], d, tokens, xtx_panel(d));
    }

    /// Adds one host batch `x` (row-major `[tokens, width]`, `n_seqs` whole sequences of equal
    /// length): every statistic this accumulator gathers, computed here.
    pub fn observe_host(&mut self, x: &[f32], tokens: usize, n_seqs: usize) {
        let groups = if n_seqs > 0 && tokens % n_seqs == 0 {
            n_seqs
        } else {
            1
        };
        self.observe_host_grouped(x, tokens, n_seqs, groups);
    }

    /// [`Accumulator::observe_host`] with the variance taken over `groups` equal runs of rows
    /// (the sequences, or 1 for an expert's scattered tokens).
    pub fn observe_host_grouped(&mut self, x: &[f32], tokens: usize, n_seqs: usize, groups: usize) {
        let d = self.width;
        let tokens = if d == 0 { 0 } else { tokens.min(x.len() / d) };
        self.count(tokens, n_seqs);
        if tokens == 0 {
            return;
        }
        let x = &x[..tokens * d];
        if !self.sq.is_empty() {
            let mut batch = vec![0f32; d];
            for row in x.chunks_exact(d) {
                for (s, v) in batch.iter_mut().zip(row) {
                    *s += v * v;
                }
            }
            self.add_sq(&batch);
        }
        if !self.sum.is_empty() {
            let groups = if groups > 0 && tokens % groups == 0 {
                groups
            } else {
                1
            };
            let per = tokens / groups;
            let (mut means, mut vars) = (vec![0f32; groups * d], vec![0f32; groups * d]);
            for g in 0..groups {
                let rows = &x[g * per * d..(g + 1) * per * d];
                for j in 0..d {
                    let m = rows.chunks_exact(d).map(|r| r[j] as f64).sum::<f64>() / per as f64;
                    let v = rows
                        .chunks_exact(d)
                        .map(|r| (r[j] as f64 - m).powi(2))
                        .sum::<f64>()
                        / per as f64;
                    means[g * d + j] = m as f32;
                    vars[g * d + j] = v as f32;
                }
            }
            self.add_mean_var(&means, &vars, per);
        }
        if !self.max_abs.is_empty() {
            let mut m = vec![0f32; d];
            for row in x.chunks_exact(d) {
                for (a, v) in m.iter_mut().zip(row) {
                    *a = a.max(v.abs());
                }
            }
            self.add_max_abs(&m);
        }
        self.add_xtx(x, tokens);
    }

    /// Normalises (`s = Σx²/n`, `H = 2Σxxᵀ/n`, `μ = Σx/n` with `n` the sequences observed,
    /// `σ² = Σ tokens·var / tokens`) and returns the statistics. With nothing observed they
    /// are all zero.
    pub fn finish(self) -> PointStats {
        let d = self.width;
        let n = self.n_seqs.max(1) as f64;
        let kinds = self.kinds;
        let sq_norms = kinds
            .contains(StatKind::SqNorms)
            .then(|| self.sq.iter().map(|v| (v / n) as f32).collect());
        let t = self.n_tokens.max(1) as f64;
        let mean_var = kinds.contains(StatKind::MeanVar).then(|| MeanVar {
            mean: self.sum.iter().map(|v| (v / n) as f32).collect(),
            var: self.var.iter().map(|v| (v / t) as f32).collect(),
        });
        let max_abs = kinds.contains(StatKind::MaxAbs).then_some(self.max_abs);
        let hessian = self.xtx.map(|h| {
            let f = (2.0 / n) as f32;
            let mut out = vec![0.0f32; d * d];
            for j in 0..d {
                for i in j..d {
                    let v = h[(j, i)] * f;
                    out[i * d + j] = v;
                    out[j * d + i] = v;
                }
            }
            Matrix::from_vec(d, d, out)
        });
        PointStats {
            width: d,
            n_seqs: self.n_seqs,
            n_tokens: self.n_tokens,
            sq_norms,
            hessian,
            mean_var,
            max_abs,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic pseudo-random numbers in [-1, 1) (xorshift), shared by the method tests.
    pub(crate) fn rand_vec(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `tokens × d` activations with strongly correlated columns and uneven scales.
    pub(crate) fn correlated_x(seed: u64, tokens: usize, d: usize) -> Vec<f32> {
        let k = (d / 2).max(1);
        let z = rand_vec(seed, tokens * k);
        let mix = rand_vec(seed + 1, k * d);
        let noise = rand_vec(seed + 2, tokens * d);
        let mut x = vec![0.0f32; tokens * d];
        for t in 0..tokens {
            for j in 0..d {
                let mut v = 0.1 * noise[t * d + j];
                for l in 0..k {
                    v += z[t * k + l] * mix[l * d + j];
                }
                x[t * d + j] = v * (1.0 + (j % 5) as f32);
            }
        }
        x
    }

    /// Σx², Hessian and mean/variance of `x` (one sequence) through the accumulator.
    pub(crate) fn stats_of(x: &[f32], tokens: usize, d: usize) -> PointStats {
        let mut acc = Accumulator::new(
            d,
            StatSet::of(&[StatKind::SqNorms, StatKind::Hessian, StatKind::MeanVar]),
        );
        acc.observe_host(x, tokens, 1);
        acc.finish()
    }

    #[test]
    fn accumulates_over_batches_and_normalises_by_sequences() {
        // Batch 1: two tokens, one sequence; batch 2: one token, one sequence. d = 2.
        let mut acc = Accumulator::new(2, StatSet::of(&[StatKind::SqNorms, StatKind::Hessian]));
        acc.observe_host(&[1.0, 2.0, 3.0, -1.0], 2, 1);
        acc.observe_host(&[0.5, 4.0], 1, 1);
        let s = acc.finish();
        assert_eq!((s.n_seqs, s.n_tokens), (2, 3));
        // Σx² = [1+9+0.25, 4+1+16] / 2
        assert_eq!(s.sq_norms.unwrap(), vec![10.25 / 2.0, 21.0 / 2.0]);
        let h = s.hessian.unwrap();
        // Σxxᵀ = [[10.25, 2-3+2], [1, 21]], times 2/2.
        assert_eq!(h.data, vec![10.25, 1.0, 1.0, 21.0]);
        assert!(s.mean_var.is_none() && s.max_abs.is_none());
    }

    /// The panel width changes the speed, never a bit of the Hessian (pare's outputs stay the
    /// same as with the 64-row panels they were first made with).
    #[test]
    fn xtx_panels_give_the_same_bits() {
        for d in [320usize, 864, 1100] {
            let t = 1024;
            let x: Vec<f32> = (0..t * d)
                .map(|i| (((i * 7919) % 2003) as f32 - 1001.0) * 1.7e-3)
                .collect();
            let upper = |panel: usize| {
                let mut h = Mat::<f32>::zeros(d, d);
                add_upper_xtx(h.as_mut(), &x, d, t, panel);
                add_upper_xtx(h.as_mut(), &x[..t / 2 * d], d, t / 2, panel);
                (0..d)
                    .flat_map(|i| (i..d).map(move |j| (i, j)))
                    .map(|(i, j)| h[(i, j)].to_bits())
                    .collect::<Vec<u32>>()
            };
            assert_eq!(upper(xtx_panel(d)), upper(64), "width {d}");
        }
    }

    #[test]
    fn only_the_asked_statistics_are_gathered() {
        let mut acc = Accumulator::new(3, StatSet::of(&[StatKind::SqNorms]));
        acc.observe_host(&[1.0, 2.0, 3.0], 1, 1);
        let s = acc.finish();
        assert!(s.hessian.is_none());
        assert_eq!(s.sq_norms.unwrap(), vec![1.0, 4.0, 9.0]);
    }

    #[test]
    fn mean_is_per_sequence_sum_and_variance_is_token_weighted_per_sequence() {
        // Two sequences of 2 tokens in one batch, d = 1: [1, 3] and [10, 10].
        let mut acc = Accumulator::new(1, StatSet::of(&[StatKind::MeanVar, StatKind::MaxAbs]));
        acc.observe_host(&[1.0, 3.0, 10.0, -10.0], 4, 2);
        let s = acc.finish();
        let mv = s.mean_var.unwrap();
        // μ = Σx / n_seqs = (1 + 3 + 10 − 10) / 2.
        assert_eq!(mv.mean, vec![2.0]);
        // Per-sequence biased variances 1 and 100, weighted by 2 tokens each: (2·1 + 2·100) / 4.
        assert_eq!(mv.var, vec![50.5]);
        assert_eq!(s.max_abs.unwrap(), vec![10.0]);
    }

    #[test]
    fn large_batch_matches_naive_product() {
        let (t, d) = (300, 37);
        let x = rand_vec(3, t * d);
        let h = stats_of(&x, t, d).hessian.unwrap();
        for i in 0..d {
            for j in 0..d {
                let naive: f64 = (0..t)
                    .map(|k| x[k * d + i] as f64 * x[k * d + j] as f64)
                    .sum();
                assert!((h.get(i, j) as f64 - 2.0 * naive).abs() < 1e-3, "({i},{j})");
            }
        }
    }
}
