//! Grouped-query self-attention with RoPE and a causal mask. Shapes: hidden `[b*s, hidden]`;
//! heads `[b, h, s, head_dim]`.

use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};

use super::{Linear, RmsNorm, Rope, from_host, on_host, to_host};
use crate::error::Result;
use crate::kernels::attention::Heads;

/// Grouped-query self-attention. q, k and v run as one fused GEMM (`qkv`, outputs in q|k|v order).
#[derive(Clone)]
pub struct Attention {
    pub qkv: Linear,
    pub o: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window (keys `i − w < j ≤ i` for query `i`), `None` for full causal attention.
    pub window: Option<usize>,
    /// Qwen3: RMSNorms over each head's `head_dim` values of q and of k, applied before RoPE.
    pub qk_norm: Option<(RmsNorm, RmsNorm)>,
}

/// Query rows per chunk of the causal attention below.
const ATTN_CHUNK: usize = 64;

/// Causal scaled-dot-product attention, `[b, h, s, d]` each → `[b, h, s, d]`, with an optional
/// sliding window `w` (query `i` sees keys `i − w < j ≤ i`).
///
/// Short sequences use burn's fused kernel (when the window cannot bind). Longer ones are cut
/// into chunks of query rows, and each chunk attends only to the keys up to its last row: the
/// upper triangle of the score matrix (about half the work) is never computed, which burn's
/// kernel does not skip.
pub fn causal_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    window: Option<usize>,
) -> Tensor<4> {
    let [b, h, s, d] = q.dims();
    let w = window.unwrap_or(usize::MAX).max(1);
    if s <= ATTN_CHUNK && s <= w {
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        return attention(q, k, v, None, None, opts);
    }
    let device = q.device();
    let scale = 1.0 / (d as f64).sqrt();
    let mut outs = Vec::with_capacity(s.div_ceil(ATTN_CHUNK));
    for c0 in (0..s).step_by(ATTN_CHUNK) {
        let c1 = (c0 + ATTN_CHUNK).min(s);
        let rows = c1 - c0;
        let qc = q.clone().slice([0..b, 0..h, c0..c1, 0..d]);
        let kc = k.clone().slice([0..b, 0..h, 0..c1, 0..d]);
        let vc = v.clone().slice([0..b, 0..h, 0..c1, 0..d]);
        let scores = qc.matmul(kc.swap_dims(2, 3)).mul_scalar(scale);
        // Key j is hidden from query row c0+i when j > c0+i (only inside the diagonal block),
        // or when it is outside the window (j + w ≤ c0+i).
        let mask: Vec<bool> = (0..rows)
            .flat_map(|i| (0..c1).map(move |j| j > c0 + i || j.saturating_add(w) <= c0 + i))
            .collect();
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask, [rows, c1]), &device)
            .reshape([1, 1, rows, c1])
            .expand([b, h, rows, c1]);
        let p = softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3);
        outs.push(p.matmul(vc));
    }
    Tensor::cat(outs, 2)
}

impl Attention {
    /// Everything before the output projection: normed `x` `[b*s, hidden]` → the
    /// o-projection's input `[b*s, heads*head_dim]`.
    pub fn attend(&self, x: Tensor<2>, b: usize, s: usize, rope: &Rope) -> Result<Tensor<2>> {
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let qkv = self.qkv_normed(self.qkv.forward(x)?)?;
        let device = qkv.device();
        if on_host(&device) {
            let (cos, sin) = rope.host_tables();
            let heads = Heads {
                b,
                s,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
                window: self.window,
            };
            let out = crate::kernels::attention::causal_attention(&to_host(qkv)?, heads, cos, sin);
            return Ok(from_host(out, [b * s, nh * hd], &device));
        }
        let (qo, kvo, t) = (nh * hd, nkv * hd, b * s);
        let split = |t0: usize, t1: usize, heads: usize| -> Tensor<4> {
            qkv.clone()
                .slice([0..t, t0..t1])
                .reshape([b, s, heads, hd])
                .swap_dims(1, 2)
        };
        let q = rope.apply(split(0, qo, nh));
        let k = rope.apply(split(qo, qo + kvo, nkv));
        let v = split(qo + kvo, qo + 2 * kvo, nkv);
        let (k, v) = if nkv < nh {
            let rep = nh / nkv;
            let expand = |t: Tensor<4>| -> Tensor<4> {
                t.reshape([b, nkv, 1, s, hd])
                    .expand([b, nkv, rep, s, hd])
                    .reshape([b, nh, s, hd])
            };
            (expand(k), expand(v))
        } else {
            (k, v)
        };
        Ok(causal_attention(q, k, v, self.window)
            .swap_dims(1, 2)
            .reshape([b * s, nh * hd]))
    }

