//! The backward of a dense decoder block on the host, from pare's CPU kernels
//! ([`crate::kernels::backward`]): the same vector-Jacobian product as [`DecoderBlock::vjp`] on
//! burn's autodiff device, several times faster (faer's GEMMs, no recorded graph). The forward is
//! recomputed from the block input with the forward kernels, keeping what the backward reads
//! (both norms' inputs, the q|k|v rows, the attention output, gate|up and SiLU·up); the
//! attention's probabilities are recomputed per head in the backward rather than kept.
//!
//! MoE blocks are not covered (`None`); the gradient pass runs them on the autodiff device.

use super::block::{DecoderBlock, Ffn};
use super::{Linear, Rope};
use crate::error::{PareError, Result};
use crate::id::{LinearRole, MlpPart};
use crate::kernels::attention::{Heads, causal_attention};
use crate::kernels::backward::{
    attention_backward, matmul_nn, matmul_tn, rms_norm_backward, silu_mul_backward,
};
use crate::kernels::elementwise::{head_rms_norm, rms_norm, silu_mul};
use crate::kernels::gemm::linear;
use crate::matrix::Matrix;

use super::grad::BlockGrads;

/// `x·Wᵀ + b` of a host linear, `[t, out]`.
fn forward(l: &Linear, x: &[f32], t: usize) -> Vec<f32> {
    let mut y = vec![0f32; t * l.w.rows];
    linear(x, &l.w.data, l.w.rows, l.bias.as_deref(), &mut y, false);
    y
}

/// Rows `r0..r1` of a row-major `[_, cols]` gradient.
fn rows(g: &[f32], cols: usize, r0: usize, r1: usize) -> Matrix {
    Matrix::from_vec(r1 - r0, cols, g[r0 * cols..r1 * cols].to_vec())
}

/// The per-head RMSNorm backward of Qwen3's q_norm/k_norm, for the `heads` slices of `hd` values
/// from column `col` of every row: `pre` are the values before the norm, `dy` the gradient after
/// it; the gradient before it replaces `dy` in place.
fn head_norm_backward(
    pre: &[f32],
    dy: &mut [f32],
    width: usize,
    col: usize,
    heads: usize,
    w: &[f32],
    eps: f32,
) {
    let hd = w.len();
    let t = pre.len() / width.max(1);
    let gather = |src: &[f32]| -> Vec<f32> {
        (0..t)
            .flat_map(|p| {
                src[p * width + col..p * width + col + heads * hd]
                    .iter()
                    .copied()
            })
            .collect()
    };
    let (x, g) = (gather(pre), gather(dy));
    let mut dx = vec![0f32; x.len()];
    rms_norm_backward(&x, w, eps, &g, &mut dx);
    for p in 0..t {
        dy[p * width + col..p * width + col + heads * hd]
            .copy_from_slice(&dx[p * heads * hd..(p + 1) * heads * hd]);
    }
}

