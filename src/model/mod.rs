//! The decoder in burn: embedding → blocks → norm → head, run one block at a time over a batch of
//! sequences. Weights enter as Hugging Face `[out, in]` [`Matrix`]es and are kept transposed
//! (`[in, out]`) inside this module only.

mod attention;
mod block;
pub mod grad;
mod grad_host;
mod mlp;
mod moe;
pub mod rope;
mod stage;
pub mod tap;

pub use attention::{Attention, causal_attention};
pub use block::{DecoderBlock, Ffn};
pub use mlp::Mlp;
pub use moe::{Moe, Routed, RoutingDecision, odp_counts, odp_counts_reset};
pub use rope::Rope;
pub use stage::{Stage, Staged};
pub use tap::{NoTap, Tap, TapPoint};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Picks the burn device from a `--device` string: `cpu`, `vulkan` (the adapter wgpu prefers:
/// a discrete GPU when there is one) or `vulkan:N` (the N-th discrete GPU). Vulkan needs a build
/// with `--features vulkan`. `cuda[:N]` is refused with a pointer to `vulkan`: burn's CUDA
/// backend cannot be built offline (kernels/README.md says why), so pare has no CUDA route.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::flex()),
        s if s == "vulkan" || s.starts_with("vulkan:") => vulkan_device(s),
        s if s == "cuda" || s.starts_with("cuda:") => Err(PareError::Usage(format!(
            "--device {s}: pare has no CUDA route (burn's CUDA backend does not build offline); \
             on an NVIDIA GPU use --device vulkan[:N] with a build that has `--features vulkan`"
        ))),
        s => Err(PareError::Usage(format!(
            "--device {s}: expected cpu, vulkan or vulkan:N"
        ))),
    }
}

/// The Vulkan device of a `vulkan` / `vulkan:N` spec.
#[cfg(feature = "vulkan")]
fn vulkan_device(s: &str) -> Result<Device> {
    use burn::tensor::DeviceKind;
    match s.strip_prefix("vulkan:") {
        None => Ok(Device::vulkan(DeviceKind::DefaultDevice)),
        Some(n) => n
            .parse::<usize>()
            .map(|i| Device::vulkan(DeviceKind::DiscreteGpu(i)))
            .map_err(|_| {
                PareError::Usage(format!("--device {s}: expected vulkan:N with N a number"))
            }),
    }
}

#[cfg(not(feature = "vulkan"))]
fn vulkan_device(s: &str) -> Result<Device> {
    Err(PareError::Usage(format!(
        "--device {s}: this build has no GPU route; rebuild with `--features vulkan`"
    )))
}

/// True when `device` keeps tensors in host memory, where the forward runs pare's CPU kernels
/// ([`crate::kernels`]) on the tensors' buffers instead of burn's ops. Not for the autodiff
/// form of the host device (burn's `==` does not tell it apart), which must record burn's ops.
pub fn on_host(device: &Device) -> bool {
    *device == Device::flex() && !device.is_autodiff()
}

/// A tensor created from a host vector, `shape` elements (no copy on the host device).
pub(crate) fn from_host<const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v, shape), device)
}

/// A linear layer `y = x Wᵀ + b`. On the host the weight is kept `[out, in]` (Hugging Face's
/// layout) and multiplied by faer ([`crate::kernels::gemm`]); on another device it is a burn
/// tensor `[in, out]`.
#[derive(Clone)]
pub struct Linear {
    w: Matrix,
    bias: Option<Vec<f32>>,
    device: Device,
    /// The weight `[in, out]` and bias as device tensors, off the host only.
    on_device: Option<(Tensor<2>, Option<Tensor<1>>)>,
}

impl Linear {
    /// From a Hugging Face `[out, in]` weight and an optional `[out]` bias.
    pub fn new(w: &Matrix, bias: Option<Vec<f32>>, device: &Device) -> Self {
        Self::owned(w.clone(), bias, device)
    }

    /// [`Linear::new`], taking the weight by value (no copy on the host).
    pub fn owned(w: Matrix, bias: Option<Vec<f32>>, device: &Device) -> Self {
        let mut l = Self {
            w,
            bias,
            device: device.clone(),
            on_device: None,
        };
        l.upload();
        l
    }

