//! The optimal-brain-surgeon kit SparseGPT and GPTQ share (ALGORITHMS.md §3 "Preparation", §7):
//! the upper Cholesky factor of the damped inverse Hessian, and the lazy-batch tail update.
//!
//! [`inverse_factor`] turns a Hessian into the upper Cholesky factor `U` of `H⁻¹` with the
//! reference's dead-column and dampening rules. Instead of the reference's three steps
//! (`chol(H)`, `cholesky_inverse`, `chol(H⁻¹, upper)`) it uses the identity `U = J·L'⁻¹·J`, where
//! `J` reverses the index order and `L'` is the lower Cholesky factor of `J H J`: one
//! factorisation and one triangular inverse instead of two factorisations and a full inverse (a
//! test checks both routes agree).
//!
//! Precision ([`Precision::for_width`]): Hessians up to [`F64_MAX_WIDTH`] columns are factorised
//! in f64, where that costs under a second and `12·d²` bytes; wider ones (the 7B shape's
//! `[11008, 11008]` down-projection Hessian, 70B's 28,672) in f32, as the reference does (TF32
//! off), in 0.45× the time and `8·d²` bytes. `U` is f32 either way; the two agree to ~1e-5
//! relative (a test checks it).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use faer::{Accum, Mat, MatMut, MatRef, Par};

use crate::error::{PareError, Result};
use crate::matrix::Matrix;
use crate::model::TapPoint;

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

/// Which factor a [`FactorMemo`] entry holds: the Hessian at `point`, damped by `dampening`,
/// with columns in descending `diag(H)` order when `actorder` (GPTQ's static act-order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactorKey {
    pub point: TapPoint,
    /// `dampening.to_bits()`, so that the key is `Eq`.
    pub dampening: u32,
    pub actorder: bool,
}

impl FactorKey {
    pub fn new(point: TapPoint, dampening: f32, actorder: bool) -> Self {
        Self {
            point,
            dampening: dampening.to_bits(),
            actorder,
        }
    }
}

/// The last inverse factor computed for one group of linears, so that linears sharing an input
/// (q/k/v, gate/up, and consecutive steps with the same dampening) factorise its Hessian once.
/// Lives for one call of the block loop's compress (the statistics do not change meanwhile) and
/// holds one entry: a request with another key frees the old factor before computing the new
/// one, so memory stays that of the factor in use (`d × d` f32).
#[derive(Debug, Default)]
pub struct FactorMemo {
    slot: Mutex<Option<(FactorKey, Arc<InverseFactor>)>>,
    factorised: AtomicUsize,
}

impl FactorMemo {
    /// The factor for `key`: the kept one, else `make()`'s (kept for the next request).
    pub fn get_or_factor(
        &self,
        key: FactorKey,
        make: impl FnOnce() -> Result<InverseFactor>,
    ) -> Result<Arc<InverseFactor>> {
        let mut slot = self
            .slot
            .lock()
            .map_err(|_| PareError::Internal("the inverse-factor memo was poisoned".into()))?;
        if let Some((k, f)) = slot.as_ref()
            && *k == key
        {
            return Ok(Arc::clone(f));
        }
        *slot = None;
        let f = Arc::new(make()?);
        self.factorised.fetch_add(1, Ordering::Relaxed);
        *slot = Some((key, Arc::clone(&f)));
        Ok(f)
    }

    /// How many factors were computed (not served from the memo).
    pub fn factorised(&self) -> usize {
        self.factorised.load(Ordering::Relaxed)
    }
}

/// Number of retries with 10× the damping after a failed factorisation.
pub const CHOLESKY_RETRIES: usize = 3;

/// Prepares `H` as ALGORITHMS.md §3 does and returns the upper Cholesky factor of `H⁻¹`:
/// dead columns (`H_jj = 0`) get `H_jj = 1`; `λ = dampening · mean(diag H)` is added to the
/// diagonal; on a failed factorisation (non-positive pivot or non-finite result) λ is multiplied
/// by 10 up to [`CHOLESKY_RETRIES`] times, each retry recorded in `warnings`. After all retries
/// the pipeline names the layer. The factorisation runs in [`Precision::for_width`]`(d)`; `U` is
/// returned in f32.
pub fn inverse_factor(h: &Matrix, dampening: f32) -> Result<InverseFactor> {
    inverse_factor_in(h, dampening, Precision::for_width(h.cols))
}

