//! MC-MoE's ODP, online dynamic pruning (ALGORITHMS.md §8.4): a routing policy of the MoE
//! forward. Per token, with its top-k router probabilities `p_0 ≥ p_1 ≥ …` (before
//! renormalisation), expert `j ≥ 1` is skipped when `p_j < β_l · p_0`; the gate weights are then
//! renormalised over the experts kept (when the model renormalises, as Mixtral always does), so a
//! token left with one expert gives it weight 1, as the reference. For top-2 this is the
//! reference's rule; for larger k every non-first expert is tested against the first.
//!
//! `β_l` is chosen per MoE block on calibration data (the dense model's MoE inputs, in the
//! profile pass) so that a target fraction of that block's expert calls (`tokens · k`) is
//! skipped: the `⌈target·T·k⌉`-th smallest ratio `p_j/p_0`. The reference instead hard-codes
//! β per layer and prunes only its 10 lowest-loss layers.
//!
//! Not ported: the reference keeps both experts for the top 2% "important" tokens, with
//! importance `attention_score_t · ‖h_t‖₁` where the attention score sums each *row* of the
//! softmaxed attention (always 1) divided by `L − t`, so it ranks tokens by position rather than
//! by the attention they receive (and it needs the attention matrix materialised, prefill only).
//! Reproducing that would add position bias, not importance; a corrected version (column sums)
//! is a different method that the paper does not evaluate. So every token follows the rule.
//!
//! The policy is stored in the output's config.json as `compression.odp.beta` (one value per
//! block, `null` for dense blocks); pare's forward reads it back. transformers ignores it and
//! runs every expert call.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::allocate::{Allocation, BlockView, Profiler};
use crate::arch::BlockWeights;
use crate::error::{PareError, Result};
use crate::id::LinearRole;
use crate::matrix::Matrix;
use crate::model::TapPoint;
use crate::stats::{StatSet, Stats};

/// The policy chosen for one MoE block (an `allocation.profiles` entry).
#[derive(Clone, Debug, Serialize)]
pub struct OdpDecision {
    pub profile: &'static str,
    pub block: usize,
    pub beta: f32,
    /// Fraction of the block's calibration expert calls the rule skips.
    pub skipped_calls: f64,
    pub tokens: usize,
}

/// Per token, `p_j / p_0` for `j = 1..k` of the top-k router probabilities.
pub fn ratios(x: &[f32], t: usize, router: &Matrix, top_k: usize) -> Vec<f32> {
    let e = router.rows;
    let probs = super::pmq::router_probs(x, t, router);
    let mut out = Vec::with_capacity(t * top_k.saturating_sub(1));
    for tok in 0..t {
        let mut s = probs[tok * e..(tok + 1) * e].to_vec();
        s.sort_by(|a, b| b.total_cmp(a));
        for j in 1..top_k.min(e) {
            out.push(s[j] / s[0]);
        }
    }
    out
}

/// The β that skips `target` of `calls` expert calls given the ratios of the non-first calls.
pub fn choose_beta(ratios: &[f32], calls: usize, target: f64) -> f32 {
    let mut r = ratios.to_vec();
    r.sort_by(f32::total_cmp);
    let n = ((target * calls as f64).ceil() as usize).min(r.len());
    match n {
        0 => 0.0,
        n if n >= r.len() => 1.0 + f32::EPSILON,
        n => 0.5 * (r[n - 1] + r[n]),
    }
}

/// The profiler of `odp:`.
pub struct OdpProfiler {
    skip: f64,
    tokens: usize,
    decisions: Vec<OdpDecision>,
}

impl OdpProfiler {
    pub fn new(skip: f64, tokens: usize) -> Self {
        Self {
            skip,
            tokens,
            decisions: Vec::new(),
        }
    }
}

impl Profiler for OdpProfiler {
    fn needs(&self, _block: &BlockWeights) -> BTreeMap<TapPoint, StatSet> {
        BTreeMap::new()
    }

    fn keep(&self, block: &BlockWeights) -> Option<(TapPoint, usize)> {
        block
            .linears
            .iter()
            .any(|(s, _, _)| s.id.role == LinearRole::Router)
            .then_some((TapPoint::MlpIn, self.tokens))
    }

    fn observe_block(
        &mut self,
        block: &BlockWeights,
        _stats: &Stats,
        view: &BlockView<'_>,
    ) -> Result<()> {
        let b = block.block;
        let Some((_, router, _)) = block.linears.iter().find(|(s, _, _)| s.id.role == LinearRole::Router)
        else {
            return Ok(());
        };
        let x = view.kept.get(&TapPoint::MlpIn).ok_or_else(|| {
            PareError::Internal(format!("odp: block {b}'s MoE input was not kept"))
        })?;
        let k = view.cfg.experts_per_token;
        let r = ratios(&x.data, x.rows, router, k);
        let calls = x.rows * k;
        let beta = choose_beta(&r, calls, self.skip);
        let skipped = r.iter().filter(|&&v| v < beta).count();
        self.decisions.push(OdpDecision {
            profile: "odp",
            block: b,
            beta,
            skipped_calls: skipped as f64 / calls.max(1) as f64,
            tokens: x.rows,
        });
        Ok(())
    }

    fn finish(self: Box<Self>, allocation: &mut Allocation) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for d in &self.decisions {
            if (d.skipped_calls - self.skip).abs() > 0.01 {
                notes.push(format!(
                    "odp block {}: skips {:.3} of the calibration expert calls, not the {:.3} asked (a top-k router can skip at most (k−1)/k, and ties move the cut)",
                    d.block, d.skipped_calls, self.skip
                ));
            }
            allocation.profiles.push(serde_json::to_value(d).map_err(|e| {
                PareError::Internal(format!("cannot serialise the odp decision: {e}"))
            })?);
        }
        Ok(notes)
    }
}

/// `compression.odp` of the output config.json from the allocation's ODP decisions, `None`
/// without any.
pub fn config_section(allocation: &Allocation, blocks: usize, target: f64) -> Option<serde_json::Value> {
    let mut beta = vec![serde_json::Value::Null; blocks];
    let mut any = false;
    for p in &allocation.profiles {
        if p["profile"] == "odp"
            && let (Some(b), Some(v)) = (p["block"].as_u64(), p["beta"].as_f64())
            && (b as usize) < blocks
        {
            beta[b as usize] = serde_json::json!(v);
            any = true;
        }
    }
    any.then(|| {
        serde_json::json!({
            "rule": "skip top-k expert j >= 1 when p_j < beta * p_0 (router probabilities before renormalisation); renormalise over the kept experts",
            "target_skipped_calls": target,
            "beta": beta,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_skips_the_target_fraction() {
        let r: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        // 100 tokens, top-2: 200 calls; skipping 20% of calls skips 40 tokens' second expert.
        let b = choose_beta(&r, 200, 0.2);
        assert_eq!(r.iter().filter(|&&v| v < b).count(), 40);
        assert_eq!(choose_beta(&r, 200, 0.0), 0.0);
        assert!(r.iter().all(|&v| v < choose_beta(&r, 200, 0.6)));
    }
}
