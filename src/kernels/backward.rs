//! CPU kernels of the backward pass of a dense decoder block (the streamed gradient pass,
//! [`crate::pipeline::gradients`]): the GEMMs of a linear's input and weight gradients, and the
//! vector-Jacobian products of RMSNorm, SiLU·up, RoPE and causal attention, all on row-major
//! host slices for one sequence. Each is checked against central differences of the forward
//! kernels in the tests below; the block composed of them is checked against burn's autodiff
//! ([`crate::model::grad`]) and against PyTorch (tests/gradients.rs).

use rayon::prelude::*;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::attention::{Heads, QT, softmax_rows};
use super::elementwise::exp;
use super::{LANES, multiversion, sum};

/// `c ← a·b` (or `c += a·b`): `a` `[m, k]`, `b` `[k, n]`, `c` `[m, n]`, row-major. The input
/// gradient of a linear: `dX = dY·W` with `W` `[out, in]`.
pub fn matmul_nn(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, c: &mut [f32], add: bool) {
    if m * n == 0 {
        return;
    }
    matmul(
        MatMut::from_row_major_slice_mut(&mut c[..m * n], m, n),
        if add { Accum::Add } else { Accum::Replace },
        MatRef::from_row_major_slice(&a[..m * k], m, k),
        MatRef::from_row_major_slice(&b[..k * n], k, n),
        1.0f32,
        Par::rayon(0),
    );
}

/// `aᵀ·b`: `a` `[k, m]`, `b` `[k, n]` → `[m, n]`, row-major. The weight gradient of a linear:
/// `dW = dYᵀ·X` (`[out, in]`).
pub fn matmul_tn(a: &[f32], b: &[f32], k: usize, m: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    if m * n == 0 || k == 0 {
        return c;
    }
    matmul(
        MatMut::from_row_major_slice_mut(&mut c, m, n),
        Accum::Replace,
        MatRef::from_row_major_slice(&a[..k * m], k, m).transpose(),
        MatRef::from_row_major_slice(&b[..k * n], k, n),
        1.0f32,
        Par::rayon(0),
    );
    c
}

/// RMSNorm's input gradient, per row of `x` (`[rows, d]`): with `r = (mean(x²) + eps)^(−1/2)`,
/// `y = w ⊙ x · r` and `u = w ⊙ dy`, `dx = r·u − x · r³ · (x·u) / d`. Added into `dx`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], eps: f32, dy: &[f32], dx: &mut [f32]) {
    let d = w.len();
    if d == 0 {
        return;
    }
    dx.par_chunks_mut(d)
        .zip(x.par_chunks(d).zip(dy.par_chunks(d)))
        .for_each(|(dxr, (xr, dyr))| {
            let ms = xr.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / d as f64;
            let r = 1.0 / (ms + eps as f64).sqrt();
            let xu: f64 = xr
                .iter()
                .zip(dyr.iter().zip(w))
                .map(|(xv, (g, wv))| (*xv as f64) * (*g as f64) * (*wv as f64))
                .sum();
            let c = r * r * r * xu / d as f64;
            for ((o, xv), (g, wv)) in dxr.iter_mut().zip(xr).zip(dyr.iter().zip(w)) {
                *o += (r * (*g as f64) * (*wv as f64) - c * (*xv as f64)) as f32;
            }
        });
}

/// The gradient of the fused gate|up output `gu` (`[rows, 2f]`) from that of `silu(g)·u`
/// (`d_act`, `[rows, f]`): `d_g = d_act·u·σ(g)(1 + g(1 − σ(g)))`, `d_u = d_act·silu(g)`.
pub fn silu_mul_backward(gu: &[f32], d_act: &[f32], f: usize) -> Vec<f32> {
    let mut out = vec![0f32; gu.len()];
    if f == 0 {
        return out;
    }
    out.par_chunks_mut(2 * f)
        .zip(gu.par_chunks(2 * f).zip(d_act.par_chunks(f)))
        .for_each(|(o, (row, da))| {
            let (g, u) = row.split_at(f);
            let (og, ou) = o.split_at_mut(f);
            for j in 0..f {
                let s = 1.0 / (1.0 + exp(-g[j]));
                og[j] = da[j] * u[j] * s * (1.0 + g[j] * (1.0 - s));
                ou[j] = da[j] * g[j] * s;
            }
        });
    out
}

