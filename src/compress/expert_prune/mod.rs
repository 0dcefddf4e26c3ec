//! Static expert pruning: removes a fraction of the experts of every MoE block, ranked by a
//! saliency measured on the calibration set, and writes a checkpoint with fewer experts
//! (`num_local_experts` / `num_experts` edited, router rows removed, experts renumbered in
//! order). Saliencies (see [`saliency`]):
//!
//! * `reap` (default; Lasby et al. 2025, "REAP the Experts", arXiv 2510.13999, as
//!   CerebrasResearch/reap computes it): `S_e = (1/|X_e|) Σ_{x∈X_e} g_e(x)·‖f_e(x)‖₂`, the mean
//!   over the tokens routed to expert `e` of its gate weight (as the forward applies it) times
//!   the L2 norm of its output;
//! * `frequency`: tokens routed to the expert;
//! * `random`: a seeded random order (a baseline).
//!
//! The same number of experts, `round(fraction · E)`, is removed from every MoE block (the config
//! has one expert count); the kept count must stay at least `num_experts_per_tok`. Ties keep the
//! lower expert index. The router softmax then runs over the kept experts only, as transformers
//! runs the written checkpoint.
//!
//! Recipe: `- expert-prune: { fraction: 0.25, saliency: reap }` (targets: the MoE blocks'
//! routers, `blocks.*.moe.router`, by default). It runs on each MoE block before the block's
//! other steps, whose targets name experts by their original index.

pub mod saliency;

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{Compressor, LinearInput, LinearOutput, MethodKind};
use crate::error::{PareError, Result};
use crate::id::LinearRole;
use crate::stats::StatSet;

pub use saliency::{Saliency, SaliencyTap, choose_kept};

/// The name recipes use.
pub const NAME: &str = "expert-prune";

/// The targets when a step names none: every MoE block's router.
static ROUTERS: LazyLock<Vec<String>> = LazyLock::new(|| vec!["blocks.*.moe.router".into()]);

/// `expert-prune:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Fraction of each MoE block's experts to remove, in (0, 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// `reap` (default), `frequency` or `random`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saliency: Option<String>,
    /// Seed of `saliency: random` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Routers of the blocks to prune (default `blocks.*.moe.router`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked expert-pruning parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    pub fraction: f32,
    pub saliency: Saliency,
    /// Experts in each pruned block before and after.
    pub experts: usize,
    pub kept: usize,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (
            Some(self.targets.as_deref().unwrap_or(ROUTERS.as_slice())),
            self.ignore.as_deref(),
        )
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        if let Some(l) = ctx.targets.iter().find(|l| l.id.role != LinearRole::Router) {
            return Err(ctx.err(
                "targets",
                format!(
                    "`{}` is not an MoE router; expert-prune targets routers (`blocks.*.moe.router`), one per block whose experts it prunes",
                    l.id
                ),
            ));
        }
        let Some(first) = ctx.targets.first() else {
            return Err(ctx.err("targets", "no MoE router matched: the model has no experts"));
        };
        let experts = first.rows;
        let fraction = match self.fraction {
            Some(f) if f > 0.0 && f < 1.0 => f,
            Some(f) => {
                return Err(ctx.err(
                    "fraction",
                    format!("fraction {f} is outside (0, 1): it is the share of each block's experts to remove, e.g. 0.25"),
                ));
            }
            None => {
                return Err(ctx.err(
                    "fraction",
                    "required: the share of each MoE block's experts to remove, e.g. 0.25",
                ));
            }
        };
        let removed = (fraction * experts as f64).round() as usize;
        if removed == 0 || removed >= experts {
            return Err(ctx.err(
                "fraction",
                format!(
                    "fraction {fraction} of {experts} experts removes {removed}; expected between 1 and {}",
                    experts - 1
                ),
            ));
        }
        let saliency = match self.saliency.as_deref().unwrap_or("reap") {
            "reap" => Saliency::Reap,
            "frequency" => Saliency::Frequency,
            "random" => Saliency::Random {
                seed: self.seed.unwrap_or(0),
            },
            other => {
                return Err(ctx.err(
                    "saliency",
                    format!("unknown saliency `{other}`; expected reap, frequency or random"),
                ));
            }
        };
        if self.seed.is_some() && !matches!(saliency, Saliency::Random { .. }) {
            return Err(ctx.err("seed", "`seed` applies to `saliency: random` only"));
        }
        Ok(Params {
            fraction: fraction as f32,
            saliency,
            experts,
            kept: experts - removed,
        })
    }
}

impl Compressor for Params {
    fn kind(&self) -> MethodKind {
        MethodKind::Prune { pattern: None }
    }

    /// The saliency pass gathers its own statistics ([`SaliencyTap`]) before the block's other
    /// steps; the per-linear statistics need nothing.
    fn stats(&self) -> StatSet {
        StatSet::EMPTY
    }

    /// Experts are removed whole by the block loop, not linear by linear.
    fn compress(&self, _input: &LinearInput<'_>) -> Result<LinearOutput> {
        Err(PareError::Internal(
            "expert-prune removes whole experts in the block loop; it has no per-linear form"
                .into(),
        ))
    }
}
