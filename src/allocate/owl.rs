//! OWL — outlier-weighed layer-wise sparsity (Yin et al., ICML 2024; luuyin/OWL;
//! ALGORITHMS.md §11.2): blocks with more activation outliers are pruned less.
//!
//! Profile (dense model, one streamed pass): for every block `l`, the Wanda scores
//! `A = |W_ij| · ‖X_j‖₂` of all the step's targeted linears in that block, pooled; the outlier
//! ratio `D_l = 100 · #{A > M · mean(A)} / |A|` (M = 5). Allocation: `D̃_l = 2λ · (D_l − min D)
//! / (max D − min D)`, density `1 − S + D̃_l − mean(D̃)`, so `S_l = 1 − density_l` lies in
//! `[S − λ, S + λ]` with mean `S` (λ = 0.08). Equal outlier ratios give every block `S`.
//!
//! Recipe: `- wanda: { sparsity: 0.7, profile: { owl: { m: 5, lambda: 0.08 } } }` (also on
//! `magnitude` and `sparsegpt`; unstructured sparsity only).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Allocation, Profiler};
use crate::arch::BlockWeights;
use crate::compress::spec::ResolveCtx;
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::model::TapPoint;
use crate::stats::{StatKind, StatSet, Stats};

/// OWL's outlier threshold multiplier when not given (`--Hyper_m`).
pub const DEFAULT_M: f64 = 5.0;
/// OWL's sparsity spread when not given (`--Lamda`).
pub const DEFAULT_LAMBDA: f64 = 0.08;

/// `profile:` of a pruning step as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    /// Outlier-weighed layer-wise sparsity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owl: Option<OwlSpec>,
}

/// `profile.owl:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwlSpec {
    /// A score is an outlier above `m` × the block's mean score (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<f64>,
    /// Block sparsities lie in `[S − lambda, S + lambda]` (default 0.08).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
}

/// Checked OWL parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Owl {
    pub m: f32,
    pub lambda: f32,
}

/// Resolves `profile:` for a pruning step of (unstructured) `sparsity`; `pattern` is the step's
/// N:M pattern, which OWL does not take here.
pub fn resolve(
    ctx: &ResolveCtx<'_>,
    spec: Option<&ProfileSpec>,
    sparsity: f32,
    nm: bool,
) -> Result<Option<Owl>> {
    let Some(owl) = spec.and_then(|p| p.owl.as_ref()) else {
        return Ok(None);
    };
    if nm {
        return Err(ctx.err(
            "profile.owl",
            "OWL allocates unstructured sparsity per block; it does not combine with an N:M `pattern`",
        ));
    }
    let m = owl.m.unwrap_or(DEFAULT_M);
    if !(m.is_finite() && m > 0.0) {
        return Err(ctx.err(
            "profile.owl.m",
            format!("m {m} must be a positive multiple of the mean score, e.g. 5"),
        ));
    }
    let lambda = owl.lambda.unwrap_or(DEFAULT_LAMBDA);
    let s = f64::from(sparsity);
    if !(lambda.is_finite() && lambda >= 0.0 && lambda < s && s + lambda < 1.0) {
        return Err(ctx.err(
            "profile.owl.lambda",
            format!("lambda {lambda} must be ≥ 0 and leave every block sparsity in (0, 1): need lambda < sparsity {s} and sparsity + lambda < 1"),
        ));
    }
    Ok(Some(Owl {
        m: m as f32,
        lambda: lambda as f32,
    }))
}

/// The profiler of one OWL step.
pub struct OwlProfiler {
    step: usize,
    owl: Owl,
    sparsity: f32,
    targets: Vec<LinearId>,
    /// Per block: (outlier ratio D_l in %, the block's targeted linears).
    blocks: BTreeMap<usize, (f64, Vec<LinearId>)>,
}

impl OwlProfiler {
    pub fn new(step: usize, owl: Owl, sparsity: f32, targets: &[LinearId]) -> Self {
        Self {
            step,
            owl,
            sparsity,
            targets: targets.to_vec(),
            blocks: BTreeMap::new(),
        }
    }
}

/// The profilers of a pruning step with optional OWL (what its `Compressor::profilers` returns).
pub fn profilers(
    owl: Option<Owl>,
    step: usize,
    sparsity: f32,
    targets: &[LinearId],
) -> Vec<Box<dyn Profiler>> {
    owl.map(|o| Box::new(OwlProfiler::new(step, o, sparsity, targets)) as Box<dyn Profiler>)
        .into_iter()
        .collect()
}

/// `100 · #{a > m · mean(a)} / |a|` over the scores of all `parts`, without materialising them.
pub fn outlier_ratio(parts: &[(&[f32], usize, &[f32])], m: f32) -> f64 {
    // parts: (row-major weight, d_in, column norms ‖X_j‖₂)
    let score = |w: &[f32], d: usize, norms: &[f32], k: usize| (w[k].abs() * norms[k % d]) as f64;
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (w, d, norms) in parts {
        for k in 0..w.len() {
            sum += score(w, *d, norms, k);
        }
        n += w.len();
    }
    if n == 0 {
        return 0.0;
    }
    let thr = m as f64 * sum / n as f64;
    let mut count = 0usize;
    for (w, d, norms) in parts {
        count += (0..w.len())
            .filter(|&k| score(w, *d, norms, k) > thr)
            .count();
    }
    100.0 * count as f64 / n as f64
}

