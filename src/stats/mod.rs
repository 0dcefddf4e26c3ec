//! Calibration statistics: an open vocabulary of what the block loop gathers at each tap point,
//! the accumulators that gather it, and the tap that feeds them.
//!
//! Methods declare what they need as a [`StatSet`]; the pipeline owns one accumulator per
//! [`TapPoint`] (so q/k/v share one Hessian and gate/up one Σx²) and hands the finished
//! [`Stats`] of the block to every compressor. Adding a statistic means adding a [`StatKind`]
//! and its accumulator here, never a callback.
//!
//! Normalisation follows the reference codes (ALGORITHMS.md §2, §3, §5): sums are divided by the
//! number of calibration *sequences*, not tokens, except the variance, which is a
//! token-weighted mean of per-sequence variances (DSnoT's).

mod accumulate;
mod tap;

pub use accumulate::Accumulator;
#[cfg(test)]
pub(crate) use accumulate::tests;
pub use tap::StatsTap;

use std::collections::BTreeMap;

use crate::error::{PareError, Result};
use crate::matrix::Matrix;
use crate::model::TapPoint;

/// One kind of statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatKind {
    /// `s_j = (1/n_seqs) Σ_t x_tj²` per input column (Wanda, GBLM, OWL).
    SqNorms,
    /// `H = (2/n_seqs) Σ_t x_t x_tᵀ`, `d × d` (SparseGPT, GPTQ, MaskLLM).
    Hessian,
    /// Per column `μ_j = (1/n_seqs) Σ_t x_tj` and the token-weighted mean of per-sequence biased
    /// variances `σ²_j` (DSnoT).
    MeanVar,
    /// Per column `max_t |x_tj|`: at an output point (`MlpDownOut`, `ExpertDownOut`) this is
    /// the Super-Experts statistic.
    MaxAbs,
    /// Per MoE expert: tokens routed, summed router probabilities and summed gate weights.
    Routing,
}

impl StatKind {
    const ALL: [StatKind; 5] = [
        StatKind::SqNorms,
        StatKind::Hessian,
        StatKind::MeanVar,
        StatKind::MaxAbs,
        StatKind::Routing,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    pub fn name(self) -> &'static str {
        match self {
            StatKind::SqNorms => "Σx²",
            StatKind::Hessian => "Hessian",
            StatKind::MeanVar => "mean/variance",
            StatKind::MaxAbs => "max |x|",
            StatKind::Routing => "routing counts",
        }
    }
}

/// A set of [`StatKind`]s: what a method needs, or what an accumulator gathers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatSet(u8);

impl StatSet {
    /// Nothing: a data-free method (magnitude, RTN, FineQuant).
    pub const EMPTY: StatSet = StatSet(0);

    /// The set holding exactly `kinds`.
    pub fn of(kinds: &[StatKind]) -> StatSet {
        StatSet(kinds.iter().fold(0, |a, k| a | k.bit()))
    }

    pub fn union(self, other: StatSet) -> StatSet {
        StatSet(self.0 | other.0)
    }

