//! Wanda (Sun, Liu, Bair, Kolter 2023; ALGORITHMS.md §2): prune by `|W_ij| · ‖X_j‖₂`, compared
//! within each output row, no weight update. Needs the per-column squared input norms.
//!
//! Defaults as the reference: every row gets exactly `floor(d_in · p)` zeros (ties → lower
//! column pruned first); N:M keeps the N best-scored of every aligned group of M columns (a
//! shorter tail group keeps its proportional share).
//!
//! Recipe: `- wanda: { sparsity: 0.5 }` or `- wanda: { pattern: "2:4" }`.

pub mod math;

use serde::{Deserialize, Serialize};

use crate::allocate::Profiler;
use crate::allocate::owl::{self, Owl, ProfileSpec};
use crate::compress::kit::select::tail_note;
use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, LinearInput, LinearOutput, MethodKind, NofM, pattern_name,
};
use crate::error::Result;
use crate::id::LinearId;
use crate::stats::{StatKind, StatSet};

/// The name recipes use.
pub const NAME: &str = "wanda";

/// `wanda:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Fraction of weights set to zero, in [0, 1). Required for unstructured pruning; for `N:M`
    /// optional and, if given, must equal 1 − N/M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// `unstructured` (default) or `N:M`: keep N of every M consecutive input weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Pre-pass that decides per-block sparsities: `{ owl: { m: 5, lambda: 0.08 } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked Wanda parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    pub sparsity: f32,
    #[serde(serialize_with = "pattern_name")]
    pub pattern: Option<NofM>,
    /// OWL per-block sparsities (decided by the profile pass).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owl: Option<Owl>,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        let (sparsity, pattern) = ctx.prune(self.sparsity, self.pattern.as_deref())?;
        let owl = owl::resolve(ctx, self.profile.as_ref(), sparsity, pattern)?;
        Ok(Params {
            sparsity,
            pattern,
            owl,
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
        StatSet::of(&[StatKind::SqNorms])
    }

    fn profilers(&self, step: usize, targets: &[LinearId]) -> Vec<Box<dyn Profiler>> {
        owl::profilers(self.owl, step, self.sparsity, targets)
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let norms = math::column_norms(input.sq_norms()?);
        let mut out = input.weight().clone();
        let mut notes = Vec::new();
        match input.pattern(self.pattern) {
            Some(nm) => {
                math::prune_rows_n_of_m(&mut out.data, out.cols, &norms, nm);
                notes.extend(tail_note(out.cols, nm));
            }
            None => math::prune_rows(
                &mut out.data,
                out.cols,
                &norms,
                input.sparsity(self.sparsity),
            ),
        }
        Ok(LinearOutput::new(CompressedLinear::pruned(out)).with_notes(notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::testing::{fixture_with, run};
    use crate::matrix::Matrix;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};

    #[test]
    fn every_row_gets_exact_sparsity() {
        let (rows, d, t) = (7, 20, 50);
        let w = Matrix::from_vec(rows, d, rand_vec(11, rows * d));
        let f = fixture_with(&w, stats_of(&correlated_x(12, t, d), t, d));
        let p = Params {
            sparsity: 0.3,
            pattern: None,
            owl: None,
        };
        let c = run(&p, &f).linear;
        for r in 0..rows {
            assert_eq!(
                c.weight.row(r).iter().filter(|v| **v == 0.0).count(),
                6,
                "row {r}"
            );
        }
        let p = Params {
            sparsity: 0.75,
            pattern: Some(NofM { n: 1, m: 4 }),
            owl: None,
        };
        let c = run(&p, &f).linear;
        assert!(c.weight.satisfies_n_of_m(1, 4));
        assert_eq!(c.weight.sparsity(), 0.75);
    }

    #[test]
    fn mismatched_stats_are_an_internal_fault() {
        let w = Matrix::zeros(2, 4);
        let f = fixture_with(&Matrix::zeros(2, 4), stats_of(&[1.0; 3], 1, 3));
        let _ = w;
        let p = Params {
            sparsity: 0.5,
            pattern: None,
            owl: None,
        };
        let e = p.compress(&f.input()).unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
    }
}