/// The widest Hessian factorised in f64 (see the module docs).
pub const F64_MAX_WIDTH: usize = 4096;

/// The floating-point type the Cholesky factorisation and the triangular inverse run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// f64 up to [`F64_MAX_WIDTH`] columns, f32 beyond.
    pub fn for_width(d: usize) -> Self {
        if d <= F64_MAX_WIDTH {
            Precision::F64
        } else {
            Precision::F32
        }
    }
}

/// [`inverse_factor`] in the given precision.
pub fn inverse_factor_in(
    h: &Matrix,
    dampening: f32,
    precision: Precision,
) -> Result<InverseFactor> {
    let start = std::time::Instant::now();
    let result = inverse_factor_timed(h, dampening, precision);
    crate::compress::timing::add_cholesky(start);
    result
}

/// Columns solved per block when building `U`.
const INVERSE_BLOCK: usize = 256;

/// `J H J` in f64 (dead columns' diagonal set to 1, `damp` added to the diagonal).
fn reversed_damped(h: &Matrix, dead_rows: &[usize], damp: f64) -> Mat<f64> {
    let d = h.cols;
    let mut hr = Mat::<f64>::from_fn(d, d, |i, j| h.get(d - 1 - i, d - 1 - j) as f64);
    for &r in dead_rows {
        hr[(r, r)] = 1.0;
    }
    for i in 0..d {
        hr[(i, i)] += damp;
    }
    hr
}

/// `U = J·L'⁻¹·J` in f32 from the lower Cholesky factor `L'` (in the lower triangle of `l`),
/// without forming `L'⁻¹`: rows of `L'⁻¹` are solved [`INVERSE_BLOCK`] at a time from
/// `L'ᵀ x = e_r` (only the leading `r + 1` unknowns are non-zero) and written straight into
/// `U`'s rows. Memory: `U` plus a `d × 256` block. `None` when a value is not finite or a
/// diagonal entry not positive.
fn upper_inverse_factor(l: &Mat<f64>) -> Option<Vec<f32>> {
    let d = l.nrows();
    let par = Par::rayon(0);
    let mut u = vec![0.0f32; d * d];
    let mut x = Mat::<f64>::zeros(d, INVERSE_BLOCK.min(d.max(1)));
    for r0 in (0..d).step_by(INVERSE_BLOCK) {
        let nb = INVERSE_BLOCK.min(d - r0);
        let m = r0 + nb;
        let mut rhs = x.as_mut().submatrix_mut(0, 0, m, nb);
        rhs.fill(0.0);
        for k in 0..nb {
            rhs[(r0 + k, k)] = 1.0;
        }
        faer::linalg::triangular_solve::solve_upper_triangular_in_place(
            l.as_ref().submatrix(0, 0, m, m).transpose(),
            rhs.as_mut(),
            par,
        );
        for k in 0..nb {
            // Row r of L'⁻¹ is U's row d−1−r, reversed: U[d−1−r][d−1−c] = L'⁻¹[r][c], c ≤ r.
            let r = r0 + k;
            let i = d - 1 - r;
            let row = &mut u[i * d..(i + 1) * d];
            for c in 0..=r {
                let v = rhs[(c, k)];
                if !v.is_finite() {
                    return None;
                }
                row[d - 1 - c] = v as f32;
            }
            if row[i] <= 0.0 {
                return None;
            }
        }
    }
    Some(u)
}

/// `J H J` in f32, column-major (dead columns' diagonal set to 1, `damp` added to the diagonal).
/// `H` is symmetric and row-major, so `J H J` is its storage reversed, read either way.
fn reversed_damped_f32(h: &Matrix, dead_rows: &[usize], damp: f32) -> Vec<f32> {
    let d = h.cols;
    let mut hr: Vec<f32> = h.data.iter().rev().copied().collect();
    for &r in dead_rows {
        hr[r * d + r] = 1.0;
    }
    for i in 0..d {
        hr[i * d + i] += damp;
    }
    hr
}