/// RoPE's input gradient for one head's `hd` values: the rotation
/// `r = x·cos + rotate_half(x)·sin` is linear, so `dx = dr·cos + rotate_halfᵀ(dr·sin)` with
/// `rotate_halfᵀ(y) = [y₂, −y₁]`.
#[inline]
fn rope_backward(dr: &[f32], cos: &[f32], sin: &[f32], dx: &mut [f32]) {
    let half = dr.len() / 2;
    for j in 0..half {
        dx[j] = dr[j] * cos[j] + dr[j + half] * sin[j + half];
        dx[j + half] = dr[j + half] * cos[j + half] - dr[j] * sin[j];
    }
}

multiversion! {
    /// Softmax's backward per row of `s` entries: `dS = P ⊙ (dP − Σ_j dP_j P_j)`, in place of
    /// `dp`.
    fn softmax_backward_rows(p: &[f32], dp: &mut [f32], s: usize) {
        for (pr, dr) in p.chunks_exact(s).zip(dp.chunks_exact_mut(s)) {
            let mut acc = [0f32; LANES];
            for (k, (a, b)) in pr.iter().zip(dr.iter()).enumerate() {
                acc[k % LANES] += a * b;
            }
            let dot = sum(&acc);
            for (d, p) in dr.iter_mut().zip(pr) {
                *d = p * (*d - dot);
            }
        }
    }
}

#[inline]
fn rope(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = x.len() / 2;
    for d in 0..half {
        out[d] = x[d] * cos[d] - x[d + half] * sin[d];
        out[d + half] = x[d + half] * cos[d + half] + x[d] * sin[d + half];
    }
}

