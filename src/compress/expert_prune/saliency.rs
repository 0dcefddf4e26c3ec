//! Expert saliencies for static expert pruning, gathered by a tap over a block's calibration
//! forward, and the choice of the experts to keep.

use serde::Serialize;

use crate::calib::SplitMix64;
use crate::error::Result;
use crate::model::{RoutingDecision, Tap, TapPoint, to_host};

/// How experts are ranked (higher is kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Saliency {
    /// Mean over routed tokens of gate weight × ‖expert output‖₂ (REAP).
    Reap,
    /// Tokens routed.
    Frequency,
    /// A seeded random order.
    Random { seed: u64 },
}

impl Saliency {
    pub fn name(self) -> &'static str {
        match self {
            Saliency::Reap => "reap",
            Saliency::Frequency => "frequency",
            Saliency::Random { .. } => "random",
        }
    }
}

/// Gathers, per expert of one MoE block, the routed token count and `Σ g·‖y‖₂` over the
/// routed tokens (`y` the expert's down-projection output, `g` the gate weight the forward
/// multiplies it by).
pub struct SaliencyTap {
    reap: bool,
    /// Gate weights of the current batch's routed tokens, per expert, in row order.
    weights: Vec<Vec<f32>>,
    pub tokens: Vec<u64>,
    pub weighted_norm_sum: Vec<f64>,
}

impl SaliencyTap {
    pub fn new(experts: usize, saliency: Saliency) -> Self {
        Self {
            reap: saliency == Saliency::Reap,
            weights: vec![Vec::new(); experts],
            tokens: vec![0; experts],
            weighted_norm_sum: vec![0.0; experts],
        }
    }

    /// The saliency of every expert (`random`: a seeded shuffle's ranks, mixed with `block`).
    pub fn scores(&self, saliency: Saliency, block: usize) -> Vec<f64> {
        let n = self.tokens.len();
        match saliency {
            Saliency::Reap => (0..n)
                .map(|e| match self.tokens[e] {
                    0 => 0.0,
                    t => self.weighted_norm_sum[e] / t as f64,
                })
                .collect(),
            Saliency::Frequency => self.tokens.iter().map(|&t| t as f64).collect(),
            Saliency::Random { seed } => {
                let mut rng = SplitMix64::new(seed ^ (block as u64).wrapping_mul(0x9E37_79B9));
                (0..n).map(|_| rng.next_u64() as f64).collect()
            }
        }
    }
}

impl Tap for SaliencyTap {
    fn wants(&self, p: TapPoint) -> bool {
        self.reap && matches!(p, TapPoint::ExpertDownOut(_))
    }

    fn observe(&mut self, p: TapPoint, y: &burn::tensor::Tensor<2>) -> Result<()> {
        let TapPoint::ExpertDownOut(e) = p else {
            return Ok(());
        };
        let [rows, d] = y.dims();
        let host = to_host(y.clone())?;
        let w = &self.weights[e];
        let mut s = 0.0f64;
        for r in 0..rows.min(w.len()) {
            let norm = host[r * d..(r + 1) * d]
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            s += f64::from(w[r]) * norm;
        }
        self.weighted_norm_sum[e] += s;
        Ok(())
    }

    fn wants_routing(&self) -> bool {
        true
    }

    fn observe_routing(&mut self, r: &RoutingDecision<'_>) -> Result<()> {
        for (e, w) in r.weights.iter().enumerate().take(self.weights.len()) {
            self.tokens[e] += w.len() as u64;
            self.weights[e].clone_from(w);
        }
        Ok(())
    }
}

/// The `keep` experts with the highest scores, in ascending index order (ties keep the lower
/// index).
pub fn choose_kept(scores: &[f64], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept: Vec<usize> = order.into_iter().take(keep).collect();
    kept.sort_unstable();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_scores_ties_to_the_lower_index() {
        assert_eq!(choose_kept(&[0.5, 2.0, 0.1, 2.0, 1.0], 3), vec![1, 3, 4]);
        assert_eq!(choose_kept(&[1.0, 1.0, 1.0, 1.0], 2), vec![0, 1]);
        assert_eq!(choose_kept(&[3.0, 1.0], 2), vec![0, 1]);
    }

    /// REAP is the mean over routed tokens of g·‖y‖: an expert routed often with small outputs
    /// ranks below one routed rarely with large ones; frequency ranks them the other way.
    #[test]
    fn reap_weighs_gate_and_output_norm_per_routed_token() {
        let device = burn::tensor::Device::flex();
        let mut tap = SaliencyTap::new(3, Saliency::Reap);
        let weights = vec![vec![0.5, 0.5, 0.5], vec![1.0], vec![]];
        let tokens = vec![vec![0i64, 1, 2], vec![1], vec![]];
        tap.observe_routing(&RoutingDecision {
            n_experts: 3,
            probs: &[],
            tokens: &tokens,
            weights: &weights,
        })
        .unwrap();
        let y = |rows: Vec<f32>, n: usize| {
            burn::tensor::Tensor::<2>::from_data(burn::tensor::TensorData::new(rows, [n, 2]), &device)
        };
        // Expert 0: outputs (3, 4) each, ‖y‖ = 5, g = 0.5 → 2.5. Expert 1: (0, 10) → 10.
        tap.observe(TapPoint::ExpertDownOut(0), &y(vec![3.0, 4.0, 3.0, 4.0, 3.0, 4.0], 3))
            .unwrap();
        tap.observe(TapPoint::ExpertDownOut(1), &y(vec![0.0, 10.0], 1)).unwrap();
        let reap = tap.scores(Saliency::Reap, 0);
        assert!((reap[0] - 2.5).abs() < 1e-12 && (reap[1] - 10.0).abs() < 1e-12);
        assert_eq!(reap[2], 0.0);
        assert_eq!(choose_kept(&reap, 1), vec![1]);
        assert_eq!(tap.scores(Saliency::Frequency, 0), vec![3.0, 1.0, 0.0]);
        assert_eq!(choose_kept(&tap.scores(Saliency::Frequency, 0), 1), vec![0]);
        let r = Saliency::Random { seed: 4 };
        assert_eq!(tap.scores(r, 1), tap.scores(r, 1));
        assert_ne!(tap.scores(r, 1), tap.scores(r, 2));
    }
}
