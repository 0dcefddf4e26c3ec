//! Fused causal self-attention on the host, from the fused q|k|v GEMM's output to the
//! o-projection's input, in one pass per (sequence, head): RoPE (Hugging Face's half-split
//! rotation), grouped-query heads by index (no expanded K/V copies), scores only for keys up to
//! the query (the causal upper triangle is never computed, no mask tensor), a max-subtracted
//! softmax with the vectorised [`exp`], and the weighted sum of values.
//!
//! Layout: `qkv` is row-major `[b·s, (nh + 2·nkv)·hd]` with q|k|v in that order (tokens of
//! sequence `i` are rows `i·s ..`); the result is row-major `[b·s, nh·hd]`. Per head, queries
//! go in tiles of 64: the tile's scores against the keys up to its last position and its
//! weighted values are two faer GEMMs, with the softmax between them.

use rayon::prelude::*;

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use super::elementwise::exp_shifted_sum;
use super::{max, multiversion};

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Sequences in the batch.
    pub b: usize,
    /// Tokens per sequence (positions `0..s`).
    pub s: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window `w` (Mistral-style): the query at position `i` sees keys `i − w < j ≤ i`.
    /// `None`: every earlier key.
    pub window: Option<usize>,
}

/// Rotates `x` (one head's `hd` values at position `pos`) into `out`:
/// `out = x·cos + rotate_half(x)·sin`, `rotate_half(x) = [−x₂, x₁]`.
#[inline(always)]
fn rope(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let half = x.len() / 2;
    for d in 0..half {
        out[d] = x[d] * cos[d] - x[d + half] * sin[d];
        out[d + half] = x[d + half] * cos[d + half] + x[d] * sin[d + half];
    }
}

/// What one query head reads: its sequence's q|k|v rows, the column of its queries, the shapes
/// and the RoPE tables.
struct OneHead<'a> {
    qkv: &'a [f32],
    width: usize,
    col: usize,
    s: usize,
    hd: usize,
    scale: f32,
    cos: &'a [f32],
    sin: &'a [f32],
    window: Option<usize>,
}

/// Query rows per tile.
pub(super) const QT: usize = 64;

multiversion! {
    /// Softmax of each of the `rows` score rows of a tile (`[rows, n]`, row `r` for the query at
    /// position `i0 + r`, column `c` for the key at `k0 + c`), over its own keys `lo..=i0 + r`
    /// (`lo` = 0, or the first key inside the sliding window `w`); the tile's other keys get
    /// weight 0.
    pub(super) fn softmax_rows(sc: &mut [f32], rows: usize, n: usize, i0: usize, k0: usize, w: usize) {
        for r in 0..rows {
            let p = i0 + r;
            let (lo, hi) = ((p + 1).saturating_sub(w).max(k0) - k0, p + 1 - k0);
            let row = &mut sc[r * n..(r + 1) * n];
            let (head, rest) = row.split_at_mut(lo);
            let (keep, masked) = rest.split_at_mut(hi - lo);
            head.fill(0.0);
            let m = max(keep);
            let inv = 1.0 / exp_shifted_sum(keep, m);
            keep.iter_mut().for_each(|x| *x *= inv);
            masked.fill(0.0);
        }
    }
}

multiversion! {
    /// Roped, scaled queries of positions `i0..i0 + rows` into `q` (`[rows, hd]`).
    fn rope_queries(h: &OneHead<'_>, i0: usize, rows: usize, q: &mut [f32]) {
        let hd = h.hd;
        for r in 0..rows {
            let p = i0 + r;
            let src = &h.qkv[p * h.width + h.col..p * h.width + h.col + hd];
            let qr = &mut q[r * hd..(r + 1) * hd];
            rope(src, &h.cos[p * hd..(p + 1) * hd], &h.sin[p * hd..(p + 1) * hd], qr);
            qr.iter_mut().for_each(|x| *x *= h.scale);
        }
    }
}

