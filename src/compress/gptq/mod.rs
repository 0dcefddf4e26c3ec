//! GPTQ (Frantar et al. 2023; ALGORITHMS.md §7) with llm-compressor's `GPTQModifier`
//! conventions, which reference.json's `gptq-w4ch` used: scales and zero-points come up front
//! from the *unmodified* weight per (row, group) with the min-max observer of
//! [`crate::compress::quant`] (static groups, the same grid as RTN); `actorder` = llm-compressor's
//! `static`: columns are processed in descending `diag(H)` order while groups stay in natural
//! column order (no `g_idx` needed); dead columns zeroed; damping `0.01·mean(diag H)`; upper
//! Cholesky of `H⁻¹`; lazy blocks of 128 with error feedback.
//!
//! The mask is preserved: a weight an earlier step pruned (or that was exactly zero on entry)
//! gets the integer code of 0 and feeds no error forward, and updates other columns push into it
//! are discarded — so a 2:4-pruned matrix stays 2:4 (llm-compressor ≤ 0.12 did this when the
//! tensor was ≥ 5 % sparse; ≥ 0.13 densifies). Differs from llm-compressor on Cholesky failure:
//! retried with 10× damping, then an error (never a silent RTN fallback).
//!
//! Recipe: `- gptq: { format: int4-g128-sym, block_size: 128, dampening: 0.01, actorder: static }`.

pub mod math;

use serde::{Deserialize, Serialize};

use crate::compress::kit::obs::{InverseFactor, inverse_factor};
use crate::compress::kit::rtn::check_scheme;
use crate::compress::quant::{GroupParams, ScaleDtype, minmax_params};
use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, ExportHints, LinearInput, LinearOutput, Mask, MethodKind,
    QuantScheme, QuantizedWeight, scheme_fields,
};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;
use crate::stats::{StatKind, StatSet};

/// The name recipes use.
pub const NAME: &str = "gptq";

/// GPTQ column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActOrderSpec {
    #[serde(rename = "static", alias = "weight")]
    Static,
    #[serde(rename = "none")]
    Off,
}

/// `gptq:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// `static` (default: process columns by descending diag H, groups in natural order) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actorder: Option<ActOrderSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked GPTQ parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    #[serde(serialize_with = "scheme_fields")]
    pub scheme: QuantScheme,
    pub block_size: usize,
    pub dampening: f32,
    pub actorder: bool,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        Ok(Params {
            scheme: ctx.quant_scheme("format", self.format.as_deref())?,
            block_size: ctx.block_size(self.block_size, None)?,
            dampening: ctx.dampening(self.dampening)?,
            actorder: self.actorder.unwrap_or(ActOrderSpec::Static) == ActOrderSpec::Static,
        })
    }
}

impl Compressor for Params {
    fn scheme(&self) -> Option<QuantScheme> {
        Some(self.scheme)
    }
    fn fallback(&self) -> Option<crate::compress::Method> {
        Some(crate::compress::Method::Rtn(crate::compress::rtn::Params {
            scheme: self.scheme,
        }))
    }

    fn kind(&self) -> MethodKind {
        MethodKind::Quantize
    }

    fn stats(&self) -> StatSet {
        StatSet::of(&[StatKind::Hessian])
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let scheme = input.scheme(self.scheme);
        check_scheme(&scheme, input.weight().cols)?;
        let h = input.hessian()?;
        let perm = processing_order(h, self.actorder);
        let f = input.inverse_factor(self.dampening, self.actorder, || {
            permuted_factor(h, &perm, self.dampening)
        })?;
        let (linear, notes) = gptq_factored(
            input.weight(),
            input.current.mask.as_ref(),
            &perm,
            &f,
            scheme,
            self.block_size,
            input.scale_dtype,
        )?;
        Ok(LinearOutput {
            linear,
            hints: ExportHints {
                actorder_static: self.actorder,
            },
            notes,
        })
    }
}

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

/// GPTQ's processing order: columns by descending `diag(H)` when `actorder`, else natural.
pub fn processing_order(h: &Matrix, actorder: bool) -> Vec<usize> {
    if actorder {
        math::act_order(&(0..h.cols).map(|j| h.get(j, j)).collect::<Vec<_>>())
    } else {
        (0..h.cols).collect()
    }
}

/// The inverse factor GPTQ sweeps with: of `H` permuted to `perm` (`H[perm][:, perm]`).
pub fn permuted_factor(h: &Matrix, perm: &[usize], dampening: f32) -> Result<InverseFactor> {
    let d = h.cols;
    if perm.iter().enumerate().all(|(p, &i)| p == i) {
        return inverse_factor(h, dampening);
    }
    let mut data = vec![0f32; d * d];
    for (p, &i) in perm.iter().enumerate() {
        let src = h.row(i);
        for (q, &j) in perm.iter().enumerate() {
            data[p * d + q] = src[j];
        }
    }
    inverse_factor(&Matrix::from_vec(d, d, data), dampening)
}

