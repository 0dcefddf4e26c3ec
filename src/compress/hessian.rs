//! Input statistics of a linear layer (Σx² per column, the Hessian `2XᵀX/n`) and the inverse
//! Hessian factor shared by SparseGPT and GPTQ (ALGORITHMS.md §3 "Preparation", §7).
//!
//! [`StatsAccumulator`] runs on every calibration token, so it does the work with faer's
//! parallel GEMM: per batch the upper triangle of `XᵀX` by row panels (about half the flops), mirrored
//! once in [`StatsAccumulator::finish`].
//!
//! [`inverse_factor`] turns a Hessian into the upper Cholesky factor `U` of `H⁻¹` with the
//! reference's dead-column and dampening rules, factorising in f64. Instead of the reference's
//! three steps (`chol(H)`, `cholesky_inverse`, `chol(H⁻¹, upper)`) it uses the identity
//! `U = J·L'⁻¹·J`, where `J` reverses the index order and `L'` is the lower Cholesky factor of
//! `J H J`: one factorisation and one triangular inverse instead of two factorisations and a full
//! inverse (a test checks both routes agree).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par, Side};

use crate::compress::{InputStats, Needs};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Row-panel width of the blocked upper-triangular `XᵀX`.
const XTX_PANEL: usize = 64;

/// Accumulates [`InputStats`] for one linear input over the calibration batches.
#[derive(Debug)]
pub struct StatsAccumulator {
    d_in: usize,
    needs: Needs,
    n_seqs: usize,
    n_tokens: usize,
    /// Σ_t x_tj², accumulated per batch in f32 and summed across batches in f64.
    sq: Vec<f64>,
    /// Per-batch scratch for Σx² in f32.
    sq_batch: Vec<f32>,
    /// Σ_t x_t x_tᵀ (upper triangle only until `finish`), f32 like the references.
    xtx: Option<Mat<f32>>,
}

impl StatsAccumulator {
    /// An empty accumulator for inputs of width `d_in`. Σx² is always gathered (it is cheap and
    /// the report's diagonal reconstruction error uses it); the Hessian only if `needs.hessian`.
    pub fn new(d_in: usize, needs: Needs) -> Self {
        StatsAccumulator {
            d_in,
            needs,
            n_seqs: 0,
            n_tokens: 0,
            sq: vec![0.0; d_in],
            sq_batch: vec![0.0; d_in],
            xtx: needs.hessian.then(|| Mat::zeros(d_in, d_in)),
        }
    }

    /// The width this accumulator expects.
    pub fn d_in(&self) -> usize {
        self.d_in
    }

    /// What this accumulator gathers.
    pub fn needs(&self) -> Needs {
        self.needs
    }

    /// Adds one batch: `x` is row-major `[tokens, d_in]` and holds `n_seqs` whole sequences.
    /// A shorter `x` than `tokens · d_in` is a caller bug (debug assertion); release builds then
    /// use only the complete rows present.
    pub fn observe(&mut self, x: &[f32], tokens: usize, n_seqs: usize) {
        let d = self.d_in;
        debug_assert_eq!(
            x.len(),
            tokens * d,
            "StatsAccumulator::observe: x is not [tokens, d_in]"
        );
        let tokens = if d == 0 {
            tokens
        } else {
            tokens.min(x.len() / d)
        };
        self.n_seqs += n_seqs;
        self.n_tokens += tokens;
        if d == 0 || tokens == 0 {
            return;
        }
        let x = &x[..tokens * d];
        self.sq_batch.iter_mut().for_each(|s| *s = 0.0);
        for row in x.chunks_exact(d) {
            for (s, v) in self.sq_batch.iter_mut().zip(row) {
                *s += v * v;
            }
        }
        for (acc, s) in self.sq.iter_mut().zip(&self.sq_batch) {
            *acc += *s as f64;
        }
        if let Some(h) = self.xtx.as_mut() {
            // Row-major [tokens, d] read as column-major [d, tokens] is Xᵀ, contiguous.
            let xt = MatRef::from_column_major_slice(x, d, tokens);
            // Upper triangle by row panels: rectangular GEMMs h[j0..j1, j0..] += X[:, j0..j1]ᵀ
            // X[:, j0..] do about half the flops of the full product at full GEMM speed (faer's
            // triangular matmul and the full product both measured slower, see `bench`).
            for j0 in (0..d).step_by(XTX_PANEL) {
                let j1 = (j0 + XTX_PANEL).min(d);
                let dst = h.as_mut().submatrix_mut(j0, j0, j1 - j0, d - j0);
                let lhs = xt.subrows(j0, j1 - j0);
                let rhs = xt.subrows(j0, d - j0).transpose();
                matmul(dst, Accum::Add, lhs, rhs, 1.0f32, Par::rayon(0));
            }
        }
    }

