//! Backward through one block, and through the final norm and head, on burn's autodiff device:
//! the pieces of the streamed gradient pass ([`crate::pipeline::gradients`]).
//!
//! Off the host, every layer of the forward is made of burn ops (the host kernels are bypassed:
//! [`super::on_host`] is false for the autodiff device), so burn records the same forward the
//! model runs everywhere else and differentiates it. A block is rebuilt on the autodiff device,
//! its linears' weights become gradient-keeping leaves ([`DecoderBlock::track_linears`]), its
//! input is a leaf, and the vector-Jacobian product with the gradient arriving from above is the
//! gradient of the surrogate `Σ y ⊙ g` ([`DecoderBlock::vjp`]).
//!
//! MoE blocks: the routing (softmax and top-k) is read back to the host and enters the expert
//! mixture as constants, so the router gets no gradient and the gradient passed to the block
//! below lacks the router's path. Expert weights get their gradient given the routing.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};

use super::block::{DecoderBlock, Ffn};
use super::{Ends, Linear, NoTap, RmsNorm, Rope, from_host, to_host};
use crate::error::{PareError, Result};
use crate::id::LinearRole;
use crate::matrix::Matrix;

/// The autodiff form of `device`.
pub fn autodiff_device(device: &Device) -> Device {
    device.clone().autodiff()
}

impl Linear {
    /// Makes the device weight a leaf that keeps its gradient. Only off the host, on an
    /// autodiff device.
    fn track(&mut self) -> Result<()> {
        match self.on_device.take() {
            Some((w, b)) if w.is_autodiff() => {
                self.on_device = Some((w.require_grad(), b));
                Ok(())
            }
            other => {
                self.on_device = other;
                Err(PareError::Internal(
                    "a linear is tracked for gradients only on an autodiff device".into(),
                ))
            }
        }
    }

    /// The gradient of output features `offset..offset + rows`, `[rows, in]` (Hugging Face's
    /// orientation; the device keeps `[in, out]`); `None` when the weight was not used.
    fn weight_grad(&self, grads: &Gradients, offset: usize, rows: usize) -> Result<Option<Matrix>> {
        let (w, _) = self.on_device.as_ref().ok_or_else(|| {
            PareError::Internal("weight_grad: the linear has no device weight".into())
        })?;
        let (d_in, d_out) = (self.w.cols, self.w.rows);
        let Some(g) = w.grad(grads) else {
            // The weight took no part in the forward (an MoE expert no token was routed to).
            return Ok(None);
        };
        let t = to_host(g)?;
        if t.len() != d_in * d_out || offset + rows > d_out {
            return Err(PareError::Internal(format!(
                "weight_grad: rows {offset}..{} of a [{d_out}, {d_in}] gradient",
                offset + rows
            )));
        }
        let mut out = vec![0f32; rows * d_in];
        for (c, col) in t.chunks_exact(d_out).enumerate() {
            for r in 0..rows {
                out[r * d_in + c] = col[offset + r];
            }
        }
        Ok(Some(Matrix::from_vec(rows, d_in, out)))
    }
}

/// One block's backward for one sequence: the gradient at its input and at each requested
/// linear's weight.
pub struct BlockGrads {
    /// `∂L/∂x`, `[seq, hidden]` row-major.
    pub input: Vec<f32>,
    /// `(role, ∂L/∂W)` with `W` `[out, in]`, in the order asked.
    pub linears: Vec<(LinearRole, Matrix)>,
}

impl DecoderBlock {
    /// Makes every linear's weight a gradient-keeping leaf (the block must live on an autodiff
    /// device).
    pub fn track_linears(&mut self) -> Result<()> {
        self.attn.qkv.track()?;
        self.attn.o.track()?;
        match &mut self.ffn {
            Ffn::Dense(m) => {
                m.gate_up.track()?;
                m.down.track()?;
            }
            Ffn::Moe(moe) => {
                for m in &mut moe.experts {
                    m.gate_up.track()?;
                    m.down.track()?;
                }
            }
        }
        Ok(())
    }