impl DecoderBlock {
    /// [`DecoderBlock::vjp`] on the host for a dense block held on the host device: input `x`
    /// and output gradient `g` are `[seq, hidden]` row-major. `None` for an MoE block.
    pub fn vjp_host(
        &self,
        x: &[f32],
        g: &[f32],
        seq: usize,
        rope: &Rope,
        roles: &[LinearRole],
    ) -> Result<Option<BlockGrads>> {
        let Ffn::Dense(mlp) = &self.ffn else {
            return Ok(None);
        };
        let a = &self.attn;
        let (t, d) = (seq, self.input_norm.host().len());
        let (nh, nkv, hd) = (a.n_heads, a.n_kv_heads, a.head_dim);
        let width = (nh + 2 * nkv) * hd;
        let f = mlp.ffn;
        if x.len() != t * d || g.len() != t * d || a.qkv.w.rows != width || a.qkv.w.cols != d {
            return Err(PareError::Internal(format!(
                "vjp_host: {} input and {} gradient values for {t} tokens of width {d}",
                x.len(),
                g.len()
            )));
        }
        let (cos, sin) = rope.host_tables();
        let heads = Heads {
            b: 1,
            s: t,
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            window: a.window,
        };
        let eps1 = self.input_norm.eps() as f32;
        let eps2 = self.post_norm.eps() as f32;
        // Forward, keeping what the backward reads.
        let xn1 = rms_norm(x, self.input_norm.host(), eps1);
        let qkv_pre = forward(&a.qkv, &xn1, t);
        let mut qkv = qkv_pre.clone();
        if let Some((qn, kn)) = &a.qk_norm {
            let e = qn.eps() as f32;
            head_rms_norm(&mut qkv, width, 0, nh, qn.host(), e);
            head_rms_norm(&mut qkv, width, nh * hd, nkv, kn.host(), kn.eps() as f32);
        }
        let attn = causal_attention(&qkv, heads, cos, sin);
        let mut h1 = x.to_vec();
        linear(
            &attn,
            &a.o.w.data,
            a.o.w.rows,
            a.o.bias.as_deref(),
            &mut h1,
            true,
        );
        let xn2 = rms_norm(&h1, self.post_norm.host(), eps2);
        let gu = forward(&mlp.gate_up, &xn2, t);
        let act = silu_mul(&gu, f);
        // Backward.
        let mut d_act = vec![0f32; t * f];
        matmul_nn(g, &mlp.down.w.data, t, d, f, &mut d_act, false);
        let dw_down = matmul_tn(g, &act, t, d, f);
        let dgu = silu_mul_backward(&gu, &d_act, f);
        let dw_gu = matmul_tn(&dgu, &xn2, t, 2 * f, d);
        let mut d_xn2 = vec![0f32; t * d];
        matmul_nn(&dgu, &mlp.gate_up.w.data, t, 2 * f, d, &mut d_xn2, false);
        let mut dh1 = g.to_vec();
        rms_norm_backward(&h1, self.post_norm.host(), eps2, &d_xn2, &mut dh1);
        let mut d_attn = vec![0f32; t * nh * hd];
        matmul_nn(&dh1, &a.o.w.data, t, d, nh * hd, &mut d_attn, false);
        let dw_o = matmul_tn(&dh1, &attn, t, d, nh * hd);
        let mut dqkv = attention_backward(&qkv, &d_attn, heads, cos, sin);
        if let Some((qn, kn)) = &a.qk_norm {
            head_norm_backward(
                &qkv_pre,
                &mut dqkv,
                width,
                0,
                nh,
                qn.host(),
                qn.eps() as f32,
            );
            head_norm_backward(
                &qkv_pre,
                &mut dqkv,
                width,
                nh * hd,
                nkv,
                kn.host(),
                kn.eps() as f32,
            );
        }
        let dw_qkv = matmul_tn(&dqkv, &xn1, t, width, d);
        let mut d_xn1 = vec![0f32; t * d];
        matmul_nn(&dqkv, &a.qkv.w.data, t, width, d, &mut d_xn1, false);
        let mut dx = dh1;
        rms_norm_backward(x, self.input_norm.host(), eps1, &d_xn1, &mut dx);
        let (qo, kvo) = (nh * hd, nkv * hd);
        let mut linears = Vec::with_capacity(roles.len());
        for &role in roles {
            let m = match role {
                LinearRole::Q => rows(&dw_qkv, d, 0, qo),
                LinearRole::K => rows(&dw_qkv, d, qo, qo + kvo),
                LinearRole::V => rows(&dw_qkv, d, qo + kvo, qo + 2 * kvo),
                LinearRole::O => Matrix::from_vec(d, nh * hd, dw_o.clone()),
                LinearRole::Mlp(MlpPart::Gate) => rows(&dw_gu, d, 0, f),
                LinearRole::Mlp(MlpPart::Up) => rows(&dw_gu, d, f, 2 * f),
                LinearRole::Mlp(MlpPart::Down) => Matrix::from_vec(d, f, dw_down.clone()),
                other => {
                    return Err(PareError::Internal(format!(
                        "vjp_host: a dense block has no {other:?} linear"
                    )));
                }
            };
            linears.push((role, m));
        }
        Ok(Some(BlockGrads { input: dx, linears }))
    }
}