/// Transposes a square `d × d` matrix in place, in 64 × 64 tiles.
fn transpose_in_place(a: &mut [f32], d: usize) {
    const T: usize = 64;
    for i0 in (0..d).step_by(T) {
        for j0 in (i0..d).step_by(T) {
            for i in i0..(i0 + T).min(d) {
                let from = if j0 == i0 { i + 1 } else { j0 };
                for j in from..(j0 + T).min(d) {
                    a.swap(i * d + j, j * d + i);
                }
            }
        }
    }
}

/// [`upper_inverse_factor`] in f32 from the column-major `l` (`L'` in its lower triangle):
/// faer's blocked triangular inverse into a column-major `d × d` buffer, transposed in place to
/// row-major; `J·X·J` is then the storage reversed. Memory: `U` beside `L'`.
fn upper_inverse_factor_f32(l: &[f32], d: usize) -> Option<Vec<f32>> {
    let mut u = vec![0.0f32; d * d];
    faer::linalg::triangular_inverse::invert_lower_triangular(
        MatMut::from_column_major_slice_mut(&mut u, d, d),
        MatRef::from_column_major_slice(l, d, d),
        Par::rayon(0),
    );
    transpose_in_place(&mut u, d);
    u.reverse();
    for i in 0..d {
        let row = &u[i * d + i..(i + 1) * d];
        if row[0] <= 0.0 || row.iter().any(|v| !v.is_finite()) {
            return None;
        }
    }
    Some(u)
}

