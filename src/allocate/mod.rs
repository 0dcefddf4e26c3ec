//! The allocation map: per-linear settings decided before the block loop — a sparsity or a
//! quantisation scheme that overrides a step's own (OWL's per-block sparsities, mixed-precision
//! bit widths), and the protected set (linears no step may touch). Profile passes fill it; the
//! block loop reads it through [`Allocation::settings`]; the report and the output's config.json
//! record it.

pub mod owl;
pub mod super_experts;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::arch::BlockWeights;
use crate::compress::QuantScheme;
use crate::error::Result;
use crate::id::LinearId;
use crate::model::TapPoint;
use crate::stats::{StatSet, Stats};

/// What the allocation says about one linear in one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LinearSettings {
    /// Sparsity to prune to instead of the step's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f32>,
    /// N:M pattern instead of the step's (OWL's N:M variant: per-block N).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::compress::pattern_name"
    )]
    pub pattern: Option<crate::compress::NofM>,
    /// Quantisation scheme instead of the step's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<QuantScheme>,
    /// Left dense and at full precision by every step.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub protect: bool,
}

/// Per-linear settings for the whole model.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Allocation {
    /// Overrides per step index (only steps that have any).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<usize, BTreeMap<LinearId, LinearSettings>>,
    /// Linears no step compresses, with the reason.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub protected: BTreeMap<LinearId, String>,
    /// What each profile measured (e.g. OWL's outlier ratio and sparsity per block).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<serde_json::Value>,
    /// The gradient artefact of each step that scores with one (GBLM), by step index, opened
    /// and checked against the model by the pre-pass.
    #[serde(skip)]
    pub gradients: BTreeMap<usize, std::sync::Arc<crate::gradients::GradientFile>>,
    /// Masks learned before the block loop (end-to-end MaskLLM), by step index and linear,
    /// `[out, in]` row-major, `true` = pruned; a profiler leaves the prior here first.
    #[serde(skip)]
    pub masks: BTreeMap<usize, BTreeMap<LinearId, Vec<bool>>>,
}

impl Allocation {
    /// True when nothing is allocated (every step applies its own parameters everywhere).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.protected.is_empty() && self.profiles.is_empty()
    }

    /// The settings of `id` in step `step`.
    pub fn settings(&self, step: usize, id: LinearId) -> LinearSettings {
        let mut s = self
            .steps
            .get(&step)
            .and_then(|m| m.get(&id))
            .copied()
            .unwrap_or_default();
        s.protect = self.protected.contains_key(&id);
        s
    }

    /// Sets the sparsity of `id` in step `step`.
    pub fn set_sparsity(&mut self, step: usize, id: LinearId, sparsity: f32) {
        self.steps
            .entry(step)
            .or_default()
            .entry(id)
            .or_default()
            .sparsity = Some(sparsity);
    }

    /// Sets the N:M pattern of `id` in step `step`.
    pub fn set_pattern(&mut self, step: usize, id: LinearId, pattern: crate::compress::NofM) {
        self.steps
            .entry(step)
            .or_default()
            .entry(id)
            .or_default()
            .pattern = Some(pattern);
    }

    /// Sets the quantisation scheme of `id` in step `step`.
    pub fn set_scheme(&mut self, step: usize, id: LinearId, scheme: QuantScheme) {
        self.steps
            .entry(step)
            .or_default()
            .entry(id)
            .or_default()
            .scheme = Some(scheme);
    }

    /// Protects `ids` from every step, recording why.
    pub fn protect(&mut self, ids: impl IntoIterator<Item = LinearId>, why: &str) {
        for id in ids {
            self.protected.insert(id, why.to_string());
        }
    }

    /// The protected linears.
    pub fn protected_ids(&self) -> BTreeSet<LinearId> {
        self.protected.keys().copied().collect()
    }
}

/// What a profiler of the inputs of `block`'s linears that `targeted` accepts asks for: `kinds`
/// at each such input point.
pub fn input_needs(
    block: &BlockWeights,
    targeted: impl Fn(LinearId) -> bool,
    kinds: StatSet,
) -> BTreeMap<TapPoint, StatSet> {
    block
        .linears
        .iter()
        .filter(|(s, _, _)| targeted(s.id))
        .map(|(s, _, _)| (TapPoint::input_of(s.id.role), kinds))
        .collect()
}

/// What a profiler sees of one dense block besides its weights and statistics.
pub struct BlockView<'a> {
    pub cfg: &'a crate::config::HfConfig,
    /// The first rows seen at each point a profiler asked to keep ([`Profiler::keep`]),
    /// `[tokens, width]`.
    pub kept: &'a BTreeMap<TapPoint, crate::matrix::Matrix>,
}

/// A per-block observer of the dense model that ends in allocation decisions.
pub trait Profiler {
    /// What it needs gathered at each tap point of block `block`.
    fn needs(&self, block: &BlockWeights) -> BTreeMap<TapPoint, StatSet>;
    /// Points of block `block` whose first rows it needs, and how many tokens (none by
    /// default).
    fn keep(&self, _block: &BlockWeights) -> Option<(TapPoint, usize)> {
        None
    }
    /// Sees one dense block: its weights, the statistics gathered on its calibration inputs and
    /// the rows kept for it.
    fn observe_block(
        &mut self,
        block: &BlockWeights,
        stats: &Stats,
        view: &BlockView<'_>,
    ) -> Result<()>;
    /// Writes the decisions into `allocation`; returns notes for the log and the report.
    fn finish(self: Box<Self>, allocation: &mut Allocation) -> Result<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::LinearRole;

    #[test]
    fn settings_merge_step_overrides_and_protection() {
        let q = LinearId::new(0, LinearRole::Q);
        let o = LinearId::new(0, LinearRole::O);
        let mut a = Allocation::default();
        assert!(a.is_empty());
        a.set_sparsity(1, q, 0.62);
        a.protect([o], "super expert");
        assert_eq!(a.settings(1, q).sparsity, Some(0.62));
        assert_eq!(a.settings(0, q), LinearSettings::default());
        assert!(a.settings(0, o).protect && a.settings(1, o).protect);
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(
            json["steps"]["1"]["blocks.0.attn.q"]["sparsity"]
                .as_f64()
                .unwrap() as f32,
            0.62
        );
        assert_eq!(json["protected"]["blocks.0.attn.o"], "super expert");
    }
}