    /// Vector-Jacobian product of the block at input `x` (`[seq, hidden]`, one sequence) with
    /// the output gradient `g` (same shape): the input's gradient and the weight gradients of
    /// `roles`. The block must be on an autodiff device with [`Self::track_linears`] applied;
    /// `rope` must be on the same device.
    pub fn vjp(
        &mut self,
        x: Vec<f32>,
        g: Vec<f32>,
        seq: usize,
        rope: &Rope,
        roles: &[LinearRole],
    ) -> Result<BlockGrads> {
        let device = rope.device();
        if !device.is_autodiff() {
            return Err(PareError::Internal(
                "vjp: the block is not on an autodiff device".into(),
            ));
        }
        let d = x.len() / seq.max(1);
        if x.len() != seq * d || g.len() != x.len() {
            return Err(PareError::Internal(format!(
                "vjp: input of {} and gradient of {} values for {seq} tokens",
                x.len(),
                g.len()
            )));
        }
        let xt = from_host(x, [1, seq, d], &device).require_grad();
        let gt = from_host(g, [1, seq, d], &device);
        let y = self.forward(xt.clone(), rope, &mut NoTap)?;
        let surrogate = (y * gt).sum();
        if !surrogate.is_tracked() {
            return Err(PareError::Internal(
                "vjp: the block's output is not tracked by autodiff".into(),
            ));
        }
        let grads = surrogate.backward();
        let input = xt
            .grad(&grads)
            .ok_or_else(|| PareError::Internal("vjp: no gradient at the block input".into()))?;
        let input = to_host(input.reshape([seq, d]))?;
        let mut linears = Vec::with_capacity(roles.len());
        for &role in roles {
            let (lin, offset, rows) = self.locate(role)?;
            let cols = lin.w.cols;
            let g = match (lin.weight_grad(&grads, offset, rows)?, role) {
                (Some(g), _) => g,
                // An expert no token of this sequence was routed to: its gradient is zero.
                (None, LinearRole::Expert { .. }) => Matrix::zeros(rows, cols),
                (None, _) => {
                    return Err(PareError::Internal(format!(
                        "backward left no gradient for the {role:?} weight"
                    )));
                }
            };
            linears.push((role, g));
        }
        Ok(BlockGrads { input, linears })
    }
}

/// The final norm and LM head on the autodiff device, for the loss and its gradient at the last
/// block's output.
pub struct HeadLoss {
    norm: RmsNorm,
    head: Linear,
    device: Device,
}

impl HeadLoss {
    /// Copies `ends`' norm and head onto `device` (an autodiff device).
    pub fn new(ends: &Ends, device: &Device) -> Self {
        Self {
            norm: RmsNorm::new(ends.norm.host().to_vec(), ends.norm.eps(), device),
            head: Linear::new(&ends.head.w, ends.head.bias.clone(), device),
            device: device.clone(),
        }
    }

    /// The causal-LM loss of one sequence, mean next-token cross-entropy over positions
    /// `0..seq−1` (transformers' `labels = input_ids`), and its gradient at the final hidden
    /// states `h` (`[seq, hidden]`, before the final norm).
    pub fn loss_and_grad(&self, h: Vec<f32>, ids: &[u32]) -> Result<(f64, Vec<f32>)> {
        let s = ids.len();
        if s < 2 || h.len() % s != 0 {
            return Err(PareError::Internal(format!(
                "loss_and_grad: {} hidden values for {s} tokens (need at least 2 tokens)",
                h.len()
            )));
        }
        let d = h.len() / s;
        let ht = from_host(h, [s, d], &self.device).require_grad();
        let logits = self.head.forward(self.norm.forward(ht.clone())?)?;
        let v = logits.dims()[1];
        let lp = log_softmax(logits.slice([0..s - 1, 0..v]), 1);
        let lp_tracked = lp.is_tracked();
        let targets: Vec<i64> = ids[1..].iter().map(|&t| t as i64).collect();
        let idx = Tensor::<2, Int>::from_data(TensorData::new(targets, [s - 1, 1]), &self.device);
        let loss = lp.gather(1, idx).sum().neg().div_scalar((s - 1) as f64);
        if !loss.is_tracked() {
            return Err(PareError::Internal(format!(
                "loss_and_grad: the loss is not tracked by autodiff (hidden tracked: {}, logits: {})",
                ht.is_tracked(),
                lp_tracked
            )));
        }
        let grads = loss.backward();
        let value = to_host(loss.detach().reshape([1, 1]))?
            .first()
            .copied()
            .unwrap_or(f32::NAN) as f64;
        let g = ht
            .grad(&grads)
            .ok_or_else(|| PareError::Internal("no gradient at the final hidden states".into()))?;
        Ok((value, to_host(g)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{Architecture, BlockWeights};
    use crate::config::HfConfig;
    use crate::id::MlpPart;

    fn tiny() -> (Architecture, BlockWeights) {
        let raw = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 16,
            "rms_norm_eps": 1e-5, "max_position_embeddings": 16, "tie_word_embeddings": true
        });
        let cfg = HfConfig::parse(&raw.to_string(), std::path::Path::new("config.json")).unwrap();
        let arch = Architecture::new(cfg);
        let mut k = 0usize;
        let mut next = || {
            k += 1;
            (((k * 7919) % 97) as f32 / 97.0 - 0.5) * 0.6
        };
        let linears = arch
            .linears(0)
            .into_iter()
            .map(|s| {
                let m = Matrix::from_vec(
                    s.rows,
                    s.cols,
                    (0..s.rows * s.cols).map(|_| next()).collect(),
                );
                (s, m, None)
            })
            .collect();
        let w = BlockWeights {
            block: 0,
            linears,
            input_norm: (0..8).map(|i| 1.0 + 0.05 * i as f32).collect(),
            post_norm: (0..8).map(|i| 0.9 + 0.03 * i as f32).collect(),
            qk_norm: None,
        };
        (arch, w)
    }

    /// A block input and an output gradient of `n` values each.
    fn input_and_gradient(n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..n).map(|i| ((i * 13 % 17) as f32 - 8.0) / 6.0).collect();
        let g = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
        (x, g)
    }

