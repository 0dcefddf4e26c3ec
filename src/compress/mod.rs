//! Compressors: pruning and quantisation methods, one folder each (`mod.rs`: the recipe `Spec`,
//! the checked `Params` and the [`Compressor`] impl; `math.rs`: pure math tested on tiny
//! matrices), listed once in [`registry`].
//!
//! The block loop asks each step's compressor what statistics it needs ([`Compressor::stats`]),
//! gathers them once per tap point (q/k/v share theirs), then calls [`Compressor::compress`] for
//! every targeted linear with a [`LinearInput`]: the original weight, the current one with its
//! explicit mask and integer form, the block's statistics and the linear's allocated settings.

pub mod formats;
pub mod kit;
pub mod quant;
mod registry;
pub mod spec;
pub mod timing;
pub mod types;

#[cfg(test)]
pub(crate) mod testing;

pub use registry::MethodSpec;
pub use types::{
    CompressedLinear, ExportHints, LinearInput, LinearOutput, Mask, QuantScheme, QuantizedWeight,
};

use serde::Serializer;

use crate::allocate::Profiler;
use crate::error::Result;
use crate::id::LinearId;
use crate::stats::StatSet;

/// "Keep N of every M consecutive input columns" (the NVIDIA / compressed-tensors meaning:
/// `2:4` keeps 2 of 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct NofM {
    pub n: usize,
    pub m: usize,
}

/// What a method does to a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// Sets weights to zero (unstructured, or keeping N of every M).
    Prune { pattern: Option<NofM> },
    /// Maps weights onto an integer grid.
    Quantize,
}

/// A compression method with its parameters checked: what it needs, and what it does to one
/// linear. Implemented by each method folder's `Params`.
pub trait Compressor {
    fn kind(&self) -> MethodKind;
    /// The statistics the block loop must gather at this method's linears' inputs.
    fn stats(&self) -> StatSet;
    /// Compresses one linear. Errors need not name the layer: the block loop attaches it.
    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput>;
    /// Profilers the pre-pass must run for this step (index `step`, compressing `targets`)
    /// before the block loop, to fill the allocation (OWL's per-block sparsities).
    fn profilers(&self, _step: usize, _targets: &[LinearId]) -> Vec<Box<dyn Profiler>> {
        Vec::new()
    }
    /// The data-free form of this method, used for a linear whose input saw no calibration
    /// token (an MoE expert the router never chose): magnitude for the pruners, RTN for GPTQ.
    /// `None` for methods that need no data.
    fn fallback(&self) -> Option<Method> {
        None
    }
    /// The integer grid a quantisation method writes, when one scheme covers every linear
    /// (`None` for pruners and adaptive schemes).
    fn scheme(&self) -> Option<QuantScheme> {
        None
    }
    /// The gradient artefact this method scores with (GBLM); the pre-pass computes or opens it
    /// and the block loop hands each linear its slice ([`LinearInput::gradients`]).
    fn gradients(&self) -> Option<GradientSource> {
        None
    }
    /// MaskLLM's end-to-end mode: the step whose masks the pre-pass learns on the whole
    /// model's loss ([`crate::pipeline::mask_training`]); the block loop hands each linear its
    /// mask ([`LinearInput::learned_mask`]).
    fn end_to_end(&self) -> Option<&maskllm::Params> {
        None
    }
}

/// Where a step's gradient artefact ([`crate::gradients`]) comes from.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientSource {
    /// Computed by the streamed gradient pass over the recipe's calibration, scale `alpha`.
    Pass { alpha: f32 },
    /// Read from a file `pare gradients` wrote.
    File(std::path::PathBuf),
}

/// Serialises an optional N:M pattern as `"unstructured"` or `"N:M"`.
pub fn pattern_name<S: Serializer>(p: &Option<NofM>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match p {
        None => s.serialize_str("unstructured"),
        Some(p) => s.collect_str(&format_args!("{}:{}", p.n, p.m)),
    }
}

/// Serialises a scheme with its table name: `{format, bits, group_size, symmetric}`.
pub fn scheme_fields<S: Serializer>(q: &QuantScheme, s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::Serialize;
    serde_json::json!({
        "format": formats::scheme_name(q),
        "bits": q.bits,
        "group_size": q.group_size,
        "symmetric": q.symmetric,
    })
    .serialize(s)
}

// The method registry: one line per method folder (see `registry.rs`).
crate::registry! {
    Magnitude => magnitude,
    Wanda => wanda,
    Gblm => gblm,
    SparseGpt => sparsegpt,
    Dsnot => dsnot,
    MaskLlm => maskllm,
    Rtn => rtn,
    Gptq => gptq,
    FineQuant => finequant,
    ExpertPrune => expert_prune,
    McMoe => mc_moe,
}
