//! Checkpoint I/O: reading Hugging Face safetensors checkpoints (single file or sharded, memory
//! mapped, any compressed-tensors layout pare understands) and writing them back (shards, index,
//! config.json, tokenizer files) in dense or compressed-tensors layouts (ALGORITHMS.md §12.3–4,
//! CRATES.md §2.1).
//!
//! - [`TensorStore`] opens a directory; [`TensorStore::read_linear`] gives any linear as a dense
//!   f32 [`crate::Matrix`].
//! - [`QuantizationConfig`] parses and checks a config.json `quantization_config`.
//! - The `encode_*` functions turn a compressed linear into [`OutTensor`]s, which
//!   [`CheckpointWriter`] writes.

mod budget;
pub mod formats;
pub mod linear;
pub mod qconfig;
pub mod reader;
pub mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod writer_tests;

pub use formats::{
    OutTensor, encode_dense, encode_floats, encode_pack_quantized, encode_sparse_24_bitmask,
    encode_sparse_bitmask, pack_rows, quantization_config_json, sparsity_config_json, unpack_rows,
};
pub use qconfig::{QuantGroup, QuantizationConfig, SparsityConfig};
pub use reader::{TensorInfo, TensorStore, is_float};
pub use safetensors::Dtype;
pub use writer::{CheckpointWriter, DEFAULT_MAX_SHARD_BYTES, StoredTensor};