    /// `L(x) = Σ block(x) ⊙ g`: the vjp's input gradient and a weight gradient against central
    /// differences of the host forward (f64 differences of an f32 forward, so loose).
    #[test]
    fn vjp_matches_finite_differences() {
        let (arch, w) = tiny();
        let host = Device::flex();
        let ad = autodiff_device(&host);
        let seq = 5;
        let d = 8;
        let (x, g) = input_and_gradient(seq * d);
        let rope_ad = Rope::new(&arch.cfg, seq, &ad);
        let rope = Rope::new(&arch.cfg, seq, &host);
        let mut block = arch.build_block(&w, &ad).unwrap();
        block.track_linears().unwrap();
        let roles = [LinearRole::K, LinearRole::Mlp(MlpPart::Up)];
        let got = block
            .vjp(x.clone(), g.clone(), seq, &rope_ad, &roles)
            .unwrap();
        let f = |w: &BlockWeights, x: &[f32]| -> f64 {
            let b = arch.build_block(w, &host).unwrap();
            let y = b
                .forward(from_host(x.to_vec(), [1, seq, d], &host), &rope, &mut NoTap)
                .unwrap();
            let y = to_host(y.reshape([seq, d])).unwrap();
            y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let eps = 1e-2f32;
        for i in [0, 7, 19, 39] {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += eps;
            xm[i] -= eps;
            let fd = (f(&w, &xp) - f(&w, &xm)) / (2.0 * eps as f64);
            assert!(
                (fd - got.input[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                "x[{i}]: fd {fd} vjp {}",
                got.input[i]
            );
        }
        for (k, (role, gm)) in got.linears.iter().enumerate() {
            let li = w
                .linears
                .iter()
                .position(|(s, _, _)| s.id.role == *role)
                .unwrap();
            assert_eq!(
                (gm.rows, gm.cols),
                (w.linears[li].1.rows, w.linears[li].1.cols),
                "{k}"
            );
            for e in [0, 3, gm.data.len() - 1] {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp.linears[li].1.data[e] += eps;
                wm.linears[li].1.data[e] -= eps;
                let fd = (f(&wp, &x) - f(&wm, &x)) / (2.0 * eps as f64);
                assert!(
                    (fd - gm.data[e] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                    "{role:?}[{e}]: fd {fd} vjp {}",
                    gm.data[e]
                );
            }
        }
    }

    /// The host backward (pare's kernels) and burn's autodiff agree on the input and every
    /// weight gradient: plain GQA, with a sliding window, and with Qwen3's q/k norms.
    #[test]
    fn host_and_autodiff_vjp_agree() {
        let (arch, w) = tiny();
        let host = Device::flex();
        let ad = autodiff_device(&host);
        let seq = 70;
        let d = 8;
        let (x, g) = input_and_gradient(seq * d);
        let roles: Vec<LinearRole> = w.linears.iter().map(|(s, _, _)| s.id.role).collect();
        for variant in 0..3 {
            let setup = |b: &mut DecoderBlock, dev: &Device| match variant {
                1 => b.attn.window = Some(5),
                2 => {
                    let n = |k: f32| {
                        RmsNorm::new((0..4).map(|i| k + 0.1 * i as f32).collect(), 1e-6, dev)
                    };
                    b.attn.qk_norm = Some((n(0.8), n(1.2)));
                }
                _ => {}
            };
            let mut on_ad = arch.build_block(&w, &ad).unwrap();
            setup(&mut on_ad, &ad);
            on_ad.track_linears().unwrap();
            let want = on_ad
                .vjp(
                    x.clone(),
                    g.clone(),
                    seq,
                    &Rope::new(&arch.cfg, seq, &ad),
                    &roles,
                )
                .unwrap();
            let mut on_host = arch.build_block(&w, &host).unwrap();
            setup(&mut on_host, &host);
            let got = on_host
                .vjp_host(&x, &g, seq, &Rope::new(&arch.cfg, seq, &host), &roles)
                .unwrap()
                .unwrap();
            let close = |a: &[f32], b: &[f32], what: &str| {
                let num: f64 = a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum();
                let den: f64 = b.iter().map(|q| (*q as f64).powi(2)).sum();
                assert!(
                    (num / den).sqrt() < 1e-5,
                    "variant {variant} {what}: rel {}",
                    (num / den).sqrt()
                );
            };
            close(&got.input, &want.input, "input");
            for ((r, a), (_, b)) in got.linears.iter().zip(&want.linears) {
                assert_eq!((a.rows, a.cols), (b.rows, b.cols), "{r:?}");
                close(&a.data, &b.data, &format!("{r:?}"));
            }
        }
    }

    /// A tied 11-token head over width `d` with its final norm, and `s` positions of hidden
    /// states for it.
    fn head_and_hidden(d: usize, s: usize) -> (Ends, Vec<f32>) {
        let (host, v) = (Device::flex(), 11);
        let head: Vec<f32> = (0..v * d)
            .map(|i| ((i * 29 % 23) as f32 - 11.0) / 9.0)
            .collect();
        let ends = Ends::new(
            Matrix::from_vec(v, d, head.clone()),
            RmsNorm::new((0..d).map(|i| 0.7 + 0.05 * i as f32).collect(), 1e-5, &host),
            Linear::new(&Matrix::from_vec(v, d, head), None, &host),
            &host,
        );
        let h = (0..s * d)
            .map(|i| ((i * 7 % 19) as f32 - 9.0) / 5.0)
            .collect();
        (ends, h)
    }

    /// The head's loss and gradient on the host equal burn's autodiff of the same head.
    #[test]
    fn host_head_loss_matches_autodiff() {
        let ad = autodiff_device(&Device::flex());
        let (d, s) = (8, 6);
        let (ends, h) = head_and_hidden(d, s);
        let ids = [1u32, 4, 10, 0, 3, 7];
        let (l_ad, g_ad) = HeadLoss::new(&ends, &ad)
            .loss_and_grad(h.clone(), &ids)
            .unwrap();
        let (l_host, g_host) = ends.loss_and_grad_host(&h, &ids).unwrap();
        assert!((l_ad - l_host).abs() < 1e-5, "{l_ad} vs {l_host}");
        for (a, b) in g_host.iter().zip(&g_ad) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert!(
            g_host[(s - 1) * d..].iter().all(|x| *x == 0.0),
            "the last position predicts nothing"
        );
    }

    /// Distillation at the head: zero against itself, and its gradient matches central
    /// differences of the loss.
    #[test]
    fn host_distillation_matches_finite_differences() {
        let (d, s) = (8, 5);
        let (ends, h) = head_and_hidden(d, s);
        let teacher: Vec<f32> = (0..s * d)
            .map(|i| ((i * 11 % 17) as f32 - 8.0) / 4.0)
            .collect();
        let (l0, g0) = ends.distill_loss_and_grad_host(&teacher, &teacher).unwrap();
        assert!(l0.abs() < 1e-9 && g0.iter().all(|x| x.abs() < 1e-7), "{l0}");
        let (l, g) = ends.distill_loss_and_grad_host(&h, &teacher).unwrap();
        assert!(l > 0.01, "{l}");
        for j in [0usize, 9, 17, 39] {
            let e = 1e-2f32;
            let mut hp = h.clone();
            hp[j] += e;
            let mut hm = h.clone();
            hm[j] -= e;
            let lp = ends.distill_loss_and_grad_host(&hp, &teacher).unwrap().0;
            let lm = ends.distill_loss_and_grad_host(&hm, &teacher).unwrap().0;
            let fd = (lp - lm) / (2.0 * e as f64);
            assert!(
                (fd - g[j] as f64).abs() < 1e-3 * fd.abs().max(1e-2),
                "{j}: fd {fd} vs {}",
                g[j]
            );
        }
    }
}