/// The gradient of causal attention for one sequence: from the q|k|v rows `qkv`
/// (`[s, (nh + 2·nkv)·hd]`, before RoPE, as [`super::attention::causal_attention`] takes them)
/// and the gradient of its output `d_out` (`[s, nh·hd]`) to the gradient of `qkv` (same shape as
/// `qkv`, before RoPE). Per KV head in parallel, its query heads in turn, in tiles of [`QT`]
/// queries against the keys they see (the forward's tiling and softmax): the scores and the
/// softmax are recomputed (`P`), then `dV += Pᵀ·dO`, `dP = dO·Vᵀ`,
/// `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = scale·dS·K`, `dK += scale·dSᵀ·Q`.
pub fn attention_backward(
    qkv: &[f32],
    d_out: &[f32],
    h: Heads,
    cos: &[f32],
    sin: &[f32],
) -> Vec<f32> {
    let (s, nh, nkv, hd) = (h.s, h.n_heads, h.n_kv_heads, h.head_dim);
    let width = (nh + 2 * nkv) * hd;
    let mut dqkv = vec![0f32; s * width];
    if s * nh * hd == 0 || nkv == 0 || qkv.len() < s * width {
        return dqkv;
    }
    let rep = nh / nkv;
    let w = h.window.unwrap_or(usize::MAX).max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let roped = |col: usize| -> Vec<f32> {
        let mut out = vec![0f32; s * hd];
        for p in 0..s {
            let src = &qkv[p * width + col..p * width + col + hd];
            rope(
                src,
                &cos[p * hd..(p + 1) * hd],
                &sin[p * hd..(p + 1) * hd],
                &mut out[p * hd..(p + 1) * hd],
            );
        }
        out
    };
    // Per KV head g: (dQ of its rep query heads [rep][s][hd], dK [s][hd], dV [s][hd]), roped.
    let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..nkv)
        .into_par_iter()
        .map(|g| {
            let k = roped((nh + g) * hd);
            let mut v = vec![0f32; s * hd];
            for p in 0..s {
                let c = (nh + nkv + g) * hd;
                v[p * hd..(p + 1) * hd].copy_from_slice(&qkv[p * width + c..p * width + c + hd]);
            }
            let (mut dq, mut dk, mut dv) = (
                vec![0f32; rep * s * hd],
                vec![0f32; s * hd],
                vec![0f32; s * hd],
            );
            let mut p_mat = vec![0f32; QT * s];
            let mut dp = vec![0f32; QT * s];
            let mut d_o = vec![0f32; s * hd];
            for r in 0..rep {
                let hh = g * rep + r;
                let q = roped(hh * hd);
                for p in 0..s {
                    d_o[p * hd..(p + 1) * hd].copy_from_slice(
                        &d_out[p * nh * hd + hh * hd..p * nh * hd + (hh + 1) * hd],
                    );
                }
                let dq = &mut dq[r * s * hd..(r + 1) * s * hd];
                // Tiles of QT queries against the keys they can see (k0..end): the upper
                // triangle of the score matrix is never formed, as in the forward.
                for i0 in (0..s).step_by(QT) {
                    let rows = QT.min(s - i0);
                    let end = i0 + rows;
                    let k0 = (i0 + 1).saturating_sub(w);
                    let n = end - k0;
                    let (pm, dpm) = (&mut p_mat[..rows * n], &mut dp[..rows * n]);
                    let (qt, dot) = (&q[i0 * hd..end * hd], &d_o[i0 * hd..end * hd]);
                    let (kt, vt) = (&k[k0 * hd..end * hd], &v[k0 * hd..end * hd]);
                    // P = softmax(scale·Q·Kᵀ) over keys p − w < j ≤ p.
                    matmul(
                        MatMut::from_row_major_slice_mut(pm, rows, n),
                        Accum::Replace,
                        MatRef::from_row_major_slice(qt, rows, hd),
                        MatRef::from_row_major_slice(kt, n, hd).transpose(),
                        scale,
                        Par::Seq,
                    );
                    softmax_rows(pm, rows, n, i0, k0, w);
                    // dV += Pᵀ·dO; dP = dO·Vᵀ.
                    matmul(
                        MatMut::from_row_major_slice_mut(&mut dv[k0 * hd..end * hd], n, hd),
                        Accum::Add,
                        MatRef::from_row_major_slice(pm, rows, n).transpose(),
                        MatRef::from_row_major_slice(dot, rows, hd),
                        1.0f32,
                        Par::Seq,
                    );
                    matmul(
                        MatMut::from_row_major_slice_mut(dpm, rows, n),
                        Accum::Replace,
                        MatRef::from_row_major_slice(dot, rows, hd),
                        MatRef::from_row_major_slice(vt, n, hd).transpose(),
                        1.0f32,
                        Par::Seq,
                    );
                    // dS = P ⊙ (dP − rowsum(dP ⊙ P)), in place of dP.
                    softmax_backward_rows(pm, dpm, n);
                    // dQ = scale·dS·K; dK += scale·dSᵀ·Q.
                    matmul(
                        MatMut::from_row_major_slice_mut(&mut dq[i0 * hd..end * hd], rows, hd),
                        Accum::Replace,
                        MatRef::from_row_major_slice(dpm, rows, n),
                        MatRef::from_row_major_slice(kt, n, hd),
                        scale,
                        Par::Seq,
                    );
                    matmul(
                        MatMut::from_row_major_slice_mut(&mut dk[k0 * hd..end * hd], n, hd),
                        Accum::Add,
                        MatRef::from_row_major_slice(dpm, rows, n).transpose(),
                        MatRef::from_row_major_slice(qt, rows, hd),
                        scale,
                        Par::Seq,
                    );
                }
            }
            (dq, dk, dv)
        })
        .collect();
    // Undo RoPE and scatter into the q|k|v layout.
    for (g, (dq, dk, dv)) in parts.iter().enumerate() {
        for p in 0..s {
            let (c, sn) = (&cos[p * hd..(p + 1) * hd], &sin[p * hd..(p + 1) * hd]);
            let row = &mut dqkv[p * width..(p + 1) * width];
            for r in 0..rep {
                let hh = g * rep + r;
                rope_backward(
                    &dq[(r * s + p) * hd..(r * s + p + 1) * hd],
                    c,
                    sn,
                    &mut row[hh * hd..(hh + 1) * hd],
                );
            }
            rope_backward(
                &dk[p * hd..(p + 1) * hd],
                c,
                sn,
                &mut row[(nh + g) * hd..(nh + g + 1) * hd],
            );
            row[(nh + nkv + g) * hd..(nh + nkv + g + 1) * hd]
                .copy_from_slice(&dv[p * hd..(p + 1) * hd]);
        }
    }
    dqkv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 101) % 61) as f32 - 30.0) / 25.0)
            .collect()
    }

    /// Σ f(x) ⊙ g against the analytic gradient at a few coordinates, by central differences.
    fn check(f: &dyn Fn(&[f32]) -> Vec<f32>, x: &[f32], g: &[f32], grad: &[f32], what: &str) {
        let eps = 1e-2f32;
        let dot = |y: Vec<f32>| {
            y.iter()
                .zip(g)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        for i in (0..x.len()).step_by((x.len() / 13).max(1)) {
            let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
            xp[i] += eps;
            xm[i] -= eps;
            let fd = (dot(f(&xp)) - dot(f(&xm))) / (2.0 * eps as f64);
            assert!(
                (fd - grad[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                "{what}[{i}]: fd {fd} analytic {}",
                grad[i]
            );
        }
    }

    #[test]
    fn rms_norm_silu_and_gemm_gradients_match_differences() {
        let (rows, d, f) = (3, 8, 5);
        let x = fill(rows * d, 1);
        let w: Vec<f32> = (0..d).map(|i| 0.5 + 0.1 * i as f32).collect();
        let g = fill(rows * d, 2);
        let mut dx = vec![0f32; rows * d];
        rms_norm_backward(&x, &w, 1e-5, &g, &mut dx);
        check(
            &|x| super::super::elementwise::rms_norm(x, &w, 1e-5),
            &x,
            &g,
            &dx,
            "rms",
        );
        let gu = fill(rows * 2 * f, 3);
        let ga = fill(rows * f, 4);
        let dgu = silu_mul_backward(&gu, &ga, f);
        check(
            &|x| super::super::elementwise::silu_mul(x, f),
            &gu,
            &ga,
            &dgu,
            "silu·up",
        );
        // dX = dY·W and dW = dYᵀ·X for y = x·Wᵀ.
        let (t, din, dout) = (4, 6, 3);
        let (xs, wm, gy) = (fill(t * din, 5), fill(dout * din, 6), fill(t * dout, 7));
        let mut gx = vec![0f32; t * din];
        matmul_nn(&gy, &wm, t, dout, din, &mut gx, false);
        let lin = |x: &[f32], w: &[f32]| {
            let mut y = vec![0f32; t * dout];
            super::super::gemm::linear(x, w, dout, None, &mut y, false);
            y
        };
        check(&|x| lin(x, &wm), &xs, &gy, &gx, "dX");
        let gw = matmul_tn(&gy, &xs, t, dout, din);
        check(&|w| lin(&xs, w), &wm, &gy, &gw, "dW");
    }

    #[test]
    fn attention_gradient_matches_differences_with_gqa_and_windows() {
        for (s, nh, nkv, hd, window) in [
            (7, 4, 2, 4, None),
            (9, 2, 1, 6, Some(3)),
            (70, 2, 2, 4, None),
            (150, 2, 1, 4, Some(40)),
        ] {
            let width = (nh + 2 * nkv) * hd;
            let qkv = fill(s * width, s);
            let g = fill(s * nh * hd, s + 1);
            let heads = Heads {
                b: 1,
                s,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                window,
            };
            let (mut cos, mut sin) = (vec![0f32; s * hd], vec![0f32; s * hd]);
            for p in 0..s {
                for i in 0..hd {
                    let a =
                        p as f32 * (1.0 / 10000f32.powf((i % (hd / 2)) as f32 * 2.0 / hd as f32));
                    cos[p * hd + i] = a.cos();
                    sin[p * hd + i] = a.sin();
                }
            }
            let d = attention_backward(&qkv, &g, heads, &cos, &sin);
            check(
                &|x| super::super::attention::causal_attention(x, heads, &cos, &sin),
                &qkv,
                &g,
                &d,
                &format!("attention s={s}"),
            );
        }
    }
}
