//! The data that crosses the compressor boundary: [`LinearInput`] in, [`LinearOutput`] out, and
//! what a compressed linear is ([`CompressedLinear`]: weight, explicit [`Mask`], integer form).

use serde::Serialize;

use crate::allocate::LinearSettings;
use crate::compress::quant::ScaleDtype;
use crate::error::Result;
use crate::id::LinearId;
use crate::matrix::Matrix;
use crate::model::TapPoint;
use crate::stats::Stats;

/// Integer weight quantisation scheme: one row of the format table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct QuantScheme {
    /// Bits per weight.
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

/// Which weights of a `[rows, cols]` linear are pruned: a row-major bitset, set = pruned (held
/// at exactly zero by every later step).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask {
    rows: usize,
    cols: usize,
    bits: Vec<u64>,
}

impl Mask {
    /// Nothing pruned.
    pub fn empty(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            bits: vec![0; (rows * cols).div_ceil(64)],
        }
    }

    /// The exact zeros of `w`, or `None` when it has none. Built 64 weights to a word,
    /// branch-free and in parallel over chunks of words (a 7B block's 202 M weights in tens of
    /// milliseconds).
    pub fn from_zeros(w: &Matrix) -> Option<Self> {
        use rayon::prelude::*;
        /// Words per parallel task (4 Mi weights).
        const WORDS: usize = 1 << 16;
        let mut m = Self::empty(w.rows, w.cols);
        m.bits
            .par_chunks_mut(WORDS)
            .zip(w.data.par_chunks(WORDS * 64))
            .for_each(|(bits, vals)| {
                for (b, c) in bits.iter_mut().zip(vals.chunks(64)) {
                    *b = c
                        .iter()
                        .enumerate()
                        .fold(0u64, |x, (j, v)| x | (u64::from(*v == 0.0) << j));
                }
            });
        m.bits.iter().any(|&b| b != 0).then_some(m)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Whether the weight at flat row-major index `i` is pruned.
    pub fn get(&self, i: usize) -> bool {
        self.bits
            .get(i / 64)
            .is_some_and(|w| w >> (i % 64) & 1 == 1)
    }

    pub fn set(&mut self, i: usize) {
        if let Some(w) = self.bits.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// Pruned weights.
    pub fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Pruned fraction.
    pub fn sparsity(&self) -> f64 {
        let n = self.rows * self.cols;
        if n == 0 {
            0.0
        } else {
            self.count() as f64 / n as f64
        }
    }
}

/// A linear layer as it leaves a compressor.
#[derive(Clone, Debug)]
pub struct CompressedLinear {
    /// The effective weight `[out, in]`: pruned entries are exact zeros and, when quantised, values
    /// are the dequantised ones. Used for propagation, evaluation and `dense` export.
    pub weight: Matrix,
    /// The pruned entries, when any step pruned (or the input already had exact zeros).
    pub mask: Option<Mask>,
    /// The integer form, when the linear was quantised.
    pub quant: Option<QuantizedWeight>,
}

impl CompressedLinear {
    /// An uncompressed linear: its weight, with the exact zeros it already has as the mask.
    pub fn dense(weight: Matrix) -> Self {
        Self {
            mask: Mask::from_zeros(&weight),
            weight,
            quant: None,
        }
    }

    /// A pruned weight (pruned entries are its zeros), with no integer form.
    pub fn pruned(weight: Matrix) -> Self {
        Self::dense(weight)
    }
}

/// What the export should know about a compressed linear beyond its tensors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportHints {
    /// Quantised by GPTQ with columns in descending `diag(H)` order and groups in natural order
    /// (compressed-tensors `"actorder": "static"`).
    pub actorder_static: bool,
}

/// Everything a compressor sees of one linear.
pub struct LinearInput<'a> {
    pub id: LinearId,
    /// The weight as read from the checkpoint, `[out, in]`.
    pub original: &'a Matrix,
    /// The linear after the recipe's earlier steps (weight, mask, integer form).
    pub current: &'a CompressedLinear,
    /// The block's statistics (this linear's input is at `point`).
    pub stats: &'a Stats,
    pub point: TapPoint,
    /// Per-linear settings decided before the block loop (sparsity or scheme overrides).
    pub settings: &'a LinearSettings,
    /// The dtype quantisation scales are stored in.
    pub scale_dtype: ScaleDtype,
    /// This linear's slice of the gradient artefact (`[out, in]` row-major), for a step whose
    /// method asks for one ([`crate::compress::Compressor::gradients`]).
    pub gradients: Option<&'a [f32]>,
    /// This linear's mask learned before the block loop (`[out, in]`, `true` = pruned), for a
    /// step that learns masks end to end ([`crate::compress::Compressor::end_to_end`]).
    pub mask: Option<&'a [bool]>,
    /// The group's last inverse Hessian factor, shared by linears with the same input
    /// ([`LinearInput::inverse_factor`]); `None` factorises every time.
    pub factors: Option<&'a crate::compress::kit::obs::FactorMemo>,
}

