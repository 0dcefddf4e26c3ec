//! GGUF export for llama.cpp (ggml's `docs/gguf.md`, llama.cpp's `convert_hf_to_gguf.py`).
//!
//! - [`container`]: the GGUF v3 file (streaming writer, reader for checks).
//! - [`quants`]: `Q4_0` / `Q8_0` blocks, from pare's integer codes exactly or by llama.cpp's RTN.
//! - [`vocab`]: `tokenizer.ggml.*` from tokenizer.json.
//! - [`convert`]: a Hugging Face checkpoint directory (dense, or pack-quantized as pare writes it)
//!   to one `.gguf` file, with llama.cpp's metadata keys, tensor names and q/k permutation.
//!
//! Why pare's own container code: the Rust GGUF crates (gguf-rs, gguf-rs-lib, ggus, candle's
//! `gguf_file`) either build the whole file in memory, which a 7B model does not fit, or come with
//! an inference engine; the container is ~300 lines of this module and costs the build nothing.

pub mod container;
pub mod convert;
pub mod quants;
pub mod vocab;

pub use container::{GgufFile, GgufWriter, TensorPlan, Value};
pub use convert::{GgufReport, convert_checkpoint};

/// The ggml tensor types pare writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl GgmlType {
    /// Every type, in `pare formats` order.
    pub const ALL: [GgmlType; 5] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
    ];

    /// ggml's `enum ggml_type` value.
    pub fn ggml_id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
        }
    }

    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.ggml_id() == id)
    }

    /// The name used in recipes and on the command line (`q4_0`).
    pub fn label(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::BF16 => "bf16",
            GgmlType::Q8_0 => "q8_0",
            GgmlType::Q4_0 => "q4_0",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let s = s.to_ascii_lowercase();
        Self::ALL.into_iter().find(|t| t.label() == s)
    }

    /// Weights per block.
    pub fn block_size(self) -> usize {
        match self {
            GgmlType::Q8_0 | GgmlType::Q4_0 => quants::QK,
            _ => 1,
        }
    }

    /// Bytes per block.
    fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_0 => 18,
        }
    }

    /// Bytes of `n` weights (`n` a multiple of the block size).
    pub fn bytes_for(self, n: usize) -> usize {
        n / self.block_size() * self.block_bytes()
    }

    /// Bits per weight, scale included.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_size() as f64
    }

    /// llama.cpp's `general.file_type` (`enum llama_ftype`) of a file whose weights are mostly of
    /// this type.
    pub fn file_type(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q8_0 => 7,
            GgmlType::BF16 => 32,
        }
    }
}