    /// Adds one batch whose per-column sums of squares `col_sq` (length `d_in`) were already
    /// reduced elsewhere (e.g. on the device). Only valid when the Hessian is not gathered.
    pub fn observe_sq(&mut self, col_sq: &[f32], tokens: usize, n_seqs: usize) {
        debug_assert!(self.xtx.is_none(), "observe_sq cannot feed a Hessian");
        self.n_seqs += n_seqs;
        self.n_tokens += tokens;
        for (acc, s) in self.sq.iter_mut().zip(col_sq) {
            *acc += *s as f64;
        }
    }

    /// Normalises by the number of sequences (`s = Σx²/n`, `H = 2Σxxᵀ/n`) and returns the
    /// statistics. With no sequence observed the statistics are all zero.
    pub fn finish(self) -> InputStats {
        let d = self.d_in;
        let n = self.n_seqs.max(1) as f64;
        let sq_norms = self.sq.iter().map(|v| (v / n) as f32).collect();
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
        InputStats {
            n_seqs: self.n_seqs,
            n_tokens: self.n_tokens,
            sq_norms,
            hessian,
        }
    }
}

/// The upper Cholesky factor of the damped inverse Hessian, ready for OBS / GPTQ sweeps.
#[derive(Clone, Debug)]
pub struct InverseFactor {
    /// `U`, row-major `d × d`, upper triangular, `H⁻¹ = UᵀU`; stored in f32 for the sweeps.
    pub u: Vec<f32>,
    /// Columns whose `H_jj` was 0 (inputs never active): the caller zeroes `W[:, j]`.
    pub dead: Vec<usize>,
    /// The dampening λ finally added to the diagonal.
    pub damp: f64,
    /// Notes for the report: retries with larger damping, dead columns.
    pub warnings: Vec<String>,
}

/// Number of retries with 10× the damping after a failed factorisation.
pub const CHOLESKY_RETRIES: usize = 3;

/// Prepares `H` as ALGORITHMS.md §3 does and returns the upper Cholesky factor of `H⁻¹`:
/// dead columns (`H_jj = 0`) get `H_jj = 1`; `λ = dampening · mean(diag H)` is added to the
/// diagonal; on a failed factorisation (non-positive pivot or non-finite result) λ is multiplied
/// by 10 up to [`CHOLESKY_RETRIES`] times, each retry recorded in `warnings`. After all retries
/// the error names layer `id`. The factorisation runs in f64; `U` is returned in f32.
pub fn inverse_factor(id: &str, h: &Matrix, dampening: f32) -> Result<InverseFactor> {
    let start = std::time::Instant::now();
    let result = inverse_factor_timed(id, h, dampening);
    crate::compress::timing::add_cholesky(start);
    result
}

