//! GBLM-Pruner (Das, Sun, Ma, Shen 2023, "Beyond Size: How Gradients Shape Pruning Decisions";
//! VILA-Lab/GBLM-Pruner `prune_gblm`; ALGORITHMS.md §4): Wanda's score plus a gradient term,
//! `S_ij = |W_ij|·‖X_j‖₂ + |W_ij|·G_ij`, compared within each output row, no weight update.
//!
//! - `‖X_j‖₂` is Wanda's `sqrt` of the mean over sequences of each sequence's `Σ_t x_tj²`,
//!   gathered by the sequential pass from the already-pruned blocks below, as the reference.
//! - `G_ij = sqrt(Σ_n (α·∂L_n/∂W_ij)²)` comes once from the *dense* model: per calibration
//!   sequence `n` (batch 1) the gradient of its mean next-token loss, α = 100 (the reference's
//!   `--scale`). pare computes it with a streamed backward that holds one block at a time
//!   ([`crate::pipeline::gradients`]), or reads the artefact `pare gradients` wrote
//!   (`gradients: FILE`; a file from another model or with other shapes is refused, exit 2).
//! - Selection as Wanda: every row gets exactly `floor(d_in · p)` zeros (ties → lower column);
//!   N:M keeps the N best of every aligned group of M. The reference's defaults: α = 100, 128
//!   calibration sequences, the ℓ2 accumulator (its ℓ1 and `--gradient_inv` variants are not
//!   here). Unlike the reference (fp16 model, fp16 artefact) the gradients are computed and
//!   stored in f32.
//! - OWL (`profile: { owl: … }`) decides per-block sparsities from Wanda's outlier ratios.
//! - Memory and time of the gradient pass: [`crate::pipeline::gradients`].
//!
//! Recipe: `- gblm: { sparsity: 0.5 }`, `- gblm: { pattern: "2:4", gradients: grads.safetensors }`.

pub mod math;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::allocate::Profiler;
use crate::allocate::owl::ProfileSpec;
use crate::compress::MethodSpec;
use crate::compress::kit::select::tail_note;
use crate::compress::spec::ResolveCtx;
use crate::compress::wanda;
use crate::compress::{
    CompressedLinear, Compressor, GradientSource, LinearInput, LinearOutput, MethodKind,
};
use crate::error::Result;
use crate::gradients::DEFAULT_ALPHA;
use crate::id::LinearId;
use crate::stats::StatSet;

/// The name recipes use.
pub const NAME: &str = "gblm";

/// `gblm:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Fraction of weights set to zero, in [0, 1). Required for unstructured pruning; for `N:M`
    /// optional and, if given, must equal 1 − N/M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// `unstructured` (default) or `N:M`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// A gradient artefact written by `pare gradients` (relative to the recipe's folder). Without
    /// it, the gradient pass runs over the recipe's calibration before the block loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gradients: Option<String>,
    /// The gradient scale α of a pass this step runs (default 100, the reference's); a file
    /// keeps the α it was made with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Pre-pass that decides per-block sparsities: `{ owl: { m: 5, lambda: 0.08 } }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked GBLM parameters: Wanda's (sparsity, pattern, OWL; the same selection) and where the
/// gradients come from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    #[serde(flatten)]
    pub select: wanda::Params,
    pub gradients: GradientSource,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        let select = wanda::Spec {
            sparsity: self.sparsity,
            pattern: self.pattern.clone(),
            profile: self.profile.clone(),
            targets: None,
            ignore: None,
        }
        .resolve(ctx)?;
        let gradients = match (&self.gradients, self.alpha) {
            (Some(_), Some(_)) => {
                return Err(ctx.err(
                    "alpha",
                    "a gradient file keeps the alpha it was made with; give `gradients` or `alpha`, not both",
                ));
            }
            (Some(f), None) => {
                let base = ctx.recipe.parent().unwrap_or(std::path::Path::new(""));
                let p = base.join(f);
                if !p.is_file() {
                    return Err(ctx.err(
                        "gradients",
                        format!(
                            "the gradient file {} does not exist (paths are relative to the recipe's folder); write one with `pare gradients --model MODEL --recipe RECIPE --out FILE`",
                            p.display()
                        ),
                    ));
                }
                GradientSource::File(PathBuf::from(p))
            }
            (None, a) => {
                let alpha = a.unwrap_or(DEFAULT_ALPHA as f64);
                if !(alpha.is_finite() && alpha > 0.0) {
                    return Err(ctx.err(
                        "alpha",
                        format!("alpha {alpha} must be a positive scale, e.g. 100"),
                    ));
                }
                GradientSource::Pass {
                    alpha: alpha as f32,
                }
            }
        };
        Ok(Params { select, gradients })
    }
}

