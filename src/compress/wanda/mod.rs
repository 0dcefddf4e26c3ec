//! Wanda (Sun, Liu, Bair, Kolter 2023; ALGORITHMS.md §2): prune by `|W_ij| · ‖X_j‖₂`, compared
//! within each output row, no weight update. Needs the per-column squared input norms.
//!
//! Defaults as the reference: every row gets exactly `floor(d_in · p)` zeros (ties → lower
//! column pruned first); N:M keeps the N best-scored of every aligned group of M columns.
//!
//! Recipe: `- wanda: { sparsity: 0.5 }` or `- wanda: { pattern: "2:4" }`.

pub mod math;

use crate::compress::magnitude::check_pruning;
use crate::compress::{CompressedLinear, InputStats, NofM};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Wanda-prunes `w` (layer `id`) with the statistics of its input.
pub fn wanda(
    id: &str,
    w: &Matrix,
    stats: &InputStats,
    sparsity: f32,
    pattern: Option<NofM>,
) -> Result<CompressedLinear> {
    check_pruning(id, w.cols, sparsity, pattern)?;
    if stats.sq_norms.len() != w.cols {
        return Err(PareError::Numerical(format!(
            "{id}: input statistics have {} columns, the weight has {}",
            stats.sq_norms.len(),
            w.cols
        )));
    }
    let norms = math::column_norms(&stats.sq_norms);
    let mut out = w.clone();
    match pattern {
        Some(nm) => math::prune_rows_n_of_m(&mut out.data, out.cols, &norms, nm),
        None => math::prune_rows(&mut out.data, out.cols, &norms, sparsity),
    }
    Ok(CompressedLinear {
        weight: out,
        quant: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::hessian::tests::{correlated_x, rand_vec, stats_of};

    #[test]
    fn every_row_gets_exact_sparsity() {
        let (rows, d, t) = (7, 20, 50);
        let w = Matrix::from_vec(rows, d, rand_vec(11, rows * d));
        let s = stats_of(&correlated_x(12, t, d), t, d);
        let c = wanda("blocks.0.attn.q", &w, &s, 0.3, None).unwrap();
        for r in 0..rows {
            assert_eq!(
                c.weight.row(r).iter().filter(|v| **v == 0.0).count(),
                6,
                "row {r}"
            );
        }
        let c = wanda("blocks.0.attn.q", &w, &s, 0.0, Some(NofM { n: 1, m: 4 })).unwrap();
        assert!(c.weight.satisfies_n_of_m(1, 4));
        assert_eq!(c.weight.sparsity(), 0.75);
    }

    #[test]
    fn mismatched_stats_name_the_layer() {
        let w = Matrix::zeros(2, 4);
        let s = InputStats {
            n_seqs: 1,
            n_tokens: 1,
            sq_norms: vec![1.0; 3],
            hessian: None,
        };
        let e = wanda("blocks.2.mlp.down", &w, &s, 0.5, None).unwrap_err();
        assert!(e.to_string().contains("blocks.2.mlp.down"), "{e}");
    }
}