    /// The fused q|k|v output `[tokens, (nh + 2·nkv)·hd]` with q_norm and k_norm applied per
    /// head (unchanged without them).
    fn qkv_normed(&self, qkv: Tensor<2>) -> Result<Tensor<2>> {
        let Some((qn, kn)) = &self.qk_norm else {
            return Ok(qkv);
        };
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let [t, width] = qkv.dims();
        let device = qkv.device();
        if on_host(&device) {
            let mut x = to_host(qkv)?;
            let eps = qn.eps() as f32;
            crate::kernels::elementwise::head_rms_norm(&mut x, width, 0, nh, qn.host(), eps);
            crate::kernels::elementwise::head_rms_norm(&mut x, width, nh * hd, nkv, kn.host(), eps);
            return Ok(from_host(x, [t, width], &device));
        }
        let per_head = |norm: &RmsNorm, c0: usize, heads: usize| -> Result<Tensor<2>> {
            let part = qkv.clone().slice([0..t, c0..c0 + heads * hd]);
            Ok(norm
                .forward(part.reshape([t * heads, hd]))?
                .reshape([t, heads * hd]))
        };
        let q = per_head(qn, 0, nh)?;
        let k = per_head(kn, nh * hd, nkv)?;
        let v = qkv.clone().slice([0..t, (nh + nkv) * hd..width]);
        Ok(Tensor::cat(vec![q, k, v], 1))
    }

    /// Output features of q, and of k (= of v).
    pub fn q_k_widths(&self) -> (usize, usize) {
        (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The burn path (used off the host) with and without a sliding window against a direct
    /// softmax over the keys each query may see: short sequences (burn's fused kernel or, when
    /// the window binds, the chunked path) and long ones (chunks of 64 queries).
    #[test]
    fn burn_path_masks_causally_and_by_window() {
        let device = burn::tensor::Device::flex();
        let (b, h, d) = (1, 2, 4);
        for (s, window) in [
            (40, None),
            (40, Some(5)),
            (100, None),
            (100, Some(64)),
            (100, Some(7)),
            (30, Some(64)),
        ] {
            let n = b * h * s * d;
            let fill = |seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i * 37 + seed * 11) % 29) as f32 - 14.0) / 9.0)
                    .collect()
            };
            let (qv, kv, vv) = (fill(1), fill(2), fill(3));
            let t = |v: &Vec<f32>| {
                Tensor::<4>::from_data(TensorData::new(v.clone(), [b, h, s, d]), &device)
            };
            let got =
                to_host(causal_attention(t(&qv), t(&kv), t(&vv), window).reshape([b * h * s, d]))
                    .unwrap();
            for hh in 0..h {
                for i in 0..s {
                    let lo = window.map_or(0, |w| (i + 1).saturating_sub(w));
                    let at = |x: &Vec<f32>, j: usize, c: usize| x[(hh * s + j) * d + c] as f64;
                    let sc: Vec<f64> = (lo..=i)
                        .map(|j| {
                            (0..d).map(|c| at(&qv, i, c) * at(&kv, j, c)).sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|x| (x - m).exp()).collect();
                    let l: f64 = e.iter().sum();
                    for c in 0..d {
                        let want: f64 =
                            (lo..=i).zip(&e).map(|(j, ej)| ej / l * at(&vv, j, c)).sum();
                        let g = got[(hh * s + i) * d + c] as f64;
                        assert!(
                            (g - want).abs() < 1e-5,
                            "s {s} window {window:?} head {hh} query {i}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