    pub fn contains(self, kind: StatKind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds gathered per tap point (everything but routing).
    pub fn per_point(self) -> StatSet {
        StatSet(self.0 & !StatKind::Routing.bit())
    }

    /// The kinds in the set, in declaration order.
    pub fn kinds(self) -> impl Iterator<Item = StatKind> {
        StatKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

/// DSnoT's per-column input mean and variance.
#[derive(Clone, Debug, PartialEq)]
pub struct MeanVar {
    /// `μ_j = (1/n_seqs) Σ_t x_tj` (sequence length × token mean, as the reference stores it).
    pub mean: Vec<f32>,
    /// Token-weighted mean over sequences of the biased per-sequence variance of column j.
    pub var: Vec<f32>,
}

/// The statistics of one tap point over the calibration set.
#[derive(Clone, Debug, PartialEq)]
pub struct PointStats {
    /// Width of the observed tensor (`d_in` of the linears reading it).
    pub width: usize,
    /// Calibration sequences observed (for an expert point: sequences of the batches seen).
    pub n_seqs: usize,
    /// Tokens observed (for an expert point: tokens routed to it).
    pub n_tokens: usize,
    pub sq_norms: Option<Vec<f32>>,
    pub hessian: Option<Matrix>,
    pub mean_var: Option<MeanVar>,
    pub max_abs: Option<Vec<f32>>,
}

/// Routing statistics of one MoE block, per expert.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Routing {
    /// Tokens routed to each expert (top-k membership).
    pub tokens: Vec<u64>,
    /// Σ over all tokens of the router's softmax probability (before top-k renormalisation).
    pub prob_sum: Vec<f64>,
    /// Σ over routed tokens of the renormalised gate weight.
    pub weight_sum: Vec<f64>,
    /// Tokens the router saw.
    pub total_tokens: u64,
}

impl Routing {
    pub fn new(experts: usize) -> Self {
        Self {
            tokens: vec![0; experts],
            prob_sum: vec![0.0; experts],
            weight_sum: vec![0.0; experts],
            total_tokens: 0,
        }
    }
}

/// Everything gathered for one block (or one stage of it): per tap point, plus routing.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    points: BTreeMap<TapPoint, PointStats>,
    routing: Option<Routing>,
}

fn missing(what: StatKind, p: TapPoint) -> PareError {
    PareError::Internal(format!(
        "statistic {} at {p:?} was needed but not gathered",
        what.name()
    ))
}

impl Stats {
    pub fn new(points: BTreeMap<TapPoint, PointStats>, routing: Option<Routing>) -> Self {
        Self { points, routing }
    }

    /// Adds the statistics of another stage of the same block.
    pub fn extend(&mut self, other: Stats) {
        self.points.extend(other.points);
        if other.routing.is_some() {
            self.routing = other.routing;
        }
    }

    /// Frees the statistics of `points` (a stage whose linears are compressed; a Hessian is
    /// `[in, in]` f32, 462 MiB for a 7B down projection). Routing is kept.
    pub fn remove_points(&mut self, points: &std::collections::BTreeSet<TapPoint>) {
        self.points.retain(|p, _| !points.contains(p));
    }

    pub fn point(&self, p: TapPoint) -> Option<&PointStats> {
        self.points.get(&p)
    }

    pub fn sq_norms(&self, p: TapPoint) -> Result<&[f32]> {
        self.point(p)
            .and_then(|s| s.sq_norms.as_deref())
            .ok_or_else(|| missing(StatKind::SqNorms, p))
    }

    pub fn hessian(&self, p: TapPoint) -> Result<&Matrix> {
        self.point(p)
            .and_then(|s| s.hessian.as_ref())
            .ok_or_else(|| missing(StatKind::Hessian, p))
    }

    pub fn mean_var(&self, p: TapPoint) -> Result<&MeanVar> {
        self.point(p)
            .and_then(|s| s.mean_var.as_ref())
            .ok_or_else(|| missing(StatKind::MeanVar, p))
    }

    pub fn max_abs(&self, p: TapPoint) -> Result<&[f32]> {
        self.point(p)
            .and_then(|s| s.max_abs.as_deref())
            .ok_or_else(|| missing(StatKind::MaxAbs, p))
    }

    pub fn routing(&self) -> Result<&Routing> {
        self.routing.as_ref().ok_or_else(|| {
            PareError::Internal("routing statistics were needed but not gathered".into())
        })
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn stat_sets_union_and_split() {
        let a = StatSet::of(&[StatKind::SqNorms]);
        let b = StatSet::of(&[StatKind::Hessian, StatKind::Routing]);
        let u = a.union(b);
        assert!(u.contains(StatKind::SqNorms) && u.contains(StatKind::Hessian));
        assert!(!u.contains(StatKind::MeanVar));
        assert!(!u.per_point().contains(StatKind::Routing));
        assert_eq!(
            u.kinds().collect::<Vec<_>>(),
            vec![StatKind::SqNorms, StatKind::Hessian, StatKind::Routing]
        );
        assert!(StatSet::EMPTY.is_empty() && !a.is_empty());
    }

    #[test]
    fn a_missing_statistic_is_an_internal_fault_naming_it() {
        let s = Stats::default();
        let e = s.hessian(TapPoint::AttnIn).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().contains("Hessian") && e.to_string().contains("AttnIn"));
    }
}