impl super::Ends {
    /// [`super::grad::HeadLoss::loss_and_grad`] on the host, reading this model's own final norm
    /// and head (no copy): the mean next-token cross-entropy of one sequence and its gradient at
    /// the final hidden states `h` (`[seq, hidden]`). With `p = softmax(logits)`, the logits'
    /// gradient is `(p − onehot(next)) / (seq − 1)` on positions `0..seq − 1` and 0 on the last.
    pub fn loss_and_grad_host(&self, h: &[f32], ids: &[u32]) -> Result<(f64, Vec<f32>)> {
        let s = ids.len();
        let d = self.hidden;
        let v = self.head.w.rows;
        if s < 2 || h.len() != s * d {
            return Err(PareError::Internal(format!(
                "loss_and_grad_host: {} hidden values for {s} tokens of width {d}",
                h.len()
            )));
        }
        if let Some(&t) = ids.iter().find(|&&t| t as usize >= v) {
            return Err(PareError::Internal(format!(
                "token id {t} is outside the head's {v} outputs"
            )));
        }
        let eps = self.norm.eps() as f32;
        let hn = rms_norm(&h[..(s - 1) * d], self.norm.host(), eps);
        let mut logits = forward(&self.head, &hn, s - 1);
        let n = (s - 1) as f64;
        let mut loss = 0f64;
        for (p, row) in logits.chunks_exact_mut(v).enumerate() {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|x| ((*x - m) as f64).exp()).sum();
            let target = ids[p + 1] as usize;
            loss -= (row[target] - m) as f64 - sum.ln();
            for x in row.iter_mut() {
                *x = ((((*x - m) as f64).exp() / sum) / n) as f32;
            }
            row[target] -= (1.0 / n) as f32;
        }
        let mut dh = vec![0f32; s * d];
        self.head_backward(&h[..(s - 1) * d], &logits, &mut dh[..(s - 1) * d]);
        Ok((loss / n, dh))
    }

    /// The gradient at the hidden states `h` (`[rows, hidden]`) of the final norm and head,
    /// given the logits' gradient `dlogits` (`[rows, vocab]`), into `dh`.
    fn head_backward(&self, h: &[f32], dlogits: &[f32], dh: &mut [f32]) {
        let (d, v) = (self.hidden, self.head.w.rows);
        let rows = h.len() / d.max(1);
        let mut d_hn = vec![0f32; rows * d];
        matmul_nn(dlogits, &self.head.w.data, rows, v, d, &mut d_hn, false);
        rms_norm_backward(h, self.norm.host(), self.norm.eps() as f32, &d_hn, dh);
    }

    /// Knowledge distillation at the head: the mean over positions of
    /// `KL(p_teacher ‖ p_student)` (nats), with `p = softmax(head(norm(h)))`, of one sequence's
    /// student hidden states `h` against the teacher's `teacher` (both `[seq, hidden]`), and its
    /// gradient at `h`: the logits' gradient is `(p_student − p_teacher) / seq`.
    pub fn distill_loss_and_grad_host(
        &self,
        h: &[f32],
        teacher: &[f32],
    ) -> Result<(f64, Vec<f32>)> {
        let d = self.hidden;
        let v = self.head.w.rows;
        let s = h.len() / d.max(1);
        if s == 0 || h.len() != s * d || teacher.len() != h.len() {
            return Err(PareError::Internal(format!(
                "distill_loss_and_grad_host: {} student and {} teacher hidden values of width {d}",
                h.len(),
                teacher.len()
            )));
        }
        let eps = self.norm.eps() as f32;
        let mut ls = forward(&self.head, &rms_norm(h, self.norm.host(), eps), s);
        let lt = forward(&self.head, &rms_norm(teacher, self.norm.host(), eps), s);
        let n = s as f64;
        let mut loss = 0f64;
        let log_softmax = |row: &[f32]| -> Vec<f64> {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = row
                .iter()
                .map(|x| ((*x - m) as f64).exp())
                .sum::<f64>()
                .ln();
            row.iter().map(|x| (*x - m) as f64 - lse).collect()
        };
        for (rs, rt) in ls.chunks_exact_mut(v).zip(lt.chunks_exact(v)) {
            let (qs, qt) = (log_softmax(rs), log_softmax(rt));
            for ((x, a), b) in rs.iter_mut().zip(&qs).zip(&qt) {
                let pt = b.exp();
                loss += pt * (b - a);
                *x = ((a.exp() - pt) / n) as f32;
            }
        }
        let mut dh = vec![0f32; s * d];
        self.head_backward(h, &ls, &mut dh);
        Ok((loss / n, dh))
    }
}
