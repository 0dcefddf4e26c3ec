//! [`StatsTap`]: the tap of a calibration pass. It feeds every observed tensor to the
//! [`Accumulator`] of its tap point (one per point, shared by the linears that read it), counts
//! routing decisions, and keeps the first few input rows per point for measuring reconstruction
//! error.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::{Accumulator, Routing, StatKind, StatSet, Stats};
use crate::error::Result;
use crate::matrix::Matrix;
use crate::model::{RoutingDecision, Tap, TapPoint, to_host, with_host};

/// Gathers statistics per tap point during one pass over the calibration batches.
pub struct StatsTap {
    acc: BTreeMap<TapPoint, Accumulator>,
    routing: Option<Routing>,
    /// Points whose first rows are kept for the error measurement, with their width.
    keep: BTreeMap<TapPoint, usize>,
    kept: BTreeMap<TapPoint, Vec<f32>>,
    keep_tokens: usize,
    /// Sequences in the batch being run (set by the caller before each forward).
    pub batch_seqs: usize,
    /// Per expert: its points see every token ([`Tap::all_expert_tokens`]); missing: routed.
    pub all_experts: Vec<bool>,
}

impl StatsTap {
    /// `points`: tap point → (width, what to gather there); `routing`: also count routing
    /// decisions of a block with that many experts. `keep`: points whose first `keep_tokens`
    /// rows are kept (with their width).
    pub fn new(
        points: BTreeMap<TapPoint, (usize, StatSet)>,
        routing: Option<usize>,
        keep: BTreeMap<TapPoint, usize>,
        keep_tokens: usize,
    ) -> Self {
        let acc = points
            .into_iter()
            .filter(|(_, (_, k))| !k.per_point().is_empty())
            .map(|(p, (d, k))| (p, Accumulator::new(d, k.per_point())))
            .collect();
        Self {
            acc,
            routing: routing.map(Routing::new),
            keep,
            kept: BTreeMap::new(),
            keep_tokens,
            batch_seqs: 1,
            all_experts: Vec::new(),
        }
    }

    /// True when nothing is gathered and nothing kept.
    pub fn is_idle(&self) -> bool {
        self.acc.is_empty() && self.routing.is_none() && self.keep.is_empty()
    }

    /// True when every kept point holds `keep_tokens` rows and no statistic is gathered (a
    /// data-free pass can stop early).
    pub fn only_keeping_and_full(&self) -> bool {
        self.acc.is_empty()
            && self.routing.is_none()
            && self
                .keep
                .iter()
                .all(|(p, d)| self.kept.get(p).map_or(0, Vec::len) >= self.keep_tokens * d)
    }

    /// Calibrating experts on all tokens, every such `ExpertIn(e)` is shown the same tensor (the MoE input of
    /// every token): its statistics are gathered once, at the first `ExpertIn` point gathering
    /// the same kinds at the same width (the *leader*), and copied to the others at the end.
    fn leader(&self, point: TapPoint) -> TapPoint {
        let TapPoint::ExpertIn(e) = point else {
            return point;
        };
        if !self.all_expert_tokens(e) {
            return point;
        }
        let Some(a) = self.acc.get(&point) else {
            return point;
        };
        self.acc
            .iter()
            .find(|(p, b)| {
                matches!(p, TapPoint::ExpertIn(i) if self.all_expert_tokens(*i))
                    && b.kinds() == a.kinds()
                    && b.width() == a.width()
            })
            .map_or(point, |(p, _)| *p)
    }

    /// Consumes the tap: the statistics, and the kept inputs as `[tokens, width]` matrices.
    pub fn finish(self) -> (Stats, BTreeMap<TapPoint, Matrix>) {
        let leaders: BTreeMap<TapPoint, TapPoint> = self
            .acc
            .keys()
            .map(|&p| (p, self.leader(p)))
            .filter(|(p, l)| p != l)
            .collect();
        let mut points: BTreeMap<TapPoint, crate::stats::PointStats> =
            self.acc.into_iter().map(|(p, a)| (p, a.finish())).collect();
        for (p, l) in leaders {
            if let Some(s) = points.get(&l).cloned() {
                points.insert(p, s);
            }
        }
        let keep = self.keep;
        let kept = self
            .kept
            .into_iter()
            .filter_map(|(p, v)| {
                let d = *keep.get(&p)?;
                (d > 0 && !v.is_empty()).then(|| (p, Matrix::from_vec(v.len() / d, d, v)))
            })
            .collect();
        (Stats::new(points, self.routing), kept)
    }

    /// Keeps `x`'s first rows at `point` while fewer than `keep_tokens` are kept.
    fn keep_rows(&mut self, point: TapPoint, x: &Tensor<2>) -> Result<()> {
        let Some(&d) = self.keep.get(&point) else {
            return Ok(());
        };
        let kept = self.kept.entry(point).or_default();
        let rows = rows_to_keep(kept, self.keep_tokens, d, x.dims()[0]);
        if rows > 0 {
            kept.extend(to_host(x.clone().slice([0..rows, 0..d]))?);
        }
        Ok(())
    }
}

