//! PMQ's profile (ALGORITHMS.md §8.1): per MoE block of the dense model, each expert's
//! importance and quantisation loss, then the integer program ([`super::ilp`]) that picks its
//! width.
//!
//! On the block's MoE input `X` (the first `tokens` calibration tokens; the router input):
//! - the routing is recomputed as the forward does it (softmax over the experts, top-k, ties to
//!   the lower index, weights renormalised over the k when the model says so);
//! - `φ_i`: top-k assignments to expert `i`; `w_i`: the summed router probabilities *before*
//!   renormalisation of the tokens routed to `i`;
//! - `L_i(b)`: quantise only expert `i`'s gate/up/down with data-free RTN at width `b` (the step's
//!   group size and symmetry) and measure the change of the block's MoE output on those tokens,
//!   `‖Y − Ŷ‖_F = sqrt(Σ_t g_ti² ‖E_i(x_t) − Ê_i(x_t)‖²)` (only the tokens routed to `i` change;
//!   the reference sums per-batch Frobenius norms, which orders experts the same way);
//! - cost `c_ib = 1000 · φ̂_i^α · ŵ_i^β · L_i(b)^α` with `φ̂`, `ŵ` normalised to sum 1 per block.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Pmq;
use super::ilp::{self, Program};
use crate::allocate::{Allocation, BlockView, Profiler};
use crate::arch::BlockWeights;
use crate::compress::QuantScheme;
use crate::compress::kit::rtn::quantize_rtn;
use crate::compress::quant::ScaleDtype;
use crate::error::{PareError, Result};
use crate::id::{LinearId, LinearRole, MlpPart};
use crate::kernels::{elementwise, gemm};
use crate::matrix::Matrix;
use crate::model::TapPoint;
use crate::stats::{StatSet, Stats};

/// What PMQ decided for one MoE block (the report's `allocation.profiles` entry).
#[derive(Clone, Debug, Serialize)]
pub struct BlockDecision {
    pub profile: &'static str,
    pub block: usize,
    /// The chosen width of each expert.
    pub widths: Vec<u8>,
    pub average_bits: f64,
    pub budget_bits: f64,
    pub tokens: usize,
    /// `φ_i` and `w_i`.
    pub frequency: Vec<u64>,
    pub router_weight: Vec<f64>,
    /// `L_i(b)` per expert, per candidate width.
    pub loss: Vec<Vec<f64>>,
    pub objective: f64,
    pub solver: String,
    pub solve_seconds: f64,
}

/// The profiler of one `mc-moe` step.
pub struct PmqProfiler {
    step: usize,
    pmq: Pmq,
    /// The experts' group size and symmetry (their width is chosen here).
    base: QuantScheme,
    targets: Vec<LinearId>,
    decisions: Vec<BlockDecision>,
}

impl PmqProfiler {
    pub fn new(step: usize, pmq: Pmq, base: QuantScheme, targets: &[LinearId]) -> Self {
        Self {
            step,
            pmq,
            base,
            targets: targets.to_vec(),
            decisions: Vec::new(),
        }
    }

    fn targets_block(&self, b: usize) -> bool {
        self.targets
            .iter()
            .any(|id| id.block == b && matches!(id.role, LinearRole::Expert { .. }))
    }
}

/// `silu(x·Gᵀ) ⊙ (x·Uᵀ)` then `·Dᵀ`: one expert on `t` rows of `x`.
fn expert_forward(x: &[f32], t: usize, gate: &Matrix, up: &Matrix, down: &Matrix) -> Vec<f32> {
    let f = gate.rows;
    let mut gu = vec![0f32; t * 2 * f];
    let mut g = vec![0f32; t * f];
    let mut u = vec![0f32; t * f];
    gemm::linear(x, &gate.data, f, None, &mut g, false);
    gemm::linear(x, &up.data, f, None, &mut u, false);
    for r in 0..t {
        gu[r * 2 * f..r * 2 * f + f].copy_from_slice(&g[r * f..(r + 1) * f]);
        gu[r * 2 * f + f..(r + 1) * 2 * f].copy_from_slice(&u[r * f..(r + 1) * f]);
    }
    let a = elementwise::silu_mul(&gu, f);
    let mut y = vec![0f32; t * down.rows];
    gemm::linear(&a, &down.data, down.rows, None, &mut y, false);
    y
}

/// Router softmax probabilities `[t, experts]` of `t` rows of `x` (`router` `[experts, hidden]`).
pub fn router_probs(x: &[f32], t: usize, router: &Matrix) -> Vec<f32> {
    let e = router.rows;
    let mut p = vec![0f32; t * e];
    gemm::linear(x, &router.data, e, None, &mut p, false);
    for row in p.chunks_mut(e.max(1)) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        for v in row.iter_mut() {
            *v /= s;
        }
    }
    p
}

/// Routing of `t` rows of `x` by `router` `[experts, hidden]`: per expert its token rows, gate
/// weights and pre-renormalisation probabilities.
#[allow(clippy::type_complexity)]
fn route(
    x: &[f32],
    t: usize,
    router: &Matrix,
    top_k: usize,
    norm: bool,
) -> (Vec<Vec<usize>>, Vec<Vec<f32>>, Vec<f64>) {
    let e = router.rows;
    let probs = router_probs(x, t, router);
    let mut tokens = vec![Vec::new(); e];
    let mut gates = vec![Vec::new(); e];
    let mut weight = vec![0f64; e];
    let mut order: Vec<usize> = (0..e).collect();
    for tok in 0..t {
        let p = &probs[tok * e..(tok + 1) * e];
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let chosen = &order[..top_k.min(e)];
        let total: f32 = chosen.iter().map(|&i| p[i]).sum();
        for &i in chosen {
            tokens[i].push(tok);
            gates[i].push(if norm { p[i] / total } else { p[i] });
            weight[i] += f64::from(p[i]);
        }
    }
    (tokens, gates, weight)
}

