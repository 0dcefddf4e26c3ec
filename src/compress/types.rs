//! The data that crosses the compressor boundary: input statistics in, `CompressedLinear` out.

use crate::matrix::Matrix;

/// Statistics of one linear layer's input, gathered over the calibration set by the block loop.
/// Linears that read the same tensor (q/k/v, gate/up) share one `InputStats`.
///
/// Normalisation follows the reference codes (ALGORITHMS.md §2, §3): divided by the number of
/// calibration *sequences*, not tokens.
#[derive(Clone, Debug)]
pub struct InputStats {
    /// Number of calibration sequences observed.
    pub n_seqs: usize,
    /// Number of tokens observed.
    pub n_tokens: usize,
    /// `s_j = (1/n_seqs) Σ_t x_tj²`, length `d_in` (Wanda's statistic; `sqrt` gives ‖X_j‖₂ up to a constant).
    pub sq_norms: Vec<f32>,
    /// `H = (2/n_seqs) Σ_t x_t x_tᵀ`, `d_in × d_in`, present only when a compressor asked for it.
    pub hessian: Option<Matrix>,
}

/// What a compressor needs the block loop to gather for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Per-column squared norms (`InputStats::sq_norms`).
    pub sq_norms: bool,
    /// The full Hessian (`InputStats::hessian`).
    pub hessian: bool,
}

impl Needs {
    /// Needs nothing: a data-free method (magnitude, RTN, FineQuant).
    pub const NONE: Needs = Needs {
        sq_norms: false,
        hessian: false,
    };

    /// Union of two needs.
    pub fn union(self, other: Needs) -> Needs {
        Needs {
            sq_norms: self.sq_norms || other.sq_norms,
            hessian: self.hessian || other.hessian,
        }
    }

    /// True when calibration data must flow through the block at all.
    pub fn any(self) -> bool {
        self.sq_norms || self.hessian
    }
}

/// Integer weight quantisation scheme: one row of the format table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct QuantScheme {
    /// Bits per weight (4 or 8).
    pub bits: u8,
    /// Columns per group along the input dimension; `None` = one group per output channel (row).
    pub group_size: Option<usize>,
    /// Symmetric (zero-point 0) or asymmetric (integer zero-point per group).
    pub symmetric: bool,
}

impl QuantScheme {
    /// Smallest representable integer, `-2^{b-1}`.
    pub fn qmin(&self) -> i32 {
        -(1i32 << (self.bits - 1))
    }
    /// Largest representable integer, `2^{b-1} - 1`.
    pub fn qmax(&self) -> i32 {
        (1i32 << (self.bits - 1)) - 1
    }
    /// Columns per group for a matrix with `cols` input columns.
    pub fn group_cols(&self, cols: usize) -> usize {
        self.group_size.unwrap_or(cols).min(cols.max(1))
    }
    /// Number of groups per row for `cols` input columns.
    pub fn n_groups(&self, cols: usize) -> usize {
        cols.div_ceil(self.group_cols(cols))
    }
}

/// The integer payload of a quantised linear, in the compressed-tensors convention
/// (ALGORITHMS.md §12.3): `w ≈ (q − zp) · scale`, signed `q ∈ [qmin, qmax]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    pub scheme: QuantScheme,
    /// Signed integers, row-major `[rows, cols]`.
    pub q: Vec<i8>,
    /// Scales, row-major `[rows, n_groups]`, already rounded to the storage dtype.
    pub scales: Vec<f32>,
    /// Signed zero-points `[rows, n_groups]`; `None` when symmetric.
    pub zero_points: Option<Vec<i8>>,
}

/// A compressed linear layer as it leaves a compressor.
#[derive(Clone, Debug)]
pub struct CompressedLinear {
    /// The effective weight `[out, in]`: pruned entries are exact zeros and, when quantised, values
    /// are the dequantised ones. Used for propagation, evaluation and `dense` export.
    pub weight: Matrix,
    /// The integer form, when the linear was quantised.
    pub quant: Option<QuantizedWeight>,
}