fn inverse_factor_timed(id: &str, h: &Matrix, dampening: f32) -> Result<InverseFactor> {
    let d = h.cols;
    if h.rows != d {
        return Err(PareError::Numerical(format!(
            "{id}: Hessian is {}×{}, expected a square matrix",
            h.rows, h.cols
        )));
    }
    // J H J in f64: reversed order so that the lower factor of it gives U of H⁻¹ directly.
    let mut hr = Mat::<f64>::from_fn(d, d, |i, j| h.get(d - 1 - i, d - 1 - j) as f64);
    let mut dead = Vec::new();
    for j in 0..d {
        let r = d - 1 - j;
        if hr[(r, r)] == 0.0 {
            hr[(r, r)] = 1.0;
            dead.push(j);
        }
    }
    dead.sort_unstable();
    let mean_diag = if d == 0 {
        0.0
    } else {
        (0..d).map(|i| hr[(i, i)]).sum::<f64>() / d as f64
    };
    if !mean_diag.is_finite() {
        return Err(PareError::Numerical(format!(
            "{id}: Hessian has non-finite entries"
        )));
    }
    let mut warnings = Vec::new();
    if !dead.is_empty() {
        warnings.push(format!(
            "{id}: {} dead input column(s) (never activated) zeroed",
            dead.len()
        ));
    }
    let mut damp = dampening as f64 * mean_diag;
    let mut applied = 0.0f64;
    for attempt in 0..=CHOLESKY_RETRIES {
        // Damp in place (no extra d×d copy): add the difference to what is already applied.
        for i in 0..d {
            hr[(i, i)] += damp - applied;
        }
        applied = damp;
        let failure = match hr.llt(Side::Lower) {
            Ok(llt) => {
                let mut linv = Mat::<f64>::zeros(d, d);
                faer::linalg::triangular_inverse::invert_lower_triangular(
                    linv.as_mut(),
                    llt.L(),
                    Par::rayon(0),
                );
                // U[i][j] = L'⁻¹[d-1-i][d-1-j]; upper because L'⁻¹ is lower.
                let mut u = vec![0.0f32; d * d];
                let mut finite = true;
                for i in 0..d {
                    for j in i..d {
                        let v = linv[(d - 1 - i, d - 1 - j)];
                        finite &= v.is_finite();
                        u[i * d + j] = v as f32;
                    }
                }
                if finite && (0..d).all(|i| u[i * d + i] > 0.0) {
                    return Ok(InverseFactor {
                        u,
                        dead,
                        damp,
                        warnings,
                    });
                }
                "non-finite inverse factor".to_string()
            }
            Err(e) => format!("{e:?}"),
        };
        if attempt < CHOLESKY_RETRIES {
            let next = if damp > 0.0 {
                damp * 10.0
            } else {
                0.01 * mean_diag.max(f64::MIN_POSITIVE)
            };
            warnings.push(format!(
                "{id}: Cholesky of the damped Hessian failed ({failure}) with λ = {damp:.3e}; \
                 retrying with λ = {next:.3e}"
            ));
            damp = next;
        } else {
            return Err(PareError::Numerical(format!(
                "{id}: Cholesky of the damped Hessian failed ({failure}) after {CHOLESKY_RETRIES} \
                 retries (last λ = {damp:.3e}); add calibration samples or raise dampening"
            )));
        }
    }
    Err(PareError::Numerical(format!("{id}: Cholesky failed")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use faer::linalg::solvers::DenseSolveCore;

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

    /// Stats of `x` (one sequence per `seq` tokens) through the accumulator.
    pub(crate) fn stats_of(x: &[f32], tokens: usize, d: usize) -> InputStats {
        let mut acc = StatsAccumulator::new(
            d,
            Needs {
                sq_norms: true,
                hessian: true,
            },
        );
        acc.observe(x, tokens, 1);
        acc.finish()
    }

    #[test]
    fn accumulates_over_batches_and_normalises_by_sequences() {
        // Batch 1: two tokens, one sequence; batch 2: one token, one sequence. d = 2.
        let mut acc = StatsAccumulator::new(
            2,
            Needs {
                sq_norms: true,
                hessian: true,
            },
        );
        acc.observe(&[1.0, 2.0, 3.0, -1.0], 2, 1);
        acc.observe(&[0.5, 4.0], 1, 1);
        let s = acc.finish();
        assert_eq!((s.n_seqs, s.n_tokens), (2, 3));
        // Σx² = [1+9+0.25, 4+1+16] / 2
        assert_eq!(s.sq_norms, vec![10.25 / 2.0, 21.0 / 2.0]);
        let h = s.hessian.unwrap();
        // Σxxᵀ = [[10.25, 2-3+2], [1, 21]], times 2/2.
        assert_eq!(h.data, vec![10.25, 1.0, 1.0, 21.0]);
    }

    #[test]
    fn hessian_skipped_when_not_needed() {
        let mut acc = StatsAccumulator::new(
            3,
            Needs {
                sq_norms: true,
                hessian: false,
            },
        );
        acc.observe(&[1.0, 2.0, 3.0], 1, 1);
        let s = acc.finish();
        assert!(s.hessian.is_none());
        assert_eq!(s.sq_norms, vec![1.0, 4.0, 9.0]);
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

    #[test]
    fn inverse_factor_matches_reference_three_step_route() {
        let (t, d) = (64, 12);
        let h = stats_of(&correlated_x(5, t, d), t, d).hessian.unwrap();
        let f = inverse_factor("test", &h, 0.01).unwrap();
        assert!(f.warnings.is_empty() && f.dead.is_empty());
        // Reference: chol(H + λI) → inverse → upper chol.
        let mean = (0..d).map(|i| h.get(i, i) as f64).sum::<f64>() / d as f64;
        let a = Mat::<f64>::from_fn(d, d, |i, j| {
            h.get(i, j) as f64 + if i == j { 0.01 * mean } else { 0.0 }
        });
        let inv = a.llt(Side::Lower).unwrap().inverse();
        let l2 = inv.llt(Side::Lower).unwrap();
        let l2 = l2.L();
        for i in 0..d {
            for j in 0..d {
                let want = if j >= i { l2[(j, i)] } else { 0.0 };
                let got = f.u[i * d + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1e-3),
                    "U[{i},{j}] {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn dead_columns_and_retry_are_reported() {
        // Column 1 dead; the rest is rank-deficient (two identical columns) so λ = 0 fails and
        // the retry with a positive λ succeeds.
        let h = Matrix::from_vec(3, 3, vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
        let f = inverse_factor("blocks.0.attn.q", &h, 0.0).unwrap();
        assert_eq!(f.dead, vec![1]);
        assert!(f.damp > 0.0);
        assert!(
            f.warnings.iter().any(|w| w.contains("retrying")),
            "{:?}",
            f.warnings
        );
        let bad = Matrix::from_vec(2, 2, vec![1.0, 3.0, 3.0, 1.0]); // indefinite
        let err = inverse_factor("blocks.1.mlp.down", &bad, 0.0).unwrap_err();
        assert!(err.to_string().contains("blocks.1.mlp.down"), "{err}");
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// Row-panel `XᵀX` (the accumulator) vs faer's full product, per 4096 tokens:
    /// `cargo test --lib compress::hessian::bench -- --ignored --nocapture --test-threads 1`.
    #[test]
    #[ignore]
    fn xtx_panel_vs_full() {
        for d in [320usize, 864] {
            let t = 4096;
            let x = tests::rand_vec(1, t * d);
            let xt = MatRef::from_column_major_slice(&x, d, t);
            let mut acc = StatsAccumulator::new(
                d,
                Needs {
                    sq_norms: true,
                    hessian: true,
                },
            );
            let t0 = std::time::Instant::now();
            for _ in 0..4 {
                acc.observe(&x, t, 1);
            }
            let panel = t0.elapsed() / 4;
            let mut h = Mat::<f32>::zeros(d, d);
            let t0 = std::time::Instant::now();
            for _ in 0..4 {
                matmul(
                    h.as_mut(),
                    Accum::Add,
                    xt,
                    xt.transpose(),
                    1.0f32,
                    Par::rayon(0),
                );
            }
            eprintln!(
                "d {d}: accumulator {panel:?}, full XᵀX {:?} per 4096 tokens",
                t0.elapsed() / 4
            );
        }
    }
}