impl Profiler for PmqProfiler {
    fn needs(&self, _block: &BlockWeights) -> BTreeMap<TapPoint, StatSet> {
        BTreeMap::new()
    }

    fn keep(&self, block: &BlockWeights) -> Option<(TapPoint, usize)> {
        self.targets_block(block.block)
            .then_some((TapPoint::MlpIn, self.pmq.tokens))
    }

    fn observe_block(
        &mut self,
        block: &BlockWeights,
        _stats: &Stats,
        view: &BlockView<'_>,
    ) -> Result<()> {
        let b = block.block;
        if !self.targets_block(b) || !view.cfg.is_moe_block(b) {
            return Ok(());
        }
        let x = view.kept.get(&TapPoint::MlpIn).ok_or_else(|| {
            PareError::Internal(format!("mc-moe: block {b}'s MoE input was not kept"))
        })?;
        let t = x.rows;
        let find = |role: LinearRole| {
            block
                .linears
                .iter()
                .find(|(s, _, _)| s.id.role == role)
                .map(|(_, m, _)| m)
                .ok_or_else(|| PareError::Internal(format!("mc-moe: block {b} has no {role:?}")))
        };
        let router = find(LinearRole::Router)?;
        let n = router.rows;
        let (tokens, gates, weight) = route(
            &x.data,
            t,
            router,
            view.cfg.experts_per_token,
            view.cfg.norm_topk_prob,
        );
        let widths = &self.pmq.widths;
        let mut loss = vec![vec![0f64; widths.len()]; n];
        for (e, loss_e) in loss.iter_mut().enumerate() {
            if tokens[e].is_empty() {
                continue;
            }
            let part = |p| find(LinearRole::Expert { index: e, part: p });
            let (g, u, d) = (part(MlpPart::Gate)?, part(MlpPart::Up)?, part(MlpPart::Down)?);
            let h = x.cols;
            let mut xe = Vec::with_capacity(tokens[e].len() * h);
            for &r in &tokens[e] {
                xe.extend_from_slice(x.row(r));
            }
            let te = tokens[e].len();
            let y = expert_forward(&xe, te, g, u, d);
            for (k, &bits) in widths.iter().enumerate() {
                let s = QuantScheme { bits, ..self.base };
                let q = |m: &Matrix| quantize_rtn(m, s, ScaleDtype::F32).map(|(d, _)| d);
                let yq = expert_forward(&xe, te, &q(g)?, &q(u)?, &q(d)?);
                let out = d.rows;
                let mut sq = 0f64;
                for (r, gate) in gates[e].iter().enumerate() {
                    let g2 = f64::from(*gate) * f64::from(*gate);
                    let row: f64 = (0..out)
                        .map(|c| {
                            let dlt = f64::from(y[r * out + c] - yq[r * out + c]);
                            dlt * dlt
                        })
                        .sum();
                    sq += g2 * row;
                }
                loss_e[k] = sq.sqrt();
            }
        }
        let freq: Vec<u64> = tokens.iter().map(|v| v.len() as u64).collect();
        let (fsum, wsum) = (
            freq.iter().sum::<u64>().max(1) as f64,
            weight.iter().sum::<f64>().max(f64::MIN_POSITIVE),
        );
        let (alpha, beta) = (self.pmq.alpha, self.pmq.beta);
        let cost: Vec<Vec<f64>> = (0..n)
            .map(|e| {
                let imp = (freq[e] as f64 / fsum).powf(alpha) * (weight[e] / wsum).powf(beta);
                loss[e].iter().map(|l| 1000.0 * imp * l.powf(alpha)).collect()
            })
            .collect();
        let program = Program {
            cost,
            widths: widths.clone(),
            budget: (self.pmq.budget_bits * n as f64 + 1e-9).floor() as u64,
        };
        let a = ilp::solve(&program)
            .map_err(|e| PareError::Internal(format!("mc-moe block {b}: {e}")))?;
        let chosen: Vec<u8> = a.choice.iter().map(|&k| widths[k]).collect();
        self.decisions.push(BlockDecision {
            profile: "mc-moe",
            block: b,
            average_bits: chosen.iter().map(|&w| f64::from(w)).sum::<f64>() / n.max(1) as f64,
            widths: chosen,
            budget_bits: self.pmq.budget_bits,
            tokens: t,
            frequency: freq,
            router_weight: weight,
            loss,
            objective: a.objective,
            solver: a.status,
            solve_seconds: a.seconds,
        });
        Ok(())
    }

    fn finish(self: Box<Self>, allocation: &mut Allocation) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for d in &self.decisions {
            for (e, &bits) in d.widths.iter().enumerate() {
                for part in [MlpPart::Gate, MlpPart::Up, MlpPart::Down] {
                    let id = LinearId::new(d.block, LinearRole::Expert { index: e, part });
                    if self.targets.contains(&id) {
                        allocation.set_scheme(self.step, id, QuantScheme { bits, ..self.base });
                    }
                }
            }
            if !d.solver.starts_with("microlp optimal") {
                notes.push(format!("mc-moe block {}: {}", d.block, d.solver));
            }
            allocation.profiles.push(serde_json::to_value(d).map_err(|e| {
                PareError::Internal(format!("cannot serialise the mc-moe decision: {e}"))
            })?);
        }
        Ok(notes)
    }
}
