//! Architecture adapters: the only place that knows checkpoint tensor names. Everything else
//! speaks canonical linear ids such as `blocks.3.attn.q`, `blocks.3.mlp.down`,
//! `blocks.3.moe.experts.5.up`, `blocks.3.moe.router`.

use crate::id::LinearId;

/// One linear layer of a decoder block, as the rest of pare sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearSlot {
    /// Canonical id, e.g. `blocks.0.attn.q`.
    pub id: LinearId,
    /// Checkpoint module prefix, e.g. `model.layers.0.self_attn.q_proj` (tensor is `{key}.weight`).
    pub key: String,
    /// Output features (`d_out`).
    pub rows: usize,
    /// Input features (`d_in`).
    pub cols: usize,
}

mod llama;
pub use llama::{Architecture, BlockWeights};
