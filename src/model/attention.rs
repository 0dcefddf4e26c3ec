//! Grouped-query self-attention with RoPE and a causal mask. Shapes: hidden `[b*s, hidden]`;
//! heads `[b, h, s, head_dim]`.

use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor, TensorData};

use super::{Linear, Rope, from_host, on_host, to_host};
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
}

/// Query rows per chunk of the causal attention below.
const ATTN_CHUNK: usize = 64;

/// Causal scaled-dot-product attention, `[b, h, s, d]` each → `[b, h, s, d]`.
///
/// Short sequences use burn's fused kernel. Longer ones are cut into chunks of query rows, and
/// each chunk attends only to the keys up to its last row: the upper triangle of the score
/// matrix (about half the work) is never computed, which burn's kernel does not skip.
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [b, h, s, d] = q.dims();
    if s <= ATTN_CHUNK {
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
        // Key j is hidden from query row c0+i when j > c0+i (only inside the diagonal block).
        let mask: Vec<bool> = (0..rows)
            .flat_map(|i| (0..c1).map(move |j| j > c0 + i))
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
        let qkv = self.qkv.forward(x)?;
        let device = qkv.device();
        if on_host(&device) {
            let (cos, sin) = rope.host_tables();
            let heads = Heads {
                b,
                s,
                n_heads: nh,
                n_kv_heads: nkv,
                head_dim: hd,
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
        Ok(causal_attention(q, k, v)
            .swap_dims(1, 2)
            .reshape([b * s, nh * hd]))
    }

    /// Output features of q, and of k (= of v).
    pub fn q_k_widths(&self) -> (usize, usize) {
        (
            self.n_heads * self.head_dim,
            self.n_kv_heads * self.head_dim,
        )
    }
}
