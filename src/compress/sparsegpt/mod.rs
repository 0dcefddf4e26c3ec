//! SparseGPT (Frantar & Alistarh 2023; ALGORITHMS.md §3): one-shot pruning with OBS weight
//! updates. Needs the layer Hessian `H = (2/n) Σ x xᵀ`.
//!
//! Defaults as the reference: block 128, dampening 0.01·mean(diag H), adaptive mask per block
//! (unstructured sparsity is exact per 128-column block across all rows, not per row), N:M per
//! row and group from the updated weights. Dead input columns are zeroed. Unlike llm-compressor,
//! a failed Cholesky is retried with 10× the damping (three times, each noted in the returned
//! warnings) and then reported as an error, never replaced by the identity.
//!
//! Recipe: `- sparsegpt: { sparsity: 0.5, block_size: 128, dampening: 0.01 }`.

pub mod math;

use crate::compress::hessian::inverse_factor;
use crate::compress::magnitude::check_pruning;
use crate::compress::{CompressedLinear, InputStats, NofM};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// The Hessian of `stats`, checked against a `cols`-wide weight of layer `id`.
pub fn hessian_for<'a>(id: &str, stats: &'a InputStats, cols: usize) -> Result<&'a Matrix> {
    let h = stats.hessian.as_ref().ok_or_else(|| {
        PareError::Numerical(format!(
            "{id}: this method needs the input Hessian, which was not gathered"
        ))
    })?;
    if h.rows != cols || h.cols != cols {
        return Err(PareError::Numerical(format!(
            "{id}: Hessian is {}×{}, the weight has {cols} input columns",
            h.rows, h.cols
        )));
    }
    Ok(h)
}

/// SparseGPT-prunes `w` (layer `id`). Returns the pruned, updated weight and warnings (dead
/// columns, Cholesky retries).
pub fn sparsegpt(
    id: &str,
    w: &Matrix,
    stats: &InputStats,
    sparsity: f32,
    pattern: Option<NofM>,
    block_size: usize,
    dampening: f32,
) -> Result<(CompressedLinear, Vec<String>)> {
    check_pruning(id, w.cols, sparsity, pattern)?;
    if block_size == 0 || pattern.is_some_and(|nm| block_size % nm.m != 0) {
        return Err(PareError::Usage(format!(
            "{id}: block_size {block_size} must be positive and a multiple of the N:M group width"
        )));
    }
    if !(dampening >= 0.0 && dampening.is_finite()) {
        return Err(PareError::Usage(format!(
            "{id}: dampening {dampening} must be ≥ 0"
        )));
    }
    if (block_size as u64) * (w.rows as u64) > u32::MAX as u64 {
        return Err(PareError::Usage(format!(
            "{id}: {} rows × block {block_size} is too large",
            w.rows
        )));
    }
    let h = hessian_for(id, stats, w.cols)?;
    let f = inverse_factor(id, h, dampening)?;
    let mut out = w.clone();
    let d = out.cols;
    for &j in &f.dead {
        for r in 0..out.rows {
            out.data[r * d + j] = 0.0;
        }
    }
    let rule = match pattern {
        Some(nm) => math::MaskRule::NofM(nm),
        None => math::MaskRule::Unstructured(sparsity),
    };
    math::sparsegpt_sweep(&mut out.data, d, &f.u, block_size, rule);
    let bad = out.non_finite();
    if bad > 0 {
        return Err(PareError::Numerical(format!(
            "{id}: SparseGPT produced {bad} non-finite weights"
        )));
    }
    Ok((
        CompressedLinear {
            weight: out,
            quant: None,
        },
        f.warnings,
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::compress::hessian::tests::{correlated_x, rand_vec, stats_of};
    use crate::compress::magnitude::magnitude;
    use crate::compress::wanda::wanda;

    /// ‖(W − W')Xᵀ‖ / ‖W Xᵀ‖ computed directly from the activations.
    pub(crate) fn rel_err(w: &Matrix, w2: &Matrix, x: &[f32], t: usize) -> f64 {
        let d = w.cols;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for r in 0..w.rows {
            for k in 0..t {
                let xs = &x[k * d..(k + 1) * d];
                let a: f64 = w
                    .row(r)
                    .iter()
                    .zip(xs)
                    .map(|(p, q)| (*p as f64) * (*q as f64))
                    .sum();
                let b: f64 = w2
                    .row(r)
                    .iter()
                    .zip(xs)
                    .map(|(p, q)| (*p as f64) * (*q as f64))
                    .sum();
                num += (a - b) * (a - b);
                den += a * a;
            }
        }
        (num / den).sqrt()
    }

    #[test]
    fn sparsegpt_beats_wanda_beats_magnitude() {
        let (rows, d, t) = (16, 64, 256);
        let x = correlated_x(31, t, d);
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(32, rows * d));
        let (sg, warn) = sparsegpt("l", &w, &s, 0.5, None, 16, 0.01).unwrap();
        assert!(warn.is_empty());
        let wa = wanda("l", &w, &s, 0.5, None).unwrap();
        let mg = magnitude("l", &w, 0.5, None).unwrap();
        let (e_sg, e_wa, e_mg) = (
            rel_err(&w, &sg.weight, &x, t),
            rel_err(&w, &wa.weight, &x, t),
            rel_err(&w, &mg.weight, &x, t),
        );
        assert!(
            e_sg < e_wa && e_wa < e_mg,
            "sparsegpt {e_sg} wanda {e_wa} magnitude {e_mg}"
        );
        assert!((sg.weight.sparsity() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn n_of_m_counts_exact() {
        let (rows, d, t) = (8, 32, 100);
        let x = correlated_x(41, t, d);
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(42, rows * d));
        for (n, m) in [(2, 4), (4, 8), (1, 4)] {
            let (c, _) = sparsegpt("l", &w, &s, 0.0, Some(NofM { n, m }), 16, 0.01).unwrap();
            assert!(c.weight.satisfies_n_of_m(n, m));
            assert_eq!(
                c.weight.data.iter().filter(|v| **v == 0.0).count(),
                rows * d * (m - n) / m
            );
        }
    }

    #[test]
    fn dead_columns_are_zeroed_and_missing_hessian_named() {
        let (rows, d, t) = (3, 8, 30);
        let mut x = correlated_x(51, t, d);
        for k in 0..t {
            x[k * d + 2] = 0.0;
        }
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(52, rows * d));
        let (c, warn) = sparsegpt("blocks.1.attn.k", &w, &s, 0.25, None, 8, 0.01).unwrap();
        assert!((0..rows).all(|r| c.weight.get(r, 2) == 0.0));
        assert!(warn.iter().any(|m| m.contains("dead")), "{warn:?}");
        let no_h = InputStats { hessian: None, ..s };
        let e = sparsegpt("blocks.1.attn.k", &w, &no_h, 0.5, None, 8, 0.01).unwrap_err();
        assert!(e.to_string().contains("blocks.1.attn.k"));
    }
}
