//! SparseGPT (Frantar & Alistarh 2023; ALGORITHMS.md §3): one-shot pruning with OBS weight
//! updates. Needs the layer Hessian `H = (2/n) Σ x xᵀ`.
//!
//! Defaults as the reference: block 128, dampening 0.01·mean(diag H), adaptive mask per block
//! (unstructured sparsity is exact per 128-column block across all rows, not per row), N:M per
//! row and group from the updated weights. Dead input columns are zeroed. Unlike the reference,
//! exactly `floor(rows·B·p)` weights are pruned per block (the reference's `≤ thr` prunes one
//! more, plus ties), and unlike llm-compressor a failed Cholesky is retried with 10× the damping
//! (three times, each noted) and then reported as an error, never replaced by the identity.
//!
//! Recipe: `- sparsegpt: { sparsity: 0.5, block_size: 128, dampening: 0.01 }`.

pub mod math;

use serde::{Deserialize, Serialize};

use crate::allocate::Profiler;
use crate::allocate::owl::{self, Owl, ProfileSpec};
use crate::compress::kit::obs::inverse_factor;
use crate::compress::kit::select::tail_note;
use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, LinearInput, LinearOutput, MethodKind, NofM, pattern_name,
};
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::stats::{StatKind, StatSet};

/// The name recipes use.
pub const NAME: &str = "sparsegpt";

/// `sparsegpt:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Columns per lazy-update block (default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    /// Relative dampening λ = dampening · mean(diag H) (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    /// Pre-pass that decides per-block sparsities: `{ owl: { m: 5, lambda: 0.08 } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked SparseGPT parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    pub sparsity: f32,
    #[serde(serialize_with = "pattern_name")]
    pub pattern: Option<NofM>,
    /// OWL per-block sparsities (decided by the profile pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owl: Option<Owl>,
    pub block_size: usize,
    pub dampening: f32,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        let (sparsity, pattern) = ctx.prune(self.sparsity, self.pattern.as_deref())?;
        let owl = owl::resolve(ctx, self.profile.as_ref(), sparsity, pattern)?;
        let block_size = ctx.block_size(self.block_size, pattern)?;
        for l in &ctx.targets {
            if (block_size as u64) * (l.rows as u64) > u32::MAX as u64 {
                return Err(ctx.err(
                    "block_size",
                    format!("{} rows × block {block_size} of `{}` is too large (at most 2^32 weights per block)", l.rows, l.id),
                ));
            }
        }
        Ok(Params {
            sparsity,
            pattern,
            owl,
            block_size,
            dampening: ctx.dampening(self.dampening)?,
        })
    }
}

impl Compressor for Params {
    fn fallback(&self) -> Option<crate::compress::Method> {
        Some(crate::compress::magnitude::Params::fallback(
            self.sparsity,
            self.pattern,
            self.owl,
        ))
    }

    fn kind(&self) -> MethodKind {
        MethodKind::Prune {
            pattern: owl::step_pattern(self.pattern, self.owl),
        }
    }

    fn stats(&self) -> StatSet {
        StatSet::of(&[StatKind::Hessian])
    }

    fn profilers(&self, step: usize, targets: &[LinearId]) -> Vec<Box<dyn Profiler>> {
        owl::profilers(self.owl, step, self.sparsity, targets)
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let h = input.hessian()?;
        let f = input.inverse_factor(self.dampening, false, || {
            inverse_factor(h, self.dampening)
        })?;
        let mut out = input.weight().clone();
        let d = out.cols;
        for &j in &f.dead {
            for r in 0..out.rows {
                out.data[r * d + j] = 0.0;
            }
        }
        let rule = match input.pattern(self.pattern) {
            Some(nm) => math::MaskRule::NofM(nm),
            None => math::MaskRule::Unstructured(input.sparsity(self.sparsity)),
        };
        math::sparsegpt_sweep(&mut out.data, d, &f.u, self.block_size, rule);
        let bad = out.non_finite();
        if bad > 0 {
            return Err(PareError::Numerical(format!(
                "SparseGPT produced {bad} non-finite weights"
            )));
        }
        let mut notes = f.warnings.clone();
        if let Some(nm) = input.pattern(self.pattern) {
            notes.extend(tail_note(d, nm));
        }
        Ok(LinearOutput::new(CompressedLinear::pruned(out)).with_notes(notes))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::compress::testing::{fixture_with, run};
    use crate::matrix::Matrix;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};

