//! Sparse mixture of experts (Mixtral, Qwen3-MoE): softmax router, top-k, weights renormalised
//! over the chosen k (always in Mixtral; with `norm_topk_prob` in Qwen3-MoE). The routing
//! decision is made on the host (it is tiny) and handed to the tap before the experts run.

use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor, TensorData};

use super::{Linear, Mlp, to_host};
use crate::error::Result;

/// A sparse MoE feed-forward: router `[experts, hidden]` and the experts.
#[derive(Clone)]
pub struct Moe {
    pub router: Linear,
    pub experts: Vec<Mlp>,
    pub top_k: usize,
    /// Divide the chosen k probabilities by their sum (otherwise they are used as they are).
    pub norm_topk_prob: bool,
    /// MC-MoE online dynamic pruning: skip chosen expert `j ≥ 1` when `p_j < β · p_0`
    /// ([`crate::compress::mc_moe::odp`]); `None` runs every chosen expert.
    pub odp_beta: Option<f32>,
}

/// Expert calls the ODP rule looked at and skipped since the last [`odp_counts_reset`], over every
/// MoE block with a policy (process-wide; `pare eval` reads them around one model's forward).
static ODP_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ODP_SKIPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Resets the ODP counters.
pub fn odp_counts_reset() {
    ODP_CALLS.store(0, std::sync::atomic::Ordering::Relaxed);
    ODP_SKIPPED.store(0, std::sync::atomic::Ordering::Relaxed);
}

/// (expert calls, skipped) since the last reset.
pub fn odp_counts() -> (u64, u64) {
    (
        ODP_CALLS.load(std::sync::atomic::Ordering::Relaxed),
        ODP_SKIPPED.load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// Which tokens each expert receives and with what weight, for one batch.
#[derive(Clone, Debug, Default)]
pub struct Routed {
    /// Router softmax probabilities, row-major `[tokens, experts]`, before top-k.
    pub probs: Vec<f32>,
    /// Per expert: the token rows routed to it, in token order.
    pub tokens: Vec<Vec<i64>>,
    /// Per expert: the gate weight of each routed token (renormalised over the top k when the
    /// model says so).
    pub weights: Vec<Vec<f32>>,
}

/// What a tap sees of one batch's routing.
pub struct RoutingDecision<'a> {
    pub n_experts: usize,
    /// `[tokens, experts]` router probabilities before top-k.
    pub probs: &'a [f32],
    pub tokens: &'a [Vec<i64>],
    pub weights: &'a [Vec<f32>],
}

impl Routed {
    pub fn decision(&self, n_experts: usize) -> RoutingDecision<'_> {
        RoutingDecision {
            n_experts,
            probs: &self.probs,
            tokens: &self.tokens,
            weights: &self.weights,
        }
    }
}

impl Moe {
    /// Keeps only the experts `kept` (strictly ascending original indices), renumbered in that order,
    /// and the matching router rows: the router's softmax then runs over the kept experts.
    pub fn retain_experts(&mut self, kept: &[usize]) -> Result<()> {
        let n = self.experts.len();
        if kept.len() < self.top_k
            || kept.iter().any(|&e| e >= n)
            || kept.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(crate::error::PareError::Internal(format!(
                "retain_experts: cannot keep {kept:?} of {n} experts with top-{}",
                self.top_k
            )));
        }
        self.router = self.router.select_rows(kept)?;
        let all = std::mem::take(&mut self.experts);
        self.experts = all
            .into_iter()
            .enumerate()
            .filter(|(e, _)| kept.contains(e))
            .map(|(_, m)| m)
            .collect();
        Ok(())
    }

    /// Routes every token of `x` `[tokens, hidden]` to its top-k experts.
    pub fn route(&self, x: Tensor<2>) -> Result<Routed> {
        let t = x.dims()[0];
        let e = self.experts.len();
        let probs = to_host(softmax(self.router.forward(x)?, 1))?;
        let mut tokens: Vec<Vec<i64>> = vec![Vec::new(); e];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); e];
        let mut order: Vec<usize> = (0..e).collect();
        for tok in 0..t {
            let p = &probs[tok * e..(tok + 1) * e];
            // Descending probability; ties keep the lower expert index first (torch.topk on CPU).
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let mut chosen = &order[..self.top_k.min(e)];
            let kept: Vec<usize>;
            if let Some(beta) = self.odp_beta {
                let first = p[chosen[0]];
                kept = chosen
                    .iter()
                    .enumerate()
                    .filter(|&(j, &i)| j == 0 || p[i] >= beta * first)
                    .map(|(_, &i)| i)
                    .collect();
                ODP_CALLS.fetch_add(chosen.len() as u64, std::sync::atomic::Ordering::Relaxed);
                ODP_SKIPPED.fetch_add(
                    (chosen.len() - kept.len()) as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                chosen = &kept;
            }
            let total: f32 = chosen.iter().map(|&i| p[i]).sum();
            for &i in chosen {
                tokens[i].push(tok as i64);
                weights[i].push(if self.norm_topk_prob {
                    p[i] / total
                } else {
                    p[i]
                });
            }
        }
        Ok(Routed {
            probs,
            tokens,
            weights,
        })
    }
}

/// The rows of `x` listed in `rows`, as a tensor index and the gathered `[n, hidden]` rows.
pub fn gather_rows(x: &Tensor<2>, rows: &[i64]) -> (Tensor<1, Int>, Tensor<2>) {
    let device = x.device();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(rows.to_vec(), [rows.len()]), &device);
    let xe = x.clone().select(0, idx.clone());
    (idx, xe)
}
