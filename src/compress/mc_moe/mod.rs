//! MC-MoE's PMQ (Huang et al. 2024, arXiv 2410.06270, Aaronhuang-778/MC-MoE; ALGORITHMS.md
//! §8): mixed-precision experts. A profile pass over the dense model measures each expert's
//! routing importance and quantisation loss per candidate width ([`pmq`]); an integer program
//! per MoE block picks the widths under an average-bits budget ([`ilp`]); then GPTQ quantises
//! every targeted linear, each expert at its width and attention/router at `format`'s.
//!
//! Recipe: `- mc-moe: { budget_bits: 2.5, widths: [2, 3, 4], alpha: 1, beta: 1.5,
//! format: int4-g128-asym }`.
//! - `budget_bits`: average bits per expert weight of each block (every expert of a block has
//!   the same size, so this is the mean width); the block's budget is
//!   `floor(budget_bits · experts)` bits.
//! - `widths`: candidate expert widths (2–8, each must be a format `pare formats` lists with
//!   `format`'s grouping); the two widest each get at least one expert, as the reference.
//! - `format`: attention and router width, and the experts' group size and symmetry (the
//!   reference: 4 bits, groups of 128, asymmetric).
//! - `alpha`, `beta` (defaults 1 and 1.5, the reference's CLI); `tokens` (default 16384): the
//!   calibration tokens per block the loss is measured on; GPTQ's `block_size`, `dampening`,
//!   `actorder`.
//! - Targets: every block linear, routers included (default).
//!
//! Differences from the reference, on purpose: widths are pare's int2–int8 (the reference's
//! 1-bit `sign·mean|w|` is not offered: nothing pare exports can hold it); the loss uses pare's
//! RTN at the step's grouping; the program is solved exactly (microlp, checked by dynamic
//! programming) instead of with Gurobi.

pub mod ilp;
pub mod odp;
pub mod pmq;

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::allocate::Profiler;
use crate::compress::MethodSpec;
use crate::compress::gptq::{self, ActOrderSpec};
use crate::compress::spec::ResolveCtx;
use crate::compress::{Compressor, LinearInput, LinearOutput, MethodKind, QuantScheme};
use crate::error::Result;
use crate::id::{LinearId, LinearRole};
use crate::stats::StatSet;

/// The name recipes use.
pub const NAME: &str = "mc-moe";

/// The reference's α and β.
pub const DEFAULT_ALPHA: f64 = 1.0;
pub const DEFAULT_BETA: f64 = 1.5;
/// Calibration tokens per block for the loss, when not given.
pub const DEFAULT_TOKENS: usize = 16384;

/// Targets when a step names none: every block linear, MoE routers included.
static ALL_LINEARS: LazyLock<Vec<String>> = LazyLock::new(|| vec!["blocks.*".into()]);

/// `mc-moe:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_bits: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dampening: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actorder: Option<ActOrderSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// PMQ's checked parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pmq {
    pub budget_bits: f64,
    pub widths: Vec<u8>,
    pub alpha: f64,
    pub beta: f64,
    pub tokens: usize,
}

/// Checked MC-MoE parameters: PMQ, and the GPTQ that quantises.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    pub pmq: Pmq,
    pub gptq: gptq::Params,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (
            Some(self.targets.as_deref().unwrap_or(ALL_LINEARS.as_slice())),
            self.ignore.as_deref(),
        )
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        let g = gptq::Spec {
            format: self.format.clone(),
            block_size: self.block_size,
            dampening: self.dampening,
            actorder: self.actorder,
            targets: None,
            ignore: None,
        }
        .resolve(ctx)?;
        if !ctx
            .targets
            .iter()
            .any(|l| matches!(l.id.role, LinearRole::Expert { .. }))
        {
            return Err(ctx.err(
                "targets",
                "mc-moe allocates widths to MoE experts, and this step targets none (a dense model, or targets without `blocks.*.moe.experts.*`)",
            ));
        }
        let mut widths = self.widths.clone().unwrap_or_else(|| vec![2, 3, 4]);
        widths.sort_unstable();
        widths.dedup();
        if widths.len() < 2 {
            return Err(ctx.err("widths", "give at least two candidate widths, e.g. [2, 3, 4]"));
        }
        let grouping = |bits: u8| QuantScheme { bits, ..g.scheme };
        for &w in &widths {
            let s = grouping(w);
            if crate::compress::formats::scheme_name(&s).is_none() {
                return Err(ctx.err(
                    "widths",
                    format!(
                        "width {w} with {}'s grouping is not a format pare has (see `pare formats`: int2, int3, int4 and int8)",
                        self.format.as_deref().unwrap_or("the format")
                    ),
                ));
            }
        }
        let Some(budget) = self.budget_bits else {
            return Err(ctx.err("budget_bits", "required: the average bits per expert weight, e.g. 2.5"));
        };
        let (min, top, second) = (
            f64::from(widths[0]),
            f64::from(widths[widths.len() - 1]),
            f64::from(widths[widths.len() - 2]),
        );
        let experts = ctx
            .targets
            .iter()
            .filter_map(|l| match l.id.role {
                LinearRole::Expert { index, .. } => Some(index),
                _ => None,
            })
            .max()
            .map_or(0, |m| m + 1);
        // Every block must afford one expert at each of the two widest widths.
        let need = if experts >= 2 {
            (min * (experts - 2) as f64 + top + second) / experts as f64
        } else {
            min
        };
        if !(budget.is_finite() && budget >= need && budget <= top) {
            return Err(ctx.err(
                "budget_bits",
                format!(
                    "{budget} is outside [{need:.4}, {top}]: with {experts} experts per block and widths {widths:?} the budget must afford one expert at {top} and one at {second} bits, the rest at {min}, and cannot exceed the widest width"
                ),
            ));
        }
        let positive = |v: Option<f64>, d: f64, field: &str| -> Result<f64> {
            let x = v.unwrap_or(d);
            if x.is_finite() && x >= 0.0 {
                Ok(x)
            } else {
                Err(ctx.err(field, format!("{x} must be a finite number ≥ 0")))
            }
        };
        let tokens = self.tokens.unwrap_or(DEFAULT_TOKENS);
        if tokens == 0 {
            return Err(ctx.err("tokens", "must be at least 1"));
        }
        for l in &ctx.targets {
            if let Some(gs) = g.scheme.group_size
                && !l.cols.is_multiple_of(gs)
            {
                return Err(ctx.err(
                    "format",
                    format!("groups of {gs} do not divide `{}`'s d_in {}", l.id, l.cols),
                ));
            }
        }
        Ok(Params {
            pmq: Pmq {
                budget_bits: budget,
                widths,
                alpha: positive(self.alpha, DEFAULT_ALPHA, "alpha")?,
                beta: positive(self.beta, DEFAULT_BETA, "beta")?,
                tokens,
            },
            gptq: g,
        })
    }
}

impl Compressor for Params {
    fn kind(&self) -> MethodKind {
        MethodKind::Quantize
    }

    fn stats(&self) -> StatSet {
        self.gptq.stats()
    }

    /// GPTQ at the allocation's width (the experts') or `format`'s (attention, router).
    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        self.gptq.compress(input)
    }

    fn profilers(&self, step: usize, targets: &[LinearId]) -> Vec<Box<dyn Profiler>> {
        vec![Box::new(pmq::PmqProfiler::new(
            step,
            self.pmq.clone(),
            self.gptq.scheme,
            targets,
        ))]
    }

    fn fallback(&self) -> Option<crate::compress::Method> {
        self.gptq.fallback()
    }
}
