//! OWL — outlier-weighed layer-wise sparsity (Yin et al., ICML 2024; luuyin/OWL;
//! ALGORITHMS.md §11.2): blocks with more activation outliers are pruned less.
//!
//! Profile (dense model, one streamed pass): for every block `l`, the Wanda scores
//! `A = |W_ij| · ‖X_j‖₂` of all the step's targeted linears in that block, pooled; the outlier
//! ratio `D_l = 100 · #{A > M · mean(A)} / |A|` (M = 5). Allocation: `D̃_l = 2λ · (D_l − min D)
//! / (max D − min D)`, density `1 − S + D̃_l − mean(D̃)`, so `S_l = 1 − density_l` lies in
//! `[S − λ, S + λ]` with mean `S` (λ = 0.08). Equal outlier ratios give every block `S`.
//!
//! **N:M variant** (the reference's `wanda_owl_structure`): with a step `pattern: "N:M"`, λ is
//! in kept weights per group; `D̃_l = λ · (D_l − min D)/(max D − min D)` is centred and block `l`
//! keeps about `N + D̃_l − mean D̃` of every `M`. The reference rounds each block on its own,
//! which moves the mean off `N` (the model ends sparser or denser than asked); pare apportions
//! the integers by largest remainder within `[1, M − 1]`, so the model keeps exactly `N` of `M`
//! on average. λ in `(0, M − 2]`; default 2 (the reference's example), capped at `M − 2`.
//!
//! Recipe: `- wanda: { sparsity: 0.7, profile: { owl: { m: 5, lambda: 0.08 } } }`,
//! `- wanda: { pattern: "2:4", profile: { owl: { lambda: 1 } } }` (also on `magnitude`,
//! `sparsegpt` and `gblm`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Allocation, Profiler};
use crate::arch::BlockWeights;
use crate::compress::NofM;
use crate::compress::spec::ResolveCtx;
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::model::TapPoint;
use crate::stats::{StatKind, StatSet, Stats};

/// OWL's outlier threshold multiplier when not given (`--Hyper_m`).
pub const DEFAULT_M: f64 = 5.0;
/// OWL's sparsity spread when not given (`--Lamda`).
pub const DEFAULT_LAMBDA: f64 = 0.08;
/// The N:M variant's spread in kept weights per group when not given (the reference's example
/// `--Lamda 2`).
pub const DEFAULT_LAMBDA_N_OF_M: f64 = 2.0;

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
    /// The step's mean N:M pattern (the N:M variant: per-block N), `None` for unstructured.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::compress::pattern_name"
    )]
    pub pattern: Option<NofM>,
}

/// The pattern a pruning step declares (`MethodKind::Prune`): none under OWL's N:M variant,
/// whose blocks keep different N, so no export or later step may assume one N:M everywhere.
pub fn step_pattern(pattern: Option<NofM>, owl: Option<Owl>) -> Option<NofM> {
    match owl {
        Some(o) if o.pattern.is_some() => None,
        _ => pattern,
    }
}