    /// ‖(W − W')Xᵀ‖ / ‖W Xᵀ‖ computed directly from the activations.
    pub(crate) fn rel_err(w: &Matrix, w2: &Matrix, x: &[f32], t: usize) -> f64 {
        let d = w.cols;
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for r in 0..w.rows {
            for k in 0..t {
                let xs = &x[k * d..(k + 1) * d];
                let dot = |m: &Matrix| -> f64 {
                    m.row(r)
                        .iter()
                        .zip(xs)
                        .map(|(p, q)| (*p as f64) * (*q as f64))
                        .sum()
                };
                let (a, b) = (dot(w), dot(w2));
                num += (a - b) * (a - b);
                den += a * a;
            }
        }
        (num / den).sqrt()
    }

    fn params(sparsity: f32, pattern: Option<NofM>, block_size: usize) -> Params {
        Params {
            sparsity,
            pattern,
            owl: None,
            block_size,
            dampening: 0.01,
        }
    }

    #[test]
    fn sparsegpt_beats_wanda_beats_magnitude() {
        let (rows, d, t) = (16, 64, 256);
        let x = correlated_x(31, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(32, rows * d));
        let f = fixture_with(&w, stats_of(&x, t, d));
        let sg = run(&params(0.5, None, 16), &f);
        assert!(sg.notes.is_empty());
        let wa = run(
            &crate::compress::wanda::Params {
                sparsity: 0.5,
                pattern: None,
                owl: None,
            },
            &f,
        );
        let mg = run(
            &crate::compress::magnitude::Params {
                sparsity: 0.5,
                pattern: None,
                owl: None,
            },
            &f,
        );
        let (e_sg, e_wa, e_mg) = (
            rel_err(&w, &sg.linear.weight, &x, t),
            rel_err(&w, &wa.linear.weight, &x, t),
            rel_err(&w, &mg.linear.weight, &x, t),
        );
        assert!(
            e_sg < e_wa && e_wa < e_mg,
            "sparsegpt {e_sg} wanda {e_wa} magnitude {e_mg}"
        );
        assert!((sg.linear.weight.sparsity() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn n_of_m_counts_exact() {
        let (rows, d, t) = (8, 32, 100);
        let x = correlated_x(41, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(42, rows * d));
        let f = fixture_with(&w, stats_of(&x, t, d));
        for (n, m) in [(2, 4), (4, 8), (1, 4)] {
            let c = run(&params(0.0, Some(NofM { n, m }), 16), &f).linear;
            assert!(c.weight.satisfies_n_of_m(n, m));
            assert_eq!(
                c.weight.data.iter().filter(|v| **v == 0.0).count(),
                rows * d * (m - n) / m
            );
        }
    }

    #[test]
    fn n_of_m_tail_group_is_proportional() {
        // d_in 36 with 4:8 and block 16: whole groups keep 4 of 8, the tail of 4 keeps 2.
        let (rows, d, t) = (5, 36, 120);
        let x = correlated_x(43, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(44, rows * d));
        let f = fixture_with(&w, stats_of(&x, t, d));
        let out = run(&params(0.0, Some(NofM { n: 4, m: 8 }), 16), &f);
        for r in 0..rows {
            let row = out.linear.weight.row(r);
            let kept = |a: usize, b: usize| row[a..b].iter().filter(|v| **v != 0.0).count();
            for g in 0..4 {
                assert_eq!(kept(g * 8, g * 8 + 8), 4, "row {r} group {g}");
            }
            assert_eq!(kept(32, 36), 2, "row {r} tail");
        }
        assert!(out.notes.iter().any(|n| n.contains("not exactly 4:8")));
    }

    #[test]
    fn dead_columns_are_zeroed_and_noted() {
        let (rows, d, t) = (3, 8, 30);
        let mut x = correlated_x(51, t, d);
        for k in 0..t {
            x[k * d + 2] = 0.0;
        }
        let w = Matrix::from_vec(rows, d, rand_vec(52, rows * d));
        let out = run(
            &params(0.25, None, 8),
            &fixture_with(&w, stats_of(&x, t, d)),
        );
        assert!((0..rows).all(|r| out.linear.weight.get(r, 2) == 0.0));
        assert!(
            out.notes.iter().any(|m| m.contains("dead")),
            "{:?}",
            out.notes
        );
    }
}