/// The lower Cholesky factor of `a` in place (faer's LLᵀ); the error as text.
fn cholesky_lower<T: faer::traits::ComplexField>(
    a: MatMut<'_, T>,
) -> std::result::Result<(), String> {
    use faer::linalg::cholesky::llt::factor;
    let (d, par) = (a.nrows(), Par::rayon(0));
    let mut scratch = faer::dyn_stack::MemBuffer::new(factor::cholesky_in_place_scratch::<T>(
        d,
        par,
        Default::default(),
    ));
    factor::cholesky_in_place(
        a,
        Default::default(),
        par,
        faer::dyn_stack::MemStack::new(&mut scratch),
        Default::default(),
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

/// `U` of `J H J` damped by `damp`, in `precision`; the failure as text.
fn try_factor(
    h: &Matrix,
    dead_rows: &[usize],
    damp: f64,
    precision: Precision,
) -> std::result::Result<Vec<f32>, String> {
    let d = h.cols;
    let u = match precision {
        Precision::F64 => {
            let mut hr = reversed_damped(h, dead_rows, damp);
            cholesky_lower(hr.as_mut())?;
            upper_inverse_factor(&hr)
        }
        Precision::F32 => {
            let mut hr = reversed_damped_f32(h, dead_rows, damp as f32);
            cholesky_lower(MatMut::from_column_major_slice_mut(&mut hr, d, d))?;
            upper_inverse_factor_f32(&hr, d)
        }
    };
    u.ok_or_else(|| "non-finite inverse factor".to_string())
}

fn inverse_factor_timed(h: &Matrix, dampening: f32, precision: Precision) -> Result<InverseFactor> {
    let d = h.cols;
    if h.rows != d {
        return Err(PareError::Numerical(format!(
            "Hessian is {}×{}, expected a square matrix",
            h.rows, h.cols
        )));
    }
    // J H J: reversed order so that the lower factor of it gives U of H⁻¹ directly.
    let mut dead = Vec::new();
    let mut dead_rows = Vec::new();
    let mut trace = 0.0f64;
    for j in 0..d {
        let v = h.get(j, j) as f64;
        if v == 0.0 {
            dead.push(j);
            dead_rows.push(d - 1 - j);
            trace += 1.0;
        } else {
            trace += v;
        }
    }
    let mean_diag = if d == 0 { 0.0 } else { trace / d as f64 };
    if !mean_diag.is_finite() || h.data.iter().any(|v| !v.is_finite()) {
        return Err(PareError::Numerical(
            "Hessian has non-finite entries".into(),
        ));
    }
    let mut warnings = Vec::new();
    if !dead.is_empty() {
        warnings.push(format!(
            "{} dead input column(s) (never activated) zeroed",
            dead.len()
        ));
    }
    let mut damp = dampening as f64 * mean_diag;
    for attempt in 0..=CHOLESKY_RETRIES {
        // A retry rebuilds J H J from the f32 Hessian.
        let failure = match try_factor(h, &dead_rows, damp, precision) {
            Ok(u) => {
                return Ok(InverseFactor {
                    u,
                    dead,
                    damp,
                    warnings,
                });
            }
            Err(e) => e,
        };
        if attempt < CHOLESKY_RETRIES {
            let next = if damp > 0.0 {
                damp * 10.0
            } else {
                0.01 * mean_diag.max(f64::MIN_POSITIVE)
            };
            warnings.push(format!(
                "Cholesky of the damped Hessian failed ({failure}) with λ = {damp:.3e}; \
                 retrying with λ = {next:.3e}"
            ));
            damp = next;
        } else {
            return Err(PareError::Numerical(format!(
                "Cholesky of the damped Hessian failed ({failure}) after {CHOLESKY_RETRIES} \
                 retries (last λ = {damp:.3e}); add calibration samples or raise dampening"
            )));
        }
    }
    Err(PareError::Numerical("Cholesky failed".into()))
}

/// `out = A · H` for row-major `a` `[rows, d]` and symmetric row-major `h` `[d, d]`.
pub fn times_hessian(a: &[f32], h: &[f32], d: usize, out: &mut [f32]) {
    let rows = if d == 0 { 0 } else { a.len() / d };
    if rows == 0 {
        return;
    }
    let dst = MatMut::from_column_major_slice_mut(out, d, rows).transpose_mut();
    let lhs = MatRef::from_row_major_slice(a, rows, d);
    let rhs = MatRef::from_row_major_slice(h, d, d);
    faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, Par::rayon(0));
}

/// `W[:, b:] −= E · U[a:b, b:]` for row-major `w` (`d` columns), `e` row-major `[rows, b − a]`,
/// `u` row-major `d × d`. The lazy-batch update shared by SparseGPT and GPTQ.
pub fn update_tail(w: &mut [f32], d: usize, e: &[f32], u: &[f32], a: usize, b: usize) {
    let rows = if d == 0 { 0 } else { w.len() / d };
    if b >= d || rows == 0 || b <= a {
        return;
    }
    let bw = b - a;
    // Row-major view built as the transpose of a column-major one: faer 0.24.4's
    // `from_row_major_slice_with_stride_mut` swaps the strides (reads column-major) and corrupts
    // memory; `update_tail_matches_naive` guards this.
    let dst = MatMut::from_column_major_slice_with_stride_mut(&mut w[b..], d - b, rows, d)
        .transpose_mut();
    let lhs = MatRef::from_row_major_slice(&e[..rows * bw], rows, bw);
    let rhs = MatRef::from_row_major_slice_with_stride(&u[a * d + b..], bw, d - b, d);
    faer::linalg::matmul::matmul(dst, Accum::Add, lhs, rhs, -1.0f32, Par::rayon(0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};
    use faer::Side;
    use faer::linalg::solvers::DenseSolveCore;

    #[test]
    fn inverse_factor_matches_reference_three_step_route() {
        let (t, d) = (64, 12);
        let h = stats_of(&correlated_x(5, t, d), t, d).hessian.unwrap();
        let f = inverse_factor(&h, 0.01).unwrap();
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
    fn f32_and_f64_factors_agree() {
        // Width 200 with 600 tokens (well conditioned after 1 % damping), one dead column.
        let (t, d) = (600, 200);
        let mut x = correlated_x(11, t, d);
        for r in 0..t {
            x[r * d + 7] = 0.0;
        }
        let h = stats_of(&x, t, d).hessian.unwrap();
        let a = inverse_factor_in(&h, 0.01, Precision::F64).unwrap();
        let b = inverse_factor_in(&h, 0.01, Precision::F32).unwrap();
        assert_eq!((a.dead.clone(), a.damp), (vec![7], b.damp));
        assert_eq!(a.dead, b.dead);
        let scale = a.u.iter().fold(0f32, |m, v| m.max(v.abs()));
        for i in 0..d {
            for j in 0..d {
                let (x, y) = (a.u[i * d + j], b.u[i * d + j]);
                if j < i {
                    assert_eq!((x, y), (0.0, 0.0), "U[{i},{j}] below the diagonal");
                } else {
                    assert!((x - y).abs() <= 2e-5 * scale, "U[{i},{j}] {x} vs {y}");
                }
            }
        }
        assert_eq!(Precision::for_width(F64_MAX_WIDTH), Precision::F64);
        assert_eq!(Precision::for_width(F64_MAX_WIDTH + 1), Precision::F32);
    }

    #[test]
    fn transpose_in_place_matches_naive() {
        for d in [1, 5, 64, 130] {
            let a = rand_vec(4, d * d);
            let mut b = a.clone();
            transpose_in_place(&mut b, d);
            for i in 0..d {
                for j in 0..d {
                    assert_eq!(b[i * d + j], a[j * d + i], "{d}: ({i},{j})");
                }
            }
        }
    }

    #[test]
    fn dead_columns_and_retry_are_reported() {
        // Column 1 dead; the rest is rank-deficient (two identical columns) so λ = 0 fails and
        // the retry with a positive λ succeeds.
        let h = Matrix::from_vec(3, 3, vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]);
        let f = inverse_factor(&h, 0.0).unwrap();
        assert_eq!(f.dead, vec![1]);
        assert!(f.damp > 0.0);
        assert!(
            f.warnings.iter().any(|w| w.contains("retrying")),
            "{:?}",
            f.warnings
        );
        let bad = Matrix::from_vec(2, 2, vec![1.0, 3.0, 3.0, 1.0]); // indefinite
        let err = inverse_factor(&bad, 0.0).unwrap_err();
        assert!(err.to_string().contains("after 3 retries"), "{err}");
    }

    #[test]
    fn the_memo_factorises_once_per_key_and_keeps_one_entry() {
        let (t, d) = (64, 12);
        let h = stats_of(&correlated_x(7, t, d), t, d).hessian.unwrap();
        let memo = FactorMemo::default();
        let key = FactorKey::new(TapPoint::AttnIn, 0.01, false);
        let a = memo
            .get_or_factor(key, || inverse_factor(&h, 0.01))
            .unwrap();
        let b = memo
            .get_or_factor(key, || panic!("served from the memo"))
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.u, inverse_factor(&h, 0.01).unwrap().u);
        assert_eq!(memo.factorised(), 1);
        // Another dampening, then another point: each computed, and the first one is gone.
        for k in [
            FactorKey::new(TapPoint::AttnIn, 0.1, false),
            FactorKey::new(TapPoint::MlpIn, 0.01, false),
            key,
        ] {
            memo.get_or_factor(k, || inverse_factor(&h, 0.01)).unwrap();
        }
        assert_eq!(memo.factorised(), 4);
        assert_eq!(
            Arc::strong_count(&a),
            2,
            "the memo dropped the first factor when the key changed"
        );
        // A failure is returned and leaves nothing behind.
        let k = FactorKey::new(TapPoint::AttnOutIn, 0.01, true);
        assert!(
            memo.get_or_factor(k, || Err(PareError::Numerical("x".into())))
                .is_err()
        );
        assert_eq!(memo.factorised(), 4);
    }

    #[test]
    fn update_tail_matches_naive() {
        for (rows, d, a, b) in [(6, 10, 0, 4), (4, 8, 3, 6), (16, 64, 16, 32), (3, 5, 0, 1)] {
            let w0 = rand_vec(1, rows * d);
            let u = rand_vec(2, d * d);
            let e = rand_vec(3, rows * (b - a));
            let mut w = w0.clone();
            update_tail(&mut w, d, &e, &u, a, b);
            for i in 0..rows {
                for j in 0..d {
                    let mut want = w0[i * d + j];
                    if j >= b {
                        for k in a..b {
                            want -= e[i * (b - a) + k - a] * u[k * d + j];
                        }
                    }
                    assert!(
                        (w[i * d + j] - want).abs() < 1e-4,
                        "{rows} {d} {a} {b} ({i},{j})"
                    );
                }
            }
        }
    }
}