/// One (sequence, query head): `o` (`[s, hd]`) ← softmax(q·Kᵀ·scale, causal)·V, with `k` the
/// roped keys and `v` the values (`[s, hd]` each) of its KV head. Tiles of [`QT`] queries: the
/// scores against the keys the tile can see (from the first key inside its first query's
/// window to its last position) and the weighted values are two faer GEMMs (single-threaded
/// here; heads run in parallel), the softmax is [`softmax_rows`].
fn attend_head(h: &OneHead<'_>, k: &[f32], v: &[f32], o: &mut [f32]) {
    let (s, hd) = (h.s, h.hd);
    let w = h.window.unwrap_or(usize::MAX).max(1);
    let mut q = vec![0f32; QT * hd];
    let mut sc = vec![0f32; QT * s];
    for i0 in (0..s).step_by(QT) {
        let rows = QT.min(s - i0);
        let end = i0 + rows;
        let k0 = (i0 + 1).saturating_sub(w);
        let n = end - k0;
        rope_queries(h, i0, rows, &mut q);
        matmul(
            MatMut::from_row_major_slice_mut(&mut sc[..rows * n], rows, n),
            Accum::Replace,
            MatRef::from_row_major_slice(&q[..rows * hd], rows, hd),
            MatRef::from_row_major_slice(&k[k0 * hd..end * hd], n, hd).transpose(),
            1.0f32,
            Par::Seq,
        );
        softmax_rows(&mut sc[..rows * n], rows, n, i0, k0, w);
        matmul(
            MatMut::from_row_major_slice_mut(&mut o[i0 * hd..(i0 + rows) * hd], rows, hd),
            Accum::Replace,
            MatRef::from_row_major_slice(&sc[..rows * n], rows, n),
            MatRef::from_row_major_slice(&v[k0 * hd..end * hd], n, hd),
            1.0f32,
            Par::Seq,
        );
    }
}

