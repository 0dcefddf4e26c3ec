//! GPTQ (Frantar et al. 2023; ALGORITHMS.md §7) with llm-compressor's `GPTQModifier`
//! conventions, which reference.json's `gptq-w4ch` used: scales and zero-points come up front
//! from the *unmodified* weight per (row, group) with the min-max observer of
//! [`crate::compress::quant`] (static groups, the same grid as RTN); `actorder` = llm-compressor's
//! `static`: columns are processed in descending `diag(H)` order while groups stay in natural
//! column order (no `g_idx` needed); dead columns zeroed; damping `0.01·mean(diag H)`; upper
//! Cholesky of `H⁻¹`; lazy blocks of 128 with error feedback.
//!
//! Zeros are preserved: a weight that is exactly zero on entry (an earlier pruning step) gets the
//! integer code of 0 and feeds no error forward, and updates other columns push into it are
//! discarded — so a 2:4-pruned matrix stays 2:4 (llm-compressor ≤ 0.12 did this when the tensor
//! was ≥ 5 % sparse; ≥ 0.13 densifies). Differs from llm-compressor on Cholesky failure: retried
//! with 10× damping, then an error (never a silent RTN fallback).
//!
//! Recipe: `- gptq: { format: int4-g128-sym, block_size: 128, dampening: 0.01, actorder: true }`.

pub mod math;

use crate::compress::apply::name_layer;
use crate::compress::hessian::inverse_factor;
use crate::compress::quant::{GroupParams, ScaleDtype, minmax_params};
use crate::compress::rtn::check_scheme;
use crate::compress::sparsegpt::hessian_for;
use crate::compress::{CompressedLinear, InputStats, QuantScheme, QuantizedWeight};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Min-max parameters of every (row, group) of `w`, row-major `[rows, n_groups]`.
pub fn static_params(w: &Matrix, scheme: &QuantScheme, dt: ScaleDtype) -> Vec<GroupParams> {
    let gc = scheme.group_cols(w.cols);
    let ng = scheme.n_groups(w.cols);
    let mut out = Vec::with_capacity(w.rows * ng);
    for r in 0..w.rows {
        let row = w.row(r);
        for g in 0..ng {
            out.push(minmax_params(
                &row[g * gc..((g + 1) * gc).min(w.cols)],
                scheme,
                dt,
            ));
        }
    }
    out
}

