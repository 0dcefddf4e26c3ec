//! One decoder block: pre-norm attention (GQA, RoPE, causal) and a SiLU-gated MLP or a top-k
//! routed mixture of experts. Shapes: hidden `[batch, seq, hidden]`; taps see `[tokens, d_in]`.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use super::{Linear, RmsNorm, Rope, Tap, TapPoint, to_host};
use crate::error::Result;

/// Grouped-query self-attention.
#[derive(Clone)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// SiLU-gated MLP: `down(silu(gate(x)) * up(x))`.
#[derive(Clone)]
pub struct Mlp {
    pub gate: Linear,
    pub up: Linear,
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
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let q = self
            .q
            .forward(x.clone())
            .reshape([b, s, nh, hd])
            .swap_dims(1, 2);
        let k = self
            .k
            .forward(x.clone())
            .reshape([b, s, nkv, hd])
            .swap_dims(1, 2);
        let v = self.v.forward(x).reshape([b, s, nkv, hd]).swap_dims(1, 2);
        let q = rope.apply(q);
        let k = rope.apply(k);
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
        let opts = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: true,
        };
        let a = attention(q, k, v, None, None, opts);
        let a = a.swap_dims(1, 2).reshape([b * s, nh * hd]);
        observe(tap, TapPoint::AttnOutIn, &a)?;
        Ok(self.o.forward(a))
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
        let a = silu(self.gate.forward(x.clone())) * self.up.forward(x);
        observe(tap, down_at, &a)?;
        Ok(self.down.forward(a))
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