/// [`StatsTap::keep_rows`] from the input's host values `x` (row-major, the point's width).
fn keep_host_rows(
    kept: &mut BTreeMap<TapPoint, Vec<f32>>,
    keep: &BTreeMap<TapPoint, usize>,
    keep_tokens: usize,
    point: TapPoint,
    x: &[f32],
) {
    let Some(&d) = keep.get(&point) else {
        return;
    };
    let kept = kept.entry(point).or_default();
    let rows = rows_to_keep(kept, keep_tokens, d, x.len() / d.max(1));
    kept.extend_from_slice(&x[..rows * d]);
}

/// How many of a batch's `tokens` rows (width `d`) to add to `kept` to reach `keep_tokens` rows.
fn rows_to_keep(kept: &[f32], keep_tokens: usize, d: usize, tokens: usize) -> usize {
    ((keep_tokens * d).saturating_sub(kept.len()) / d.max(1)).min(tokens)
}

/// Per-column reductions on the device: `d` floats (or `groups × d`) come to the host.
fn reduce_on_device(acc: &mut Accumulator, x: &Tensor<2>, groups: usize) -> Result<()> {
    let [tokens, d] = x.dims();
    let kinds = acc.kinds();
    if kinds.contains(StatKind::SqNorms) {
        if crate::model::on_host(&x.device()) {
            // One pass over the input, read in place (burn's `square().sum_dim(0)` writes a
            // squared copy first); same f32 sums to the bit.
            acc.add_sq(&with_host(x, |h| {
                crate::kernels::elementwise::col_sq_sums(h, d)
            })?);
        } else {
            acc.add_sq(&to_host(x.clone().square().sum_dim(0))?);
        }
    }
    if kinds.contains(StatKind::MeanVar) && tokens > 0 {
        let per = tokens / groups;
        let x3 = x.clone().reshape([groups, per, d]);
        let mean = x3.clone().mean_dim(1);
        let var = (x3 - mean.clone()).square().mean_dim(1);
        let means = to_host(mean.reshape([groups, d]))?;
        let vars = to_host(var.reshape([groups, d]))?;
        acc.add_mean_var(&means, &vars, per);
    }
    if kinds.contains(StatKind::MaxAbs) && tokens > 0 {
        acc.add_max_abs(&to_host(x.clone().abs().max_dim(0))?);
    }
    Ok(())
}

impl Tap for StatsTap {
    fn wants(&self, point: TapPoint) -> bool {
        self.acc.contains_key(&point) || self.keep.contains_key(&point)
    }

    fn observe(&mut self, point: TapPoint, x: &Tensor<2>) -> Result<()> {
        let [tokens, _] = x.dims();
        let seqs = self.batch_seqs.max(1);
        // Sequences are whole at block-level points; an expert sees scattered tokens, whose
        // variance is taken over the whole batch.
        let groups = if !point.is_expert() && tokens % seqs == 0 {
            seqs
        } else {
            1
        };
        if self.leader(point) != point {
            // Gathered at the leader (the same tensor); only the rows are kept here.
            return self.keep_rows(point, x);
        }
        let Some(acc) = self.acc.get_mut(&point) else {
            return self.keep_rows(point, x);
        };
        if acc.kinds().contains(StatKind::Hessian) {
            // The Hessian is built on the host (faer), from the input read in place there (a
            // device's input is copied to the host once).
            let (kept, keep, keep_tokens) = (&mut self.kept, &self.keep, self.keep_tokens);
            return with_host(x, |host| {
                acc.observe_host_grouped(host, tokens, seqs, groups);
                keep_host_rows(kept, keep, keep_tokens, point, host);
            });
        }
        acc.count(tokens, seqs);
        reduce_on_device(acc, x, groups)?;
        self.keep_rows(point, x)
    }

    fn wants_routing(&self) -> bool {
        self.routing.is_some()
    }

    fn all_expert_tokens(&self, expert: usize) -> bool {
        self.all_experts.get(expert).copied().unwrap_or(false)
    }

    fn observe_routing(&mut self, r: &RoutingDecision<'_>) -> Result<()> {
        let Some(acc) = self.routing.as_mut() else {
            return Ok(());
        };
        let e = r.n_experts.min(acc.tokens.len());
        let t = if r.n_experts == 0 {
            0
        } else {
            r.probs.len() / r.n_experts
        };
        acc.total_tokens += t as u64;
        for tok in 0..t {
            for (i, p) in r.probs[tok * r.n_experts..tok * r.n_experts + e]
                .iter()
                .enumerate()
            {
                acc.prob_sum[i] += *p as f64;
            }
        }
        for i in 0..e {
            acc.tokens[i] += r.tokens.get(i).map_or(0, Vec::len) as u64;
            acc.weight_sum[i] += r
                .weights
                .get(i)
                .map_or(0.0, |w| w.iter().map(|v| *v as f64).sum());
        }
        Ok(())
    }
}