/// GPTQ-quantises `w` (layer `id`). Returns the dequantised weight with its integer form, and
/// warnings (dead columns, Cholesky retries).
#[allow(clippy::too_many_arguments)]
pub fn gptq(
    id: &str,
    w: &Matrix,
    stats: &InputStats,
    scheme: QuantScheme,
    block_size: usize,
    dampening: f32,
    actorder: bool,
    dt: ScaleDtype,
) -> Result<(CompressedLinear, Vec<String>)> {
    check_scheme(&scheme, w.cols).map_err(|e| name_layer(id, e))?;
    if block_size == 0 {
        return Err(PareError::Usage(format!(
            "{id}: block_size must be positive"
        )));
    }
    if !(dampening >= 0.0 && dampening.is_finite()) {
        return Err(PareError::Usage(format!(
            "{id}: dampening {dampening} must be ≥ 0"
        )));
    }
    let h = hessian_for(id, stats, w.cols)?;
    let (rows, d) = (w.rows, w.cols);
    let gc = scheme.group_cols(d);
    let ng = scheme.n_groups(d);
    let params = static_params(w, &scheme, dt);

    // Processing order and the permuted Hessian.
    let perm: Vec<usize> = if actorder {
        math::act_order(&(0..d).map(|j| h.get(j, j)).collect::<Vec<_>>())
    } else {
        (0..d).collect()
    };
    let hp = if actorder {
        let mut data = vec![0f32; d * d];
        for (p, &i) in perm.iter().enumerate() {
            let src = h.row(i);
            for (q, &j) in perm.iter().enumerate() {
                data[p * d + q] = src[j];
            }
        }
        Matrix::from_vec(d, d, data)
    } else {
        h.clone()
    };
    let f = inverse_factor(id, &hp, dampening)?;

    let mut wp = vec![0f32; rows * d];
    let mut frozen = vec![false; rows * d];
    for r in 0..rows {
        let src = w.row(r);
        for (p, &j) in perm.iter().enumerate() {
            wp[r * d + p] = src[j];
            frozen[r * d + p] = src[j] == 0.0;
        }
        for &p in &f.dead {
            wp[r * d + p] = 0.0;
            frozen[r * d + p] = true;
        }
    }
    let group_of: Vec<usize> = perm.iter().map(|j| j / gc).collect();
    let mut q = vec![0i8; rows * d];
    let grid = math::Grid {
        scheme: &scheme,
        dt,
        params: &params,
        n_groups: ng,
    };
    math::gptq_sweep(
        &mut wp, d, &f.u, block_size, &perm, &group_of, &frozen, grid, &mut q,
    );

    let mut out = Matrix::zeros(rows, d);
    for r in 0..rows {
        let dst = out.row_mut(r);
        for (p, &j) in perm.iter().enumerate() {
            dst[j] = wp[r * d + p];
        }
    }
    let bad = out.non_finite();
    if bad > 0 {
        return Err(PareError::Numerical(format!(
            "{id}: GPTQ produced {bad} non-finite weights"
        )));
    }
    let quant = QuantizedWeight {
        scheme,
        q,
        scales: params.iter().map(|p| p.scale).collect(),
        zero_points: (!scheme.symmetric)
            .then(|| params.iter().map(|p| p.zero_point as i8).collect()),
    };
    Ok((
        CompressedLinear {
            weight: out,
            quant: Some(quant),
        },
        f.warnings,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::NofM;
    use crate::compress::hessian::tests::{correlated_x, rand_vec, stats_of};
    use crate::compress::quant::dequantize_value;
    use crate::compress::rtn::quantize_rtn;
    use crate::compress::sparsegpt::tests::rel_err;
    use crate::compress::wanda::wanda;

    fn on_grid(c: &CompressedLinear) {
        let qw = c.quant.as_ref().unwrap();
        let d = c.weight.cols;
        let gc = qw.scheme.group_cols(d);
        let ng = qw.scheme.n_groups(d);
        for r in 0..c.weight.rows {
            for j in 0..d {
                let p = GroupParams {
                    scale: qw.scales[r * ng + j / gc],
                    zero_point: qw
                        .zero_points
                        .as_ref()
                        .map_or(0, |z| z[r * ng + j / gc] as i32),
                };
                let qv = qw.q[r * d + j] as i32;
                assert!((qw.scheme.qmin()..=qw.scheme.qmax()).contains(&qv));
                assert_eq!(c.weight.get(r, j), dequantize_value(qv, p), "({r},{j})");
            }
        }
    }

    #[test]
    fn beats_rtn_and_lies_on_the_grid() {
        let (rows, d, t) = (16, 64, 256);
        let x = correlated_x(61, t, d);
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(62, rows * d));
        for (scheme, actorder) in [
            (
                QuantScheme {
                    bits: 4,
                    group_size: None,
                    symmetric: true,
                },
                false,
            ),
            (
                QuantScheme {
                    bits: 4,
                    group_size: Some(16),
                    symmetric: false,
                },
                true,
            ),
            (
                QuantScheme {
                    bits: 3,
                    group_size: Some(32),
                    symmetric: true,
                },
                true,
            ),
        ] {
            let (g, _) = gptq("l", &w, &s, scheme, 16, 0.01, actorder, ScaleDtype::F32).unwrap();
            let r = quantize_rtn(&w, scheme, ScaleDtype::F32).unwrap();
            let (eg, er) = (rel_err(&w, &g.weight, &x, t), rel_err(&w, &r.weight, &x, t));
            assert!(eg < 0.8 * er, "{scheme:?}: gptq {eg} rtn {er}");
            on_grid(&g);
            // Static groups: the grid is RTN's.
            assert_eq!(
                g.quant.as_ref().unwrap().scales,
                r.quant.as_ref().unwrap().scales
            );
        }
    }

    #[test]
    fn zeros_of_a_pruned_matrix_are_preserved() {
        let (rows, d, t) = (8, 32, 128);
        let x = correlated_x(71, t, d);
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(72, rows * d));
        let pruned = wanda("l", &w, &s, 0.0, Some(NofM { n: 2, m: 4 }))
            .unwrap()
            .weight;
        let scheme = QuantScheme {
            bits: 4,
            group_size: Some(8),
            symmetric: false,
        };
        let (g, _) = gptq("l", &pruned, &s, scheme, 8, 0.01, true, ScaleDtype::BF16).unwrap();
        for (a, b) in pruned.data.iter().zip(&g.weight.data) {
            if *a == 0.0 {
                assert_eq!(*b, 0.0);
            }
        }
        assert!(g.weight.satisfies_n_of_m(2, 4));
    }

    #[test]
    fn bad_group_names_the_layer() {
        let w = Matrix::zeros(2, 12);
        let s = stats_of(&rand_vec(1, 24 * 12), 24, 12);
        let scheme = QuantScheme {
            bits: 4,
            group_size: Some(8),
            symmetric: true,
        };
        let e = gptq(
            "blocks.0.mlp.gate",
            &w,
            &s,
            scheme,
            8,
            0.01,
            false,
            ScaleDtype::F32,
        )
        .unwrap_err();
        assert!(e.to_string().contains("blocks.0.mlp.gate"), "{e}");
    }
}
