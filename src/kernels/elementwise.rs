//! Row-wise kernels: a vectorisable `exp`, RMSNorm and SiLU·up, parallel over rows (rayon) and
//! compiled for the CPU's SIMD width ([`super::multiversion`]).

use rayon::prelude::*;

use super::{multiversion, sum};

/// Rows per rayon task (keeps tasks large enough to amortise scheduling).
const ROWS_PER_TASK: usize = 64;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two, so that `x − n·ln 2` is exact for |n| < 2^9.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 · 2^23: adding it rounds a float to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// `e^x` in f32 without a libm call, so loops over it vectorise: `x = n·ln 2 + r` with
/// |r| ≤ ln 2 / 2, `e^r` by its degree-6 Taylor polynomial (relative error below 2·10⁻⁷, about
/// one ulp), times `2^n` built in the exponent bits. Below −87.3 the result is about 10⁻³⁸
/// instead of 0 (harmless in a softmax sum); above 88.37 it is `+∞` (e^88.72 is f32's largest).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let ni = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let scale = f32::from_bits((ni.wrapping_add(127) as u32) << 23);
    p * scale
}

/// `x ← e^(x − shift)` over a slice, returning the sum of the results ([`super::sum`]).
#[inline(always)]
pub fn exp_shifted_sum(xs: &mut [f32], shift: f32) -> f32 {
    for v in xs.iter_mut() {
        *v = exp(*v - shift);
    }
    sum(xs)
}

multiversion! {
    /// RMSNorm of whole rows `x` into `o` (both `[rows, d]`).
    fn rms_rows(o: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
        let d = w.len();
        let mut sq = vec![0f32; d];
        for (orow, xrow) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            for (q, v) in sq.iter_mut().zip(xrow) {
                *q = v * v;
            }
            let inv = 1.0 / (sum(&sq) / d as f32 + eps).sqrt();
            for ((ov, xv), wv) in orow.iter_mut().zip(xrow).zip(w) {
                *ov = *xv * inv * *wv;
            }
        }
    }
}

multiversion! {
    /// `silu(gate)·up` of whole rows `g` (`[rows, 2f]`) into `o` (`[rows, f]`).
    fn silu_rows(o: &mut [f32], g: &[f32], f: usize) {
        for (orow, grow) in o.chunks_exact_mut(f).zip(g.chunks_exact(2 * f)) {
            let (gate, up) = grow.split_at(f);
            for ((ov, gv), uv) in orow.iter_mut().zip(gate).zip(up) {
                *ov = *gv / (1.0 + exp(-*gv)) * *uv;
            }
        }
    }
}

multiversion! {
    /// Adds `x²` of every row of `x` (`[rows, d]`) into `acc` (`[d]`), rows in order.
    fn col_sq_rows(acc: &mut [f32], x: &[f32]) {
        for row in x.chunks_exact(acc.len()) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += *v * *v;
            }
        }
    }
}

/// Per column `Σ_t x_tj²` of `x` (`[rows, d]` row-major) in f32, summed over the rows in order
/// (the order burn-flex's `square().sum_dim(0)` uses, so the result is the same to the bit);
/// memory-bound, so one thread.
pub fn col_sq_sums(x: &[f32], d: usize) -> Vec<f32> {
    let mut acc = vec![0f32; d];
    if d > 0 {
        col_sq_rows(&mut acc, x);
    }
    acc
}

/// RMSNorm as transformers computes it, per row of `x` (`[rows, d]` row-major):
/// `w · (x / sqrt(mean(x²) + eps))`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    if d == 0 {
        return out;
    }
    out.par_chunks_mut(d * ROWS_PER_TASK)
        .zip(x.par_chunks(d * ROWS_PER_TASK))
        .for_each(|(o, xin)| rms_rows(o, xin, w, eps));
    out
}

/// Per-head RMSNorm in place (Qwen3's q_norm/k_norm): in every row of `x` (`[rows, width]`
/// row-major), the `heads` consecutive slices of `w.len()` values starting at column `col` are
/// each replaced by `w · v / sqrt(mean(v²) + eps)`.
pub fn head_rms_norm(x: &mut [f32], width: usize, col: usize, heads: usize, w: &[f32], eps: f32) {
    let hd = w.len();
    if width == 0 || hd == 0 || col + heads * hd > width {
        return;
    }
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|rows| {
        let mut tmp = vec![0f32; heads * hd];
        for row in rows.chunks_exact_mut(width) {
            let seg = &mut row[col..col + heads * hd];
            tmp.copy_from_slice(seg);
            rms_rows(seg, &tmp, w, eps);
        }
    });
}

