//! Compressors: pruning and quantisation methods, each in its own folder with orchestration
//! (`mod.rs`) apart from pure math (`math.rs`).
//!
//! A recipe step resolves to a [`Method`]; the block loop asks it what statistics it [`Needs`],
//! gathers them once per linear input (q/k/v share theirs), then calls [`Method::apply`] for every
//! targeted linear.

pub mod apply;
pub mod finequant;
pub mod formats;
pub mod gptq;
pub mod hessian;
pub mod magnitude;
pub mod quant;
pub mod rtn;
pub mod sparsegpt;
pub mod timing;
pub mod types;
pub mod wanda;

pub use types::{CompressedLinear, InputStats, Needs, QuantScheme, QuantizedWeight};

/// "Keep N of every M consecutive input columns" (the NVIDIA / compressed-tensors meaning:
/// `2:4` keeps 2 of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct NofM {
    pub n: usize,
    pub m: usize,
}

/// One resolved compression method with all its parameters checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Method {
    /// Magnitude pruning: per-matrix threshold (unstructured) or per-row groups (N:M).
    Magnitude {
        sparsity: f32,
        pattern: Option<NofM>,
    },
    /// Wanda: |W|·‖X_j‖₂ per output row.
    Wanda {
        sparsity: f32,
        pattern: Option<NofM>,
    },
    /// SparseGPT: OBS with lazy blocks.
    SparseGpt {
        sparsity: f32,
        pattern: Option<NofM>,
        block_size: usize,
        dampening: f32,
    },
    /// Round-to-nearest, min-max, data-free.
    Rtn { scheme: QuantScheme },
    /// FineQuant: data-free, per-matrix adaptive group size.
    FineQuant {
        bits: u8,
        symmetric: bool,
        max_group: usize,
        min_group: usize,
        threshold: f32,
    },
    /// GPTQ: Hessian-based error feedback.
    Gptq {
        scheme: QuantScheme,
        block_size: usize,
        dampening: f32,
        actorder: bool,
    },
}