/// Causal attention of `qkv` (see the module docs); `cos`/`sin` are `[≥ s, hd]` RoPE tables.
pub fn causal_attention(qkv: &[f32], h: Heads, cos: &[f32], sin: &[f32]) -> Vec<f32> {
    let Heads {
        b,
        s,
        n_heads: nh,
        n_kv_heads: nkv,
        head_dim: hd,
        window,
    } = h;
    let width = (nh + 2 * nkv) * hd;
    let mut out = vec![0f32; b * s * nh * hd];
    if b * s * nh * hd == 0 || nkv == 0 || qkv.len() < b * s * width {
        return out;
    }
    let rep = nh / nkv;
    // Roped keys and values per KV head, [b][nkv][s][hd] each.
    let mut ks = vec![0f32; b * nkv * s * hd];
    let mut vs = vec![0f32; b * nkv * s * hd];
    ks.par_chunks_mut(s * hd)
        .zip(vs.par_chunks_mut(s * hd))
        .enumerate()
        .for_each(|(task, (kh, v))| {
            let (bi, g) = (task / nkv, task % nkv);
            for p in 0..s {
                let row = &qkv[(bi * s + p) * width..(bi * s + p + 1) * width];
                let k = &row[(nh + g) * hd..(nh + g + 1) * hd];
                rope(
                    k,
                    &cos[p * hd..(p + 1) * hd],
                    &sin[p * hd..(p + 1) * hd],
                    &mut kh[p * hd..(p + 1) * hd],
                );
                v[p * hd..(p + 1) * hd]
                    .copy_from_slice(&row[(nh + nkv + g) * hd..(nh + nkv + g + 1) * hd]);
            }
        });
    let scale = 1.0 / (hd as f32).sqrt();
    // Head-major result [b][nh][s][hd], transposed into `out` at the end.
    let mut heads = vec![0f32; b * nh * s * hd];
    heads
        .par_chunks_mut(s * hd)
        .enumerate()
        .for_each(|(task, o)| {
            let (bi, hh) = (task / nh, task % nh);
            let g = hh / rep;
            let one = OneHead {
                qkv: &qkv[bi * s * width..(bi + 1) * s * width],
                width,
                col: hh * hd,
                s,
                hd,
                scale,
                cos,
                sin,
                window,
            };
            attend_head(
                &one,
                &ks[(bi * nkv + g) * s * hd..(bi * nkv + g + 1) * s * hd],
                &vs[(bi * nkv + g) * s * hd..(bi * nkv + g + 1) * s * hd],
                o,
            );
        });
    // [b][nh][s][hd] → [b·s, nh·hd].
    out.par_chunks_mut(s * nh * hd)
        .enumerate()
        .for_each(|(bi, o)| {
            for hh in 0..nh {
                let src = &heads[(bi * nh + hh) * s * hd..(bi * nh + hh + 1) * s * hd];
                for p in 0..s {
                    o[(p * nh + hh) * hd..(p * nh + hh + 1) * hd]
                        .copy_from_slice(&src[p * hd..(p + 1) * hd]);
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Straightforward attention in f64: rope every head, scores against all keys ≤ the query,
    /// exact softmax, weighted values.
    fn reference(qkv: &[f32], h: Heads, cos: &[f32], sin: &[f32]) -> Vec<f64> {
        let Heads {
            b,
            s,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            window,
        } = h;
        let width = (nh + 2 * nkv) * hd;
        let half = hd / 2;
        let first = |i: usize| window.map_or(0, |w| (i + 1).saturating_sub(w));
        let roped = |bi: usize, p: usize, col: usize| -> Vec<f64> {
            let x = &qkv[(bi * s + p) * width + col..(bi * s + p) * width + col + hd];
            (0..hd)
                .map(|d| {
                    let rot = if d < half {
                        -(x[d + half] as f64)
                    } else {
                        x[d - half] as f64
                    };
                    x[d] as f64 * cos[p * hd + d] as f64 + rot * sin[p * hd + d] as f64
                })
                .collect()
        };
        let mut out = vec![0f64; b * s * nh * hd];
        for bi in 0..b {
            for hh in 0..nh {
                let g = hh / (nh / nkv);
                for i in 0..s {
                    let q = roped(bi, i, hh * hd);
                    let j0 = first(i);
                    let sc: Vec<f64> = (j0..=i)
                        .map(|j| {
                            let k = roped(bi, j, (nh + g) * hd);
                            q.iter().zip(&k).map(|(a, c)| a * c).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                    let l: f64 = e.iter().sum();
                    for (j, ej) in (j0..).zip(&e) {
                        let v = &qkv[(bi * s + j) * width + (nh + nkv + g) * hd..];
                        for d in 0..hd {
                            out[(bi * s + i) * nh * hd + hh * hd + d] += ej / l * v[d] as f64;
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_reference_for_gqa_odd_lengths_and_sliding_windows() {
        for (b, s, nh, nkv, hd, window) in [
            (2, 13, 4, 2, 8, None),
            (1, 70, 2, 2, 16, None),
            (3, 5, 6, 1, 4, None),
            (1, 37, 2, 1, 32, None),
            (2, 21, 4, 4, 64, None),
            (1, 150, 2, 1, 8, Some(64)),
            (2, 70, 4, 2, 8, Some(5)),
            (1, 130, 2, 2, 4, Some(1)),
            (1, 20, 2, 2, 4, Some(64)),
        ] {
            let h = Heads {
                b,
                s,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                window,
            };
            let qkv = pseudo(b * s * (nh + 2 * nkv) * hd, (b * 31 + s) as u64);
            let ang: Vec<f32> = (0..s * hd)
                .map(|i| (i / hd) as f32 * 0.1 * ((i % hd) + 1) as f32)
                .collect();
            let cos: Vec<f32> = ang.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = ang.iter().map(|a| a.sin()).collect();
            let got = causal_attention(&qkv, h, &cos, &sin);
            let want = reference(&qkv, h, &cos, &sin);
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((*g as f64 - w).abs() < 1e-5, "{h:?} [{k}]: {g} vs {w}");
            }
        }
    }
}