impl Compressor for Params {
    fn fallback(&self) -> Option<crate::compress::Method> {
        self.select.fallback()
    }

    fn kind(&self) -> MethodKind {
        self.select.kind()
    }

    fn stats(&self) -> StatSet {
        self.select.stats()
    }

    fn profilers(&self, step: usize, targets: &[LinearId]) -> Vec<Box<dyn Profiler>> {
        self.select.profilers(step, targets)
    }

    fn gradients(&self) -> Option<GradientSource> {
        Some(self.gradients.clone())
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let norms = crate::compress::wanda::math::column_norms(input.sq_norms()?);
        let g = input.gradients()?;
        let mut out = input.weight().clone();
        let mut notes = Vec::new();
        match input.pattern(self.select.pattern) {
            Some(nm) => {
                math::prune_rows_n_of_m(&mut out.data, out.cols, &norms, g, nm);
                notes.extend(tail_note(out.cols, nm));
            }
            None => math::prune_rows(
                &mut out.data,
                out.cols,
                &norms,
                g,
                input.sparsity(self.select.sparsity),
            ),
        }
        Ok(LinearOutput::new(CompressedLinear::pruned(out)).with_notes(notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::NofM;
    use crate::compress::testing::{fixture_with, run};
    use crate::matrix::Matrix;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};

    fn params(sparsity: f32, pattern: Option<NofM>) -> Params {
        Params {
            select: crate::compress::wanda::Params {
                sparsity,
                pattern,
                owl: None,
            },
            gradients: GradientSource::Pass { alpha: 100.0 },
        }
    }

    #[test]
    fn zero_gradients_give_wanda_and_large_ones_protect_weights() {
        let (rows, d, t) = (6, 16, 40);
        let w = Matrix::from_vec(rows, d, rand_vec(3, rows * d));
        let mut f = fixture_with(&w, stats_of(&correlated_x(4, t, d), t, d));
        f.gradients = Some(vec![0.0; rows * d]);
        let wanda = crate::compress::wanda::Params {
            sparsity: 0.5,
            pattern: None,
            owl: None,
        };
        assert_eq!(run(&params(0.5, None), &f).linear.weight, run(&wanda, &f).linear.weight);
        // A huge gradient on every weight of column 0 keeps column 0 in every row.
        let mut g = vec![0.0; rows * d];
        for r in 0..rows {
            g[r * d] = 1e6;
        }
        f.gradients = Some(g);
        for p in [params(0.75, None), params(0.5, Some(NofM { n: 2, m: 4 }))] {
            let c = run(&p, &f).linear.weight;
            for r in 0..rows {
                assert_ne!(c.row(r)[0], 0.0, "row {r}");
                assert_eq!(c.row(r).iter().filter(|v| **v == 0.0).count(), d * 3 / 4 - if p.select.pattern.is_some() { d / 4 } else { 0 });
            }
        }
    }

    #[test]
    fn a_missing_or_misshapen_gradient_is_an_internal_fault() {
        let w = Matrix::from_vec(2, 4, rand_vec(1, 8));
        let mut f = fixture_with(&w, stats_of(&correlated_x(2, 8, 4), 8, 4));
        let e = params(0.5, None).compress(&f.input()).unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
        f.gradients = Some(vec![0.0; 7]);
        let e = params(0.5, None).compress(&f.input()).unwrap_err();
        assert_eq!(e.exit_code(), 1, "{e}");
    }
}