impl LinearInput<'_> {
    /// The current weight.
    pub fn weight(&self) -> &Matrix {
        &self.current.weight
    }

    /// `s_j` of this linear's input, checked against its width.
    pub fn sq_norms(&self) -> Result<&[f32]> {
        let s = self.stats.sq_norms(self.point)?;
        check_width(s.len(), self.current.weight.cols, "Σx²")?;
        Ok(s)
    }

    /// DSnoT's mean and variance of this linear's input, checked against its width.
    pub fn mean_var(&self) -> Result<&crate::stats::MeanVar> {
        let m = self.stats.mean_var(self.point)?;
        check_width(m.mean.len(), self.current.weight.cols, "the input mean")?;
        check_width(m.var.len(), self.current.weight.cols, "the input variance")?;
        Ok(m)
    }

    /// The Hessian of this linear's input, checked against its width.
    pub fn hessian(&self) -> Result<&Matrix> {
        let h = self.stats.hessian(self.point)?;
        check_width(h.rows, self.current.weight.cols, "Hessian")?;
        check_width(h.cols, self.current.weight.cols, "Hessian")?;
        Ok(h)
    }

    /// The upper Cholesky factor of this linear's damped inverse Hessian (OBS / GPTQ), from the
    /// group's memo when a linear with the same input, dampening and `actorder` asked before;
    /// `make` computes it from [`LinearInput::hessian`] otherwise.
    pub fn inverse_factor(
        &self,
        dampening: f32,
        actorder: bool,
        make: impl FnOnce() -> Result<crate::compress::kit::obs::InverseFactor>,
    ) -> Result<std::sync::Arc<crate::compress::kit::obs::InverseFactor>> {
        match self.factors {
            Some(m) => m.get_or_factor(
                crate::compress::kit::obs::FactorKey::new(self.point, dampening, actorder),
                make,
            ),
            None => make().map(std::sync::Arc::new),
        }
    }

    /// The gradient magnitudes `G` of this linear (GBLM), checked against the weight's size.
    pub fn gradients(&self) -> Result<&[f32]> {
        let w = &self.current.weight;
        match self.gradients {
            Some(g) if g.len() == w.rows * w.cols => Ok(g),
            Some(g) => Err(crate::error::PareError::Internal(format!(
                "the gradient artefact holds {} values for a [{}, {}] weight",
                g.len(),
                w.rows,
                w.cols
            ))),
            None => Err(crate::error::PareError::Internal(
                "no gradient artefact was loaded for this step".into(),
            )),
        }
    }

    /// The mask learned for this linear before the block loop, checked against its size.
    pub fn learned_mask(&self) -> Result<&[bool]> {
        let w = &self.current.weight;
        match self.mask {
            Some(m) if m.len() == w.rows * w.cols => Ok(m),
            Some(m) => Err(crate::error::PareError::Internal(format!(
                "the learned mask holds {} entries for a [{}, {}] weight",
                m.len(),
                w.rows,
                w.cols
            ))),
            None => Err(crate::error::PareError::Internal(
                "no mask was learned for this linear".into(),
            )),
        }
    }

    /// The N:M pattern to prune to: the allocation's, else the step's.
    pub fn pattern(&self, step: Option<crate::compress::NofM>) -> Option<crate::compress::NofM> {
        self.settings.pattern.or(step)
    }

    /// The sparsity to prune to: the allocation's, else the step's.
    pub fn sparsity(&self, step: f32) -> f32 {
        self.settings.sparsity.unwrap_or(step)
    }

    /// The quantisation scheme: the allocation's, else the step's.
    pub fn scheme(&self, step: QuantScheme) -> QuantScheme {
        self.settings.scheme.unwrap_or(step)
    }
}

fn check_width(got: usize, want: usize, what: &str) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(crate::error::PareError::Internal(format!(
            "{what} has {got} columns, the weight has {want}"
        )))
    }
}

/// What a compressor returns for one linear.
#[derive(Clone, Debug)]
pub struct LinearOutput {
    pub linear: CompressedLinear,
    pub hints: ExportHints,
    /// Remarks for the report and the log (dead columns, Cholesky retries, chosen group sizes,
    /// N:M tail groups).
    pub notes: Vec<String>,
}

impl LinearOutput {
    pub fn new(linear: CompressedLinear) -> Self {
        Self {
            linear,
            hints: ExportHints::default(),
            notes: Vec::new(),
        }
    }

    pub fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes = notes;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-wise, parallel mask marks exactly the weights equal to zero (−0.0 included, NaN
    /// not), across a task boundary and a partial last word.
    #[test]
    fn mask_from_zeros_marks_exactly_the_zeros() {
        let (rows, cols) = (65, 64 * 1024 + 3);
        let mut w = Matrix {
            rows,
            cols,
            data: (0..rows * cols).map(|i| 1.0 + (i % 7) as f32).collect(),
        };
        let zeros: Vec<usize> = (0..rows * cols)
            .filter(|i| i % 97 == 5 || i % 1009 == 0)
            .collect();
        for &i in &zeros {
            w.data[i] = if i % 2 == 0 { 0.0 } else { -0.0 };
        }
        w.data[7] = f32::NAN;
        let m = Mask::from_zeros(&w).expect("has zeros");
        assert_eq!(m.count(), zeros.len());
        assert!(zeros.iter().all(|&i| m.get(i)));
        assert!(!m.get(7) && !m.get(6));
        assert_eq!(m.bits.len(), (rows * cols).div_ceil(64));
        let dense = Matrix {
            rows: 3,
            cols: 5,
            data: vec![0.5; 15],
        };
        assert!(Mask::from_zeros(&dense).is_none());
    }
}
