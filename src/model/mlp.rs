//! The SiLU-gated MLP of a dense block, also the shape of every MoE expert. Shapes: `[tokens, d]`.

use burn::tensor::Tensor;
use burn::tensor::activation::silu;

use super::{Linear, from_host, on_host, to_host};
use crate::error::Result;

/// SiLU-gated MLP: `down(silu(gate(x)) * up(x))`; gate and up run as one fused GEMM
/// (`gate_up`, outputs in gate|up order).
#[derive(Clone)]
pub struct Mlp {
    pub gate_up: Linear,
    pub ffn: usize,
    pub down: Linear,
}

impl Mlp {
    /// `silu(gate(x)) * up(x)`: the down projection's input, `[tokens, hidden]` → `[tokens, ffn]`.
    pub fn activation(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let gu = self.gate_up.forward(x)?;
        let t = gu.dims()[0];
        let f = self.ffn;
        let device = gu.device();
        if on_host(&device) {
            let out = crate::kernels::elementwise::silu_mul(&to_host(gu)?, f);
            return Ok(from_host(out, [t, f], &device));
        }
        Ok(silu(gu.clone().slice([0..t, 0..f])) * gu.slice([0..t, f..2 * f]))
    }
}