/// `silu(g) · u` per row of the fused gate|up output `gu` (`[rows, 2f]`) → `[rows, f]`.
pub fn silu_mul(gu: &[f32], f: usize) -> Vec<f32> {
    let rows = if f == 0 { 0 } else { gu.len() / (2 * f) };
    let mut out = vec![0f32; rows * f];
    if rows == 0 {
        return out;
    }
    out.par_chunks_mut(f * ROWS_PER_TASK)
        .zip(gu.par_chunks(2 * f * ROWS_PER_TASK))
        .for_each(|(o, g)| silu_rows(o, g, f));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulps_of_libm() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (a, b) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(-1e30) < 1e-37 && exp(-1e30) >= 0.0);
        assert!(exp(1e30).is_infinite());
        let mut v = vec![0.0f32, 1.0, 2.0];
        let s = exp_shifted_sum(&mut v, 2.0);
        assert!((s - (1.0 + (-1.0f32).exp() + (-2.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn column_sums_of_squares_add_rows_in_order() {
        let (rows, d) = (37, 5);
        let x: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 7) % 11) as f32 * 0.37 - 1.9)
            .collect();
        let got = col_sq_sums(&x, d);
        for j in 0..d {
            let mut want = 0f32;
            for r in 0..rows {
                want += x[r * d + j] * x[r * d + j];
            }
            assert_eq!(got[j].to_bits(), want.to_bits(), "column {j}");
        }
        assert!(col_sq_sums(&[], 0).is_empty());
    }

    #[test]
    fn head_rms_norm_normalises_each_head_of_its_columns_only() {
        let (rows, width, col, heads, hd) = (70, 11, 2, 3, 2);
        let x: Vec<f32> = (0..rows * width)
            .map(|i| ((i * 7) % 13) as f32 * 0.4 - 2.5)
            .collect();
        let w = [0.5f32, 2.0];
        let mut y = x.clone();
        head_rms_norm(&mut y, width, col, heads, &w, 1e-6);
        for r in 0..rows {
            for c in 0..width {
                let i = r * width + c;
                if c < col || c >= col + heads * hd {
                    assert_eq!(y[i], x[i], "({r},{c}) outside the heads changed");
                    continue;
                }
                let h0 = r * width + col + (c - col) / hd * hd;
                let ms = (0..hd).map(|j| (x[h0 + j] as f64).powi(2)).sum::<f64>() / hd as f64;
                let want = x[i] as f64 / (ms + 1e-6).sqrt() * w[(c - col) % hd] as f64;
                assert!(
                    (y[i] as f64 - want).abs() < 1e-5,
                    "({r},{c}): {} vs {want}",
                    y[i]
                );
            }
        }
    }

    #[test]
    fn rms_norm_and_silu_mul_match_their_definitions() {
        let (rows, d) = (130, 6);
        let x: Vec<f32> = (0..rows * d)
            .map(|i| ((i * 13) % 17) as f32 * 0.3 - 2.0)
            .collect();
        let w: Vec<f32> = (0..d).map(|i| 0.5 + i as f32 * 0.1).collect();
        let y = rms_norm(&x, &w, 1e-5);
        for r in [0, 63, 64, 129] {
            let row = &x[r * d..(r + 1) * d];
            let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
            for j in 0..d {
                let want = row[j] as f64 / (ms + 1e-5).sqrt() * w[j] as f64;
                assert!((y[r * d + j] as f64 - want).abs() < 1e-5, "({r},{j})");
            }
        }
        let f = 3;
        let gu: Vec<f32> = (0..rows * 2 * f)
            .map(|i| ((i * 5) % 9) as f32 * 0.7 - 3.0)
            .collect();
        let s = silu_mul(&gu, f);
        for r in [0, 100, 129] {
            for j in 0..f {
                let (g, u) = (gu[r * 2 * f + j] as f64, gu[r * 2 * f + f + j] as f64);
                let want = g / (1.0 + (-g).exp()) * u;
                assert!((s[r * f + j] as f64 - want).abs() < 1e-5, "({r},{j})");
            }
        }
    }
}
