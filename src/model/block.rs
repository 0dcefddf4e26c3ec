//! One decoder block: pre-norm attention (GQA, RoPE, causal) and a SiLU-gated MLP or a top-k
//! routed mixture of experts. Shapes: hidden `[batch, seq, hidden]`; taps see `[tokens, d_in]`.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, TensorData};

use super::{Linear, RmsNorm, Rope, Tap, TapPoint, to_host};
use crate::error::Result;

/// Grouped-query self-attention. q, k and v run as one fused GEMM (`qkv`, outputs in q|k|v order).
#[derive(Clone)]
pub struct Attention {
    pub qkv: Linear,
    pub o: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// SiLU-gated MLP: `down(silu(gate(x)) * up(x))`; gate and up run as one fused GEMM
/// (`gate_up`, outputs in gate|up order).
#[derive(Clone)]
pub struct Mlp {
    pub gate_up: Linear,
    pub ffn: usize,
    pub down: Linear,
}

/// Mixtral-style sparse MoE: softmax router, top-k, renormalised weights.
#[derive(Clone)]
pub struct Moe {
    pub router: Linear,
    pub experts: Vec<Mlp>,
    pub top_k: usize,
}

/// The feed-forward half of a block.
#[derive(Clone)]
pub enum Ffn {
    Dense(Mlp),
    Moe(Moe),
}

/// A whole decoder block.
#[derive(Clone)]
pub struct DecoderBlock {
    pub input_norm: RmsNorm,
    pub attn: Attention,
    pub post_norm: RmsNorm,
    pub ffn: Ffn,
}

fn observe(tap: &mut dyn Tap, p: TapPoint, x: &Tensor<2>) -> Result<()> {
    if tap.wants(p) {
        tap.observe(p, x)
    } else {
        Ok(())
    }
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
    /// `x`: normed hidden `[b*s, hidden]` → `[b*s, hidden]`.
    fn forward(
        &self,
        x: Tensor<2>,
        b: usize,
        s: usize,
        rope: &Rope,
        tap: &mut dyn Tap,
    ) -> Result<Tensor<2>> {
        observe(tap, TapPoint::AttnIn, &x)?;
        let a = self.attend(x, b, s, rope);
        observe(tap, TapPoint::AttnOutIn, &a)?;
        Ok(self.o.forward(a))
    }

    /// Everything before the output projection: `x` `[b*s, hidden]` → the o-projection's input
    /// `[b*s, heads*head_dim]`.
    pub fn attend(&self, x: Tensor<2>, b: usize, s: usize, rope: &Rope) -> Tensor<2> {
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let qkv = self.qkv.forward(x);
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
        causal_attention(q, k, v)
            .swap_dims(1, 2)
            .reshape([b * s, nh * hd])
    }
}

impl Mlp {
    fn forward(
        &self,
        x: Tensor<2>,
        tap: &mut dyn Tap,
        at: TapPoint,
        down_at: TapPoint,
    ) -> Result<Tensor<2>> {
        observe(tap, at, &x)?;
        let a = self.activation(x);
        observe(tap, down_at, &a)?;
        Ok(self.down.forward(a))
    }

    /// `silu(gate(x)) * up(x)`: the down projection's input, `[tokens, ffn]`.
    pub fn activation(&self, x: Tensor<2>) -> Tensor<2> {
        let gu = self.gate_up.forward(x);
        let t = gu.dims()[0];
        let f = self.ffn;
        silu(gu.clone().slice([0..t, 0..f])) * gu.slice([0..t, f..2 * f])
    }
}

impl Moe {
    /// Routes every token to its top-k experts; routing is decided on the host (it is tiny).
    fn forward(&self, x: Tensor<2>, tap: &mut dyn Tap) -> Result<Tensor<2>> {
        observe(tap, TapPoint::MlpIn, &x)?;
        let [t, h] = x.dims();
        let e = self.experts.len();
        let probs = to_host(softmax(self.router.forward(x.clone()), 1))?;
        let mut tokens: Vec<Vec<i64>> = vec![Vec::new(); e];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); e];
        let mut order: Vec<usize> = (0..e).collect();
        for tok in 0..t {
            let p = &probs[tok * e..(tok + 1) * e];
            // Descending probability; ties keep the lower expert index first (torch.topk on CPU).
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let chosen = &order[..self.top_k];
            let total: f32 = chosen.iter().map(|&i| p[i]).sum();
            for &i in chosen {
                tokens[i].push(tok as i64);
                weights[i].push(p[i] / total);
            }
        }
        let device = x.device();
        let mut out = Tensor::<2>::zeros([t, h], &device);
        for (i, expert) in self.experts.iter().enumerate() {
            let n = tokens[i].len();
            if n == 0 {
                continue;
            }
            let idx = Tensor::<1, Int>::from_data(TensorData::new(tokens[i].clone(), [n]), &device);
            let xe = x.clone().select(0, idx.clone());
            let ye = expert.forward(xe, tap, TapPoint::ExpertIn(i), TapPoint::ExpertDownIn(i))?;
            let w = Tensor::<2>::from_data(TensorData::new(weights[i].clone(), [n, 1]), &device);
            out = out.select_assign(0, idx, ye * w, IndexingUpdateOp::Add);
        }
        Ok(out)
    }
}

impl DecoderBlock {
    /// `hidden`: `[batch, seq, hidden]` → same shape. `tap` sees every linear's input.
    pub fn forward(&self, hidden: Tensor<3>, rope: &Rope, tap: &mut dyn Tap) -> Result<Tensor<3>> {
        let [b, s, d] = hidden.dims();
        let h = hidden.reshape([b * s, d]);
        let a = self
            .attn
            .forward(self.input_norm.forward(h.clone()), b, s, rope, tap)?;
        let h = h + a;
        let x = self.post_norm.forward(h.clone());
        let f = match &self.ffn {
            Ffn::Dense(mlp) => mlp.forward(x, tap, TapPoint::MlpIn, TapPoint::MlpDownIn)?,
            Ffn::Moe(moe) => moe.forward(x, tap)?,
        };
        Ok((h + f).reshape([b, s, d]))
    }
}