    /// Refreshes the device copy from the host weight (a no-op on the host).
    fn upload(&mut self) {
        if on_host(&self.device) {
            return;
        }
        let b = self.bias.as_ref().map(|b| {
            let n = b.len();
            Tensor::<1>::from_data(TensorData::new(b.clone(), [n]), &self.device)
        });
        self.on_device = Some((Self::transposed(&self.w, &self.device), b));
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

    /// [`Linear::fused`] taking the parts by value; each part is dropped once copied in, so the
    /// extra memory is one part at most.
    pub fn fused_owned(parts: Vec<(Matrix, Option<Vec<f32>>)>, device: &Device) -> Self {
        let cols = parts.first().map(|p| p.0.cols).unwrap_or(0);
        let rows: usize = parts.iter().map(|p| p.0.rows).sum();
        let any_bias = parts.iter().any(|p| p.1.is_some());
        let mut data = Vec::with_capacity(rows * cols);
        let mut bias = Vec::with_capacity(if any_bias { rows } else { 0 });
        for (m, b) in parts {
            data.extend_from_slice(&m.data);
            if any_bias {
                match b {
                    Some(v) => bias.extend_from_slice(&v),
                    None => bias.extend(std::iter::repeat_n(0.0, m.rows)),
                }
            }
        }
        Self::owned(
            Matrix::from_vec(rows, cols, data),
            any_bias.then_some(bias),
            device,
        )
    }

    /// `x`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        match &self.on_device {
            None => {
                let t = x.dims()[0];
                let xs = to_host(x)?;
                let mut y = vec![0f32; t * self.w.rows];
                crate::kernels::gemm::linear(
                    &xs,
                    &self.w.data,
                    self.w.rows,
                    self.bias.as_deref(),
                    &mut y,
                    false,
                );
                Ok(from_host(y, [t, self.w.rows], &self.device))
            }
            Some((wt, b)) => {
                let y = x.matmul(wt.clone());
                Ok(match b {
                    Some(b) => {
                        let n = b.dims()[0];
                        y + b.clone().reshape([1, n])
                    }
                    None => y,
                })
            }
        }
    }

    /// `residual + x·Wᵀ + b` (the output projections' residual add, fused into the GEMM on the
    /// host).
    pub fn forward_add(&self, x: Tensor<2>, residual: Tensor<2>) -> Result<Tensor<2>> {
        if self.on_device.is_some() {
            return Ok(residual + self.forward(x)?);
        }
        let t = x.dims()[0];
        let xs = to_host(x)?;
        let mut y = to_host(residual)?;
        crate::kernels::gemm::linear(
            &xs,
            &self.w.data,
            self.w.rows,
            self.bias.as_deref(),
            &mut y,
            true,
        );
        Ok(from_host(y, [t, self.w.rows], &self.device))
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.w.rows
    }

    /// A copy of output features `offset..offset + n` (`[n, in]`).
    pub fn rows(&self, offset: usize, n: usize) -> Matrix {
        let d_in = self.w.cols;
        let end = (offset + n).min(self.w.rows);
        let start = offset.min(end);
        Matrix::from_vec(
            end - start,
            d_in,
            self.w.data[start * d_in..end * d_in].to_vec(),
        )
    }

    /// A linear holding only the output features `rows` (in that order), with their biases.
    pub fn select_rows(&self, rows: &[usize]) -> Result<Linear> {
        let d_in = self.w.cols;
        let mut data = Vec::with_capacity(rows.len() * d_in);
        for &r in rows {
            if r >= self.w.rows {
                return Err(PareError::Internal(format!(
                    "select_rows: row {r} of a linear with {} outputs",
                    self.w.rows
                )));
            }
            data.extend_from_slice(self.w.row(r));
        }
        let bias = self
            .bias
            .as_ref()
            .map(|b| rows.iter().map(|&r| b[r]).collect());
        Ok(Linear::owned(
            Matrix::from_vec(rows.len(), d_in, data),
            bias,
            &self.device,
        ))
    }

    /// Replaces output features `offset..offset + w.rows` with `w` (`[rows, in]`).
    pub fn set_rows(&mut self, offset: usize, w: &Matrix) -> Result<()> {
        let (d_out, d_in) = (self.w.rows, self.w.cols);
        if w.cols != d_in || offset + w.rows > d_out || w.data.len() != w.rows * w.cols {
            return Err(PareError::Internal(format!(
                "set_linear: a [{}, {}] weight does not fit rows {offset}.. of a [{d_out}, {d_in}] linear",
                w.rows, w.cols
            )));
        }
        self.w.data[offset * d_in..(offset + w.rows) * d_in].copy_from_slice(&w.data);
        self.upload();
        Ok(())
    }
}