/// OWL's map from per-block outlier ratios (%) to block sparsities with mean `s`.
pub fn block_sparsities(ratios: &[f64], s: f32, lambda: f32) -> Vec<f32> {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
            (a.min(*r), b.max(*r))
        });
    if ratios.is_empty() || hi - lo <= 0.0 {
        return vec![s; ratios.len()];
    }
    let scaled: Vec<f64> = ratios
        .iter()
        .map(|r| (r - lo) / (hi - lo) * 2.0 * lambda as f64)
        .collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
    scaled
        .iter()
        .map(|d| (1.0 - (1.0 - s as f64 + d - mean)) as f32)
        .collect()
}

impl Profiler for OwlProfiler {
    fn needs(&self, block: &BlockWeights) -> BTreeMap<TapPoint, StatSet> {
        block
            .linears
            .iter()
            .filter(|(s, _, _)| self.targets.contains(&s.id))
            .map(|(s, _, _)| {
                (
                    TapPoint::input_of(s.id.role),
                    StatSet::of(&[StatKind::SqNorms]),
                )
            })
            .collect()
    }

    fn observe_block(
        &mut self,
        block: &BlockWeights,
        stats: &Stats,
        _view: &super::BlockView<'_>,
    ) -> Result<()> {
        let mut norms = BTreeMap::new();
        let mut parts = Vec::new();
        let mut ids = Vec::new();
        for (slot, w, _) in block
            .linears
            .iter()
            .filter(|(s, _, _)| self.targets.contains(&s.id))
        {
            let p = TapPoint::input_of(slot.id.role);
            if !norms.contains_key(&p) {
                let s = stats.sq_norms(p)?;
                norms.insert(p, s.iter().map(|v| v.max(0.0).sqrt()).collect::<Vec<f32>>());
            }
            ids.push(slot.id);
            parts.push((slot.cols, p, w));
        }
        if ids.is_empty() {
            return Ok(());
        }
        let parts: Vec<(&[f32], usize, &[f32])> = parts
            .iter()
            .map(|(d, p, w)| (w.data.as_slice(), *d, norms[p].as_slice()))
            .collect();
        let ratio = outlier_ratio(&parts, self.owl.m);
        self.blocks.insert(block.block, (ratio, ids));
        Ok(())
    }

    fn finish(self: Box<Self>, allocation: &mut Allocation) -> Result<Vec<String>> {
        if self.blocks.is_empty() {
            return Err(PareError::Internal("OWL profiled no block".into()));
        }
        let ratios: Vec<f64> = self.blocks.values().map(|(r, _)| *r).collect();
        let sparsities = block_sparsities(&ratios, self.sparsity, self.owl.lambda);
        let mut rows = Vec::new();
        for ((b, (ratio, ids)), s) in self.blocks.iter().zip(&sparsities) {
            for id in ids {
                allocation.set_sparsity(self.step, *id, *s);
            }
            rows.push(serde_json::json!({ "block": b, "outlier_ratio": ratio, "sparsity": s }));
        }
        allocation.profiles.push(serde_json::json!({
            "profile": "owl",
            "step": self.step,
            "m": self.owl.m,
            "lambda": self.owl.lambda,
            "target_sparsity": self.sparsity,
            "blocks": rows,
        }));
        let span = sparsities
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), s| {
                (a.min(*s), b.max(*s))
            });
        Ok(vec![format!(
            "steps[{}]: OWL block sparsities {:.3}–{:.3} (mean {:.3})",
            self.step,
            span.0,
            span.1,
            sparsities.iter().sum::<f32>() / sparsities.len() as f32
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsities_span_two_lambda_with_mean_s_and_fewer_outliers_prune_more() {
        let s = block_sparsities(&[1.0, 3.0, 2.0, 6.0], 0.7, 0.08);
        let mean = s.iter().sum::<f32>() / 4.0;
        assert!((mean - 0.7).abs() < 1e-6, "{s:?}");
        let (lo, hi) = (
            s.iter().cloned().fold(1.0, f32::min),
            s.iter().cloned().fold(0.0, f32::max),
        );
        assert!((hi - lo - 0.16).abs() < 1e-6, "{s:?}");
        // The block with the most outliers (6%) gets the lowest sparsity, the fewest the highest.
        assert_eq!(s[3], lo);
        assert_eq!(s[0], hi);
        assert_eq!(block_sparsities(&[2.0, 2.0], 0.5, 0.08), vec![0.5, 0.5]);
    }

    #[test]
    fn outlier_ratio_counts_scores_above_m_times_the_mean() {
        // Scores |w|·norm: [1, 1, 1, 1, 1, 1, 1, 1, 1, 41] → mean 5; above 2·5 = 10: one of ten.
        let w = [1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 41.0];
        let norms = [1.0f32; 10];
        assert!((outlier_ratio(&[(&w, 10, &norms)], 2.0) - 10.0).abs() < 1e-9);
        // Pooled across two linears with different input norms.
        let w2 = [1.0f32, 1.0];
        let n2 = [3.0f32, 3.0];
        let r = outlier_ratio(&[(&w, 10, &norms), (&w2, 2, &n2)], 2.0);
        // mean = (50 + 6) / 12 = 4.667, threshold 9.33: still only the 41.
        assert!((r - 100.0 / 12.0).abs() < 1e-9, "{r}");
    }
}