/// Resolves `profile:` for a pruning step of `sparsity` and optional N:M `pattern`.
pub fn resolve(
    ctx: &ResolveCtx<'_>,
    spec: Option<&ProfileSpec>,
    sparsity: f32,
    pattern: Option<NofM>,
) -> Result<Option<Owl>> {
    let Some(owl) = spec.and_then(|p| p.owl.as_ref()) else {
        return Ok(None);
    };
    let m = owl.m.unwrap_or(DEFAULT_M);
    if !(m.is_finite() && m > 0.0) {
        return Err(ctx.err(
            "profile.owl.m",
            format!("m {m} must be a positive multiple of the mean score, e.g. 5"),
        ));
    }
    if let Some(nm) = pattern {
        let max = nm.m.saturating_sub(2) as f64;
        let lambda = owl.lambda.unwrap_or(DEFAULT_LAMBDA_N_OF_M.min(max));
        if !(lambda.is_finite() && lambda > 0.0 && lambda <= max) {
            return Err(ctx.err(
                "profile.owl.lambda",
                format!(
                    "lambda {lambda} for pattern {}:{} must be in (0, {max}]: the spread in kept weights per group of {}, every block keeping 1 to {}",
                    nm.n,
                    nm.m,
                    nm.m,
                    nm.m - 1
                ),
            ));
        }
        return Ok(Some(Owl {
            m: m as f32,
            lambda: lambda as f32,
            pattern: Some(nm),
        }));
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
        pattern: None,
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

/// OWL's N:M map: block `l` aims to keep `t_l = n + λ·(D_l − min D)/(max D − min D) − mean`
/// of every `m` (clamped to `[1, m − 1]`); the integer kept counts are apportioned from the
/// total `L·n` by largest remainder, so their mean is exactly `n` (ties to the lower block).
pub fn block_kept(ratios: &[f64], nm: NofM, lambda: f32) -> Vec<usize> {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
            (a.min(*r), b.max(*r))
        });
    if ratios.is_empty() || hi - lo <= 0.0 || nm.m < 2 {
        return vec![nm.n; ratios.len()];
    }
    let scaled: Vec<f64> = ratios
        .iter()
        .map(|r| (r - lo) / (hi - lo) * lambda as f64)
        .collect();
    let mean = scaled.iter().sum::<f64>() / scaled.len() as f64;
    let (min_k, max_k) = (1.0, (nm.m - 1) as f64);
    let target: Vec<f64> = scaled
        .iter()
        .map(|d| (nm.n as f64 + d - mean).clamp(min_k, max_k))
        .collect();
    let mut kept: Vec<usize> = target.iter().map(|t| t.floor() as usize).collect();
    let total = ratios.len() * nm.n;
    let rem = |kept: &[usize], i: usize| target[i] - kept[i] as f64;
    let mut order: Vec<usize> = (0..kept.len()).collect();
    let mut have: usize = kept.iter().sum();
    while have < total {
        order.sort_by(|&a, &b| rem(&kept, b).total_cmp(&rem(&kept, a)).then(a.cmp(&b)));
        let Some(&i) = order.iter().find(|&&i| kept[i] < nm.m - 1) else {
            break;
        };
        kept[i] += 1;
        have += 1;
    }
    while have > total {
        order.sort_by(|&a, &b| rem(&kept, a).total_cmp(&rem(&kept, b)).then(a.cmp(&b)));
        let Some(&i) = order.iter().find(|&&i| kept[i] > 1) else {
            break;
        };
        kept[i] -= 1;
        have -= 1;
    }
    kept
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
        super::input_needs(
            block,
            |id| self.targets.contains(&id),
            StatSet::of(&[StatKind::SqNorms]),
        )
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
        let kept = self
            .owl
            .pattern
            .map(|nm| (nm, block_kept(&ratios, nm, self.owl.lambda)));
        let sparsities = match &kept {
            Some((nm, k)) => k.iter().map(|k| 1.0 - *k as f32 / nm.m as f32).collect(),
            None => block_sparsities(&ratios, self.sparsity, self.owl.lambda),
        };
        let mut rows = Vec::new();
        for (i, ((b, (ratio, ids)), s)) in self.blocks.iter().zip(&sparsities).enumerate() {
            let pattern = kept.as_ref().map(|(nm, k)| NofM { n: k[i], m: nm.m });
            for id in ids {
                match pattern {
                    Some(p) => allocation.set_pattern(self.step, *id, p),
                    None => allocation.set_sparsity(self.step, *id, *s),
                }
            }
            let mut row = serde_json::json!({ "block": b, "outlier_ratio": ratio, "sparsity": s });
            if let Some(p) = pattern {
                row["pattern"] = format!("{}:{}", p.n, p.m).into();
            }
            rows.push(row);
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
    fn n_of_m_kept_counts_round_to_the_mean_pattern() {
        let nm = NofM { n: 4, m: 8 };
        // λ 3: scaled [0, 3, 0.3, 2.7], centred [−1.5, 1.5, −1.2, 1.2]; floors sum to −2, so
        // the two largest remainders (blocks 2, then 0 before 1 on the tie) round up.
        assert_eq!(
            block_kept(&[0.0, 10.0, 1.0, 9.0], nm, 3.0),
            vec![3, 5, 3, 5]
        );
        // Per-block rounding (the reference) of centred [−0.75, 2.25, −0.75, −0.75] would give
        // [−1, 2, −1, −1], a mean of 3.75 kept; apportioning keeps the mean at 4.
        let k = block_kept(&[0.0, 10.0, 0.0, 0.0], nm, 3.0);
        assert_eq!(k.iter().sum::<usize>(), 16, "{k:?}");
        assert_eq!(k, vec![4, 6, 3, 3]);
        // Equal ratios keep N everywhere. 2:4, λ 2: targets [1.05, 1.05, 2.85, 3] (the last
        // clamped to 3) floor to [1, 1, 2, 3]; the missing unit goes to block 2.
        let nm24 = NofM { n: 2, m: 4 };
        assert_eq!(block_kept(&[2.0, 2.0], nm24, 2.0), vec![2, 2]);
        assert_eq!(
            block_kept(&[0.0, 0.0, 9.0, 10.0], nm24, 2.0),
            vec![1, 1, 3, 3]
        );
        // However large λ, every block keeps 1 to M − 1 and the mean stays N.
        let k = block_kept(&[0.0, 1.0, 2.0, 50.0, 51.0], nm24, 40.0);
        assert!(
            k.iter().all(|&k| (1..=3).contains(&k)) && k.iter().sum::<usize>() == 10,
            "{k:?}"
        );
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