/// RMSNorm as in transformers: `w · x / sqrt(mean(x²) + eps)`, over the last dimension.
#[derive(Clone)]
pub struct RmsNorm {
    host: Vec<f32>,
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Vec<f32>, eps: f64, device: &Device) -> Self {
        let n = weight.len();
        Self {
            weight: Tensor::<1>::from_data(TensorData::new(weight.clone(), [n]), device),
            host: weight,
            eps,
        }
    }

    /// The weight on the host.
    pub fn host(&self) -> &[f32] {
        &self.host
    }

    /// The epsilon added to the mean square.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// `(x, norm(x))` for `x` `[tokens, hidden]`: on the host the norm reads `x`'s buffer and
    /// hands `x` back, so a residual stream is never copied to be normed.
    pub fn forward_keep(&self, x: Tensor<2>) -> Result<(Tensor<2>, Tensor<2>)> {
        let device = x.device();
        if on_host(&device) {
            let dims = x.dims();
            let xs = to_host(x)?;
            let y = crate::kernels::elementwise::rms_norm(&xs, &self.host, self.eps as f32);
            return Ok((from_host(xs, dims, &device), from_host(y, dims, &device)));
        }
        Ok((x.clone(), self.forward(x)?))
    }

    /// `x`: `[tokens, hidden]`.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let device = x.device();
        if on_host(&device) {
            let dims = x.dims();
            let y =
                crate::kernels::elementwise::rms_norm(&to_host(x)?, &self.host, self.eps as f32);
            return Ok(from_host(y, dims, &device));
        }
        let n = self.weight.dims()[0];
        let var = x.clone().square().mean_dim(1);
        let inv = var.add_scalar(self.eps).sqrt().recip();
        Ok(x * inv * self.weight.clone().reshape([1, n]))
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
    pub fn logits(&self, h: Tensor<3>) -> Result<Tensor<2>> {
        let [b, s, d] = h.dims();
        self.head.forward(self.norm.forward(h.reshape([b * s, d]))?)
    }
}

/// Calls `f` with a 2-D tensor's values, row-major. On the host a contiguous f32 tensor is read
/// in place, with no copy (it may be shared: it is only read); any other tensor is first copied
/// to the host with [`to_host`].
pub fn with_host<R>(t: &Tensor<2>, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    if on_host(&t.device())
        && let Ok(p) = t.clone().try_into_primitive::<burn::backend::Flex>()
        && let Some(v) = p.as_slice::<f32>()
    {
        return Ok(f(v));
    }
    Ok(f(&to_host(t.clone())?))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `with_host` shows the row-major values: in place for a contiguous tensor (also while
    /// another handle holds it), through a copy for a transposed view.
    #[test]
    fn with_host_reads_row_major_values() -> Result<()> {
        let device = Device::flex();
        let v: Vec<f32> = (0..6).map(|i| i as f32).collect();
        let t = from_host(v.clone(), [2, 3], &device);
        let shared = t.clone();
        assert_eq!(with_host(&t, |h| h.to_vec())?, v);
        let tr = shared.transpose();
        assert_eq!(
            with_host(&tr, |h| h.to_vec())?,
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        let rows = t.slice([1..2, 0..3]);
        assert_eq!(with_host(&rows, |h| h.to_vec())?, vec![3.0, 4.0, 5.0]);
        Ok(())
    }
}
