//! Magnitude pruning (ALGORITHMS.md §1): the data-free baseline. Unstructured sparsity uses one
//! threshold per matrix (wanda's `prune_magnitude`, sparsegpt `--gmp`); N:M keeps the N largest
//! `|W|` of every aligned group of M input columns in each row.
//!
//! Recipe: `- magnitude: { sparsity: 0.5 }` or `- magnitude: { pattern: "2:4" }`.
//!
//! Exactly `floor(numel · p)` weights are pruned, ties broken by position (see [`math`]); the
//! reference prunes `|W| ≤ thr` and so slightly over-prunes on ties.

pub mod math;

use crate::compress::{CompressedLinear, NofM};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Checks a pruning request against a `cols`-wide weight of layer `id`: sparsity in `[0, 1)`,
/// and for N:M `1 ≤ n ≤ m ≤ 64` with `m` dividing `cols`.
pub fn check_pruning(id: &str, cols: usize, sparsity: f32, pattern: Option<NofM>) -> Result<()> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(PareError::Usage(format!(
            "{id}: sparsity {sparsity} is outside [0, 1)"
        )));
    }
    if let Some(nm) = pattern {
        if nm.m == 0 || nm.n > nm.m || nm.m > math::MAX_M {
            return Err(PareError::Usage(format!(
                "{id}: pattern {}:{} is invalid (need n ≤ m ≤ {})",
                nm.n,
                nm.m,
                math::MAX_M
            )));
        }
        if cols % nm.m != 0 {
            return Err(PareError::Usage(format!(
                "{id}: pattern {}:{} needs the input dimension {cols} to be a multiple of {}",
                nm.n, nm.m, nm.m
            )));
        }
    }
    Ok(())
}

/// Magnitude-prunes `w` (layer `id`): per-matrix unstructured at `sparsity`, or `pattern` (when
/// given, `sparsity` is ignored: N:M fixes it at `1 − n/m`).
pub fn magnitude(
    id: &str,
    w: &Matrix,
    sparsity: f32,
    pattern: Option<NofM>,
) -> Result<CompressedLinear> {
    check_pruning(id, w.cols, sparsity, pattern)?;
    let mut out = w.clone();
    match pattern {
        Some(nm) => math::prune_n_of_m_rows(&mut out.data, out.cols, nm, |_, v| v.abs()),
        None => {
            if out.data.len() > u32::MAX as usize {
                return Err(PareError::Usage(format!(
                    "{id}: {} weights are too many for per-matrix selection (max 2^32)",
                    out.data.len()
                )));
            }
            math::prune_magnitude_unstructured(&mut out.data, sparsity);
        }
    }
    Ok(CompressedLinear {
        weight: out,
        quant: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_matrix_threshold_not_per_row() {
        // Row 0 holds all the small weights: a per-matrix threshold empties it.
        let w = Matrix::from_vec(2, 4, vec![0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0]);
        let c = magnitude("blocks.0.mlp.up", &w, 0.5, None).unwrap();
        assert_eq!(c.weight.data, vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0]);
        assert!(c.quant.is_none());
    }

    #[test]
    fn rejects_bad_requests_naming_the_layer() {
        let w = Matrix::zeros(2, 6);
        let e = magnitude("blocks.3.attn.o", &w, 0.5, Some(NofM { n: 2, m: 4 })).unwrap_err();
        assert!(
            e.to_string().contains("blocks.3.attn.o") && e.to_string().contains('6'),
            "{e}"
        );
        assert!(magnitude("x", &w, 1.0, None).is_err());
        assert!(magnitude("x", &w, 0.0, Some(NofM { n: 3, m: 2 })).is_err());
    }
}
