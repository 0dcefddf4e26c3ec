//! Magnitude pruning (ALGORITHMS.md §1): the data-free baseline. Unstructured sparsity uses one
//! threshold per matrix (wanda's `prune_magnitude`, sparsegpt `--gmp`); N:M keeps the N largest
//! `|W|` of every aligned group of M input columns in each row.
//!
//! Recipe: `- magnitude: { sparsity: 0.5 }` or `- magnitude: { pattern: "2:4" }`.
//!
//! Exactly `floor(numel · p)` weights are pruned, ties broken by position (see
//! [`crate::compress::kit::select`]); the reference prunes `|W| ≤ thr` and so slightly
//! over-prunes on ties.

pub mod math;

use serde::{Deserialize, Serialize};

use crate::allocate::Profiler;
use crate::allocate::owl::{self, Owl, ProfileSpec};
use crate::compress::kit::select::{prune_n_of_m_rows, tail_note};
use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, LinearInput, LinearOutput, MethodKind, NofM, pattern_name,
};
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::stats::StatSet;

/// The name recipes use.
pub const NAME: &str = "magnitude";

/// `magnitude:` as written.
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

/// Checked magnitude parameters.
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

impl Params {
    /// Magnitude pruning to the same sparsity and pattern as a data-driven pruner: its data-free
    /// form ([`Compressor::fallback`] of Wanda and SparseGPT).
    pub fn fallback(sparsity: f32, pattern: Option<NofM>, owl: Option<Owl>) -> crate::compress::Method {
        crate::compress::Method::Magnitude(Params {
            sparsity,
            pattern,
            owl,
        })
    }
}

impl Compressor for Params {
    fn kind(&self) -> MethodKind {
        MethodKind::Prune {
            pattern: owl::step_pattern(self.pattern, self.owl),
        }
    }

    fn stats(&self) -> StatSet {
        StatSet::EMPTY
    }

    fn profilers(&self, step: usize, targets: &[LinearId]) -> Vec<Box<dyn Profiler>> {
        owl::profilers(self.owl, step, self.sparsity, targets)
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let mut out = input.weight().clone();
        let mut notes = Vec::new();
        match input.pattern(self.pattern) {
            Some(nm) => {
                prune_n_of_m_rows(&mut out.data, out.cols, nm, |_, v| v.abs());
                notes.extend(tail_note(out.cols, nm));
            }
            None => {
                if out.data.len() > u32::MAX as usize {
                    return Err(PareError::Usage(format!(
                        "{} weights are too many for per-matrix selection (max 2^32)",
                        out.data.len()
                    )));
                }
                math::prune_magnitude_unstructured(&mut out.data, input.sparsity(self.sparsity));
            }
        }
        Ok(LinearOutput::new(CompressedLinear::pruned(out)).with_notes(notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::testing::{fixture, run};
    use crate::matrix::Matrix;

    #[test]
    fn per_matrix_threshold_not_per_row() {
        // Row 0 holds all the small weights: a per-matrix threshold empties it.
        let w = Matrix::from_vec(2, 4, vec![0.1, 0.2, 0.3, 0.4, 5.0, 6.0, 7.0, 8.0]);
        let p = Params {
            sparsity: 0.5,
            pattern: None,
            owl: None,
        };
        let out = run(&p, &fixture(&w));
        assert_eq!(
            out.linear.weight.data,
            vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0]
        );
        assert!(out.linear.quant.is_none());
        assert_eq!(out.linear.mask.as_ref().map(|m| m.count()), Some(4));
    }

    #[test]
    fn n_of_m_tail_is_proportional_and_noted() {
        let w = Matrix::from_vec(1, 6, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let p = Params {
            sparsity: 0.5,
            pattern: Some(NofM { n: 2, m: 4 }),
            owl: None,
        };
        let out = run(&p, &fixture(&w));
        assert_eq!(out.linear.weight.data, vec![0.0, 0.0, 3.0, 4.0, 0.0, 6.0]);
        assert!(
            out.notes.iter().any(|n| n.contains("not exactly 2:4")),
            "{:?}",
            out.notes
        );
    }
}
