//! pare's own GPU kernels for compressed linears, each with a plain CPU reference that the tests
//! compare against (see `kernels/README.md` for the route, layouts and what has been measured).
//!
//! - [`int4`]: the group-wise int4 dequant-GEMM over compressed-tensors `pack-quantized`
//!   weights, `y[b, o] = Σ_i x[b, i] · s[o, i / g] · (q[o, i] − z[o, i / g])`, batch 1 to 16.
//! - [`sparse24`]: the 2:4 sparse GEMM over a compressed 2:4 layout (the two kept values of each
//!   group of four and their 2-bit positions).
//!
//! - `gpu` (feature `vulkan`): the CubeCL kernels of both on wgpu's Vulkan backend, a dense
//!   GEMM and a copy to measure them against, and the `Gpu` handle that launches them.
//!
//! The CPU references are built and tested always. The GPU kernels are tested against them by
//! `cargo test -p pare-kernels --features vulkan` on any Vulkan adapter (Mesa's lavapipe too).

#![deny(missing_docs)]

#[cfg(feature = "vulkan")]
pub mod gpu;
pub mod int4;
pub mod sparse24;

/// A shape or layout error of a kernel's inputs: which argument, what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayoutError {}

/// `Err` naming `what` when `got != want`.
pub(crate) fn expect_len(what: &str, got: usize, want: usize) -> Result<(), LayoutError> {
    if got == want {
        Ok(())
    } else {
        Err(LayoutError(format!(
            "{what}: expected {want} elements, found {got}"
        )))
    }
}
