//! The decoder in burn: embedding → blocks → norm → head, run one block at a time over a batch of
//! sequences. Weights enter as Hugging Face `[out, in]` [`Matrix`]es and are kept transposed
//! (`[in, out]`) inside this module only.

mod attention;
mod block;
mod mlp;
mod moe;
pub mod rope;
mod stage;
pub mod tap;

pub use attention::{Attention, causal_attention};
pub use block::{DecoderBlock, Ffn};
pub use mlp::Mlp;
pub use moe::{Moe, Routed, RoutingDecision};
pub use rope::Rope;
pub use stage::{Stage, Staged};
pub use tap::{NoTap, Tap, TapPoint};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Picks the burn device from a `--device` string: `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        s if s == "cuda" || s.starts_with("cuda:") => {
            let idx: usize = s
                .strip_prefix("cuda:")
                .unwrap_or("0")
                .parse()
                .map_err(|_| {
                    PareError::Usage(format!("--device {s}: expected cuda:N with N a number"))
                })?;
            Ok(Device::cuda(idx))
        }
        #[cfg(not(feature = "cuda"))]
        s if s.starts_with("cuda") => Err(PareError::Usage(format!(
            "--device {s}: this build has no CUDA support; rebuild with `--features cuda`"
        ))),
        s => Err(PareError::Usage(format!(
            "--device {s}: expected cpu, cuda or cuda:N"
        ))),
    }
}

/// A linear layer `y = x Wᵀ + b` with the weight stored as `[in, out]`.
#[derive(Clone)]
pub struct Linear {
    weight_t: Tensor<2>,
    bias: Option<Tensor<1>>,
}

impl Linear {
    /// From a Hugging Face `[out, in]` weight and an optional `[out]` bias.
    pub fn new(w: &Matrix, bias: Option<Vec<f32>>, device: &Device) -> Self {
        let weight_t = Self::transposed(w, device);
        let bias = bias.map(|b| {
            let n = b.len();
            Tensor::<1>::from_data(TensorData::new(b, [n]), device)
        });
        Self { weight_t, bias }
    }

    /// `w` (`[out, in]`) as an `[in, out]` tensor on `device`.
    pub(crate) fn transposed(w: &Matrix, device: &Device) -> Tensor<2> {
        let mut t = vec![0f32; w.data.len()];
        for r in 0..w.rows {
            let row = w.row(r);
            for (c, v) in row.iter().enumerate() {
                t[c * w.rows + r] = *v;
            }
        }
        Tensor::<2>::from_data(TensorData::new(t, [w.cols, w.rows]), device)
    }

    /// Several linears reading the same input as one (outputs concatenated in order).
    pub fn fused(parts: &[(&Matrix, Option<&Vec<f32>>)], device: &Device) -> Self {
        let cols = parts.first().map(|p| p.0.cols).unwrap_or(0);
        let rows: usize = parts.iter().map(|p| p.0.rows).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for (m, _) in parts {
            data.extend_from_slice(&m.data);
        }
        let bias = if parts.iter().any(|p| p.1.is_some()) {
            let mut b = Vec::with_capacity(rows);
            for (m, bias) in parts {
                match bias {
                    Some(v) => b.extend_from_slice(v),
                    None => b.extend(std::iter::repeat_n(0.0, m.rows)),
                }
            }
            Some(b)
        } else {
            None
        };
        Self::new(&Matrix::from_vec(rows, cols, data), bias, device)
    }

    /// `x`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = x.matmul(self.weight_t.clone());
        match &self.bias {
            Some(b) => {
                let n = b.dims()[0];
                y + b.clone().reshape([1, n])
            }
            None => y,
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight_t.dims()[1]
    }
}

/// RMSNorm as in transformers: `w · x / sqrt(mean(x²) + eps)`, over the last dimension.
#[derive(Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Vec<f32>, eps: f64, device: &Device) -> Self {
        let n = weight.len();
        Self {
            weight: Tensor::<1>::from_data(TensorData::new(weight, [n]), device),
            eps,
        }
    }

    /// `x`: `[tokens, hidden]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let n = self.weight.dims()[0];
        let var = x.clone().square().mean_dim(1);
        let inv = var.add_scalar(self.eps).sqrt().recip();
        x * inv * self.weight.clone().reshape([1, n])
    }
}

/// Embedding table, final norm and LM head: the parts of the model outside the blocks.
pub struct Ends {
    embed: Tensor<2>,
    pub norm: RmsNorm,
    head: Linear,
    pub vocab: usize,
    pub hidden: usize,
}

impl Ends {
    /// `embed` is the `[vocab, hidden]` table; `head` the LM head as a linear layer.
    pub fn new(embed: Matrix, norm: RmsNorm, head: Linear, device: &Device) -> Self {
        let (vocab, hidden) = (embed.rows, embed.cols);
        let embed = Tensor::<2>::from_data(TensorData::new(embed.data, [vocab, hidden]), device);
        Self {
            embed,
            norm,
            head,
            vocab,
            hidden,
        }
    }

    /// Token ids `[batch][seq]` (all rows the same length) → hidden states `[batch, seq, hidden]`.
    pub fn embed(&self, ids: &[Vec<u32>]) -> Result<Tensor<3>> {
        let b = ids.len();
        let s = ids.first().map(Vec::len).unwrap_or(0);
        let mut flat = Vec::with_capacity(b * s);
        for row in ids {
            if row.len() != s {
                return Err(PareError::Internal(
                    "embed: sequences of a batch differ in length".into(),
                ));
            }
            for &t in row {
                if t as usize >= self.vocab {
                    return Err(PareError::Usage(format!(
                        "token id {t} is outside the vocabulary of {} entries",
                        self.vocab
                    )));
                }
                flat.push(t as i64);
            }
        }
        let device = self.embed.device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(flat, [b * s]), &device);
        Ok(self
            .embed
            .clone()
            .select(0, idx)
            .reshape([b, s, self.hidden]))
    }

    /// Hidden states `[batch, seq, hidden]` → logits `[batch*seq, vocab]`.
    pub fn logits(&self, h: Tensor<3>) -> Tensor<2> {
        let [b, s, d] = h.dims();
        self.head.forward(self.norm.forward(h.reshape([b * s, d])))
    }
}

/// Copies a 2-D tensor to the host as a row-major `Vec<f32>`.
pub fn to_host(t: Tensor<2>) -> Result<Vec<f32>> {
    t.try_into_data()
        .map_err(|e| {
            PareError::Numerical(format!("cannot read a tensor back from the device: {e:?}"))
        })?
        .try_into_vec_as::<f32>()
        .map_err(|e| {
            PareError::Numerical(format!(
                "cannot convert a tensor read from the device: {e:?}"
            ))
        })
}