/// GPTQ-quantises `w` with input Hessian `h`, holding the entries of `mask` at zero. Returns the
/// dequantised weight with its integer form and its mask (plus dead columns), and notes (dead
/// columns, Cholesky retries).
#[allow(clippy::too_many_arguments)]
pub fn gptq(
    w: &Matrix,
    mask: Option<&Mask>,
    h: &Matrix,
    scheme: QuantScheme,
    block_size: usize,
    dampening: f32,
    actorder: bool,
    dt: ScaleDtype,
) -> Result<(CompressedLinear, Vec<String>)> {
    check_scheme(&scheme, w.cols)?;
    let perm = processing_order(h, actorder);
    let f = permuted_factor(h, &perm, dampening)?;
    gptq_factored(w, mask, &perm, &f, scheme, block_size, dt)
}

/// [`gptq`] with the processing order `perm` and the inverse factor of `H[perm][:, perm]`
/// already computed ([`processing_order`], [`permuted_factor`]).
pub fn gptq_factored(
    w: &Matrix,
    mask: Option<&Mask>,
    perm: &[usize],
    f: &InverseFactor,
    scheme: QuantScheme,
    block_size: usize,
    dt: ScaleDtype,
) -> Result<(CompressedLinear, Vec<String>)> {
    check_scheme(&scheme, w.cols)?;
    let (rows, d) = (w.rows, w.cols);
    if perm.len() != d || f.u.len() != d * d {
        return Err(PareError::Internal(format!(
            "GPTQ: a [{rows}, {d}] weight got an order of {} columns and a factor of {} values",
            perm.len(),
            f.u.len()
        )));
    }
    let gc = scheme.group_cols(d);
    let ng = scheme.n_groups(d);
    let params = static_params(w, &scheme, dt);

    let mut wp = vec![0f32; rows * d];
    let mut frozen = vec![false; rows * d];
    for r in 0..rows {
        let src = w.row(r);
        for (p, &j) in perm.iter().enumerate() {
            wp[r * d + p] = src[j];
            frozen[r * d + p] = mask.is_some_and(|m| m.get(r * d + j));
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
        &mut wp, d, &f.u, block_size, perm, &group_of, &frozen, grid, &mut q,
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
            "GPTQ produced {bad} non-finite weights"
        )));
    }
    let quant = QuantizedWeight {
        scheme,
        q,
        scales: params.iter().map(|p| p.scale).collect(),
        zero_points: (!scheme.symmetric)
            .then(|| params.iter().map(|p| p.zero_point as i8).collect()),
    };
    let mut out_mask = mask.cloned().unwrap_or_else(|| Mask::empty(rows, d));
    for &p in &f.dead {
        for r in 0..rows {
            out_mask.set(r * d + perm[p]);
        }
    }
    Ok((
        CompressedLinear {
            weight: out,
            mask: (out_mask.count() > 0).then_some(out_mask),
            quant: Some(quant),
        },
        f.warnings.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::NofM;
    use crate::compress::kit::rtn::quantize_rtn;
    use crate::compress::quant::dequantize_value;
    use crate::compress::sparsegpt::tests::rel_err;
    use crate::compress::testing::{fixture_with, run};
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};

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
        let h = s.hessian.clone().unwrap();
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
            let (g, _) = gptq(&w, None, &h, scheme, 16, 0.01, actorder, ScaleDtype::F32).unwrap();
            let (r, rq) = quantize_rtn(&w, scheme, ScaleDtype::F32).unwrap();
            let (eg, er) = (rel_err(&w, &g.weight, &x, t), rel_err(&w, &r, &x, t));
            assert!(eg < 0.8 * er, "{scheme:?}: gptq {eg} rtn {er}");
            on_grid(&g);
            // Static groups: the grid is RTN's.
            assert_eq!(g.quant.as_ref().unwrap().scales, rq.scales);
        }
    }

    #[test]
    fn the_mask_of_a_pruned_matrix_is_preserved() {
        let (rows, d, t) = (8, 32, 128);
        let x = correlated_x(71, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(72, rows * d));
        let f = fixture_with(&w, stats_of(&x, t, d));
        let pruned = run(
            &crate::compress::wanda::Params {
                sparsity: 0.5,
                pattern: Some(NofM { n: 2, m: 4 }),
                owl: None,
            },
            &f,
        )
        .linear;
        let scheme = QuantScheme {
            bits: 4,
            group_size: Some(8),
            symmetric: false,
        };
        let h = f.stats.hessian(crate::model::TapPoint::AttnIn).unwrap();
        let (g, _) = gptq(
            &pruned.weight,
            pruned.mask.as_ref(),
            h,
            scheme,
            8,
            0.01,
            true,
            ScaleDtype::BF16,
        )
        .unwrap();
        let mask = pruned.mask.as_ref().unwrap();
        for i in 0..rows * d {
            if mask.get(i) {
                assert_eq!(g.weight.data[i], 0.0);
            }
        }
        assert!(g.weight.satisfies_n_of_m(2, 4));
        assert_eq!(g.mask.as_ref().unwrap().count(), mask.count());
    }

    #[test]
    fn a_group_that_does_not_divide_is_refused() {
        let w = Matrix::zeros(2, 12);
        let h = stats_of(&rand_vec(1, 24 * 12), 24, 12).hessian.unwrap();
        let scheme = QuantScheme {
            bits: 4,
            group_size: Some(8),
            symmetric: true,
        };
        let e = gptq(&w, None, &h, scheme, 8, 0.01, false, ScaleDtype::F32).unwrap_err();
        assert!(e.to_string().contains("group size 8"), "{e}");
    }
}
