//! Super Experts (Su et al., arXiv 2507.23279; ZunhaiSu/Super-Experts-Profilling; ALGORITHMS.md
//! §11.3): the few MoE experts whose `down_proj` outputs carry rare, extreme outliers (the
//! massive activations of the residual stream). Removing them wrecks the model, so a recipe's
//! `protect: [super-experts]` keeps them dense and at full precision through every step.
//!
//! Profile (one streamed pass of the dense model): per (block, expert), `o = max |down_proj
//! output|` over the calibration tokens routed to it. Over the blocks `< round(0.75 · L)`, the
//! super experts are `{(l, e) : o > P99.5(o) and o > floor(max(o) / 10)}` (P99.5 with numpy's
//! default linear interpolation).
//!
//! Dense blocks: the same pass records `max |down_proj output|` per channel; a channel whose
//! maximum exceeds 100 and 1000× the median channel maximum of its block is reported as a
//! massive-activation channel (the magnitude rule of Sun et al. 2024, "Massive Activations in
//! Large Language Models").

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Allocation, Profiler};
use crate::arch::BlockWeights;
use crate::error::Result;
use crate::id::{LinearId, LinearRole, MlpPart};
use crate::model::TapPoint;
use crate::stats::{StatKind, StatSet, Stats};

/// One (block, expert) with its max |down_proj output|.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExpertPeak {
    pub block: usize,
    pub expert: usize,
    pub max_abs_out: f32,
}

/// A dense block's largest down_proj output channel.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelPeak {
    pub block: usize,
    pub channel: usize,
    pub max_abs_out: f32,
    /// Median over the block's channels of their max |output|.
    pub median_channel_max: f32,
    /// Meets the massive-activation rule (> 100 and > 1000 × the median).
    pub massive: bool,
}

/// What the profile found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SuperExpertProfile {
    /// Blocks considered: those below this index.
    pub blocks_below: usize,
    /// P99.5 of `o` over the considered (block, expert) pairs, and `floor(max(o) / 10)`.
    pub p99_5: f32,
    pub tenth_of_max: f32,
    pub super_experts: Vec<ExpertPeak>,
    /// Every considered (block, expert), for the report.
    pub peaks: Vec<ExpertPeak>,
    pub dense_channels: Vec<ChannelPeak>,
}

/// `np.percentile(v, q)` (linear interpolation between closest ranks).
pub fn percentile(v: &[f32], q: f64) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f32::total_cmp);
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let f = pos - lo as f64;
    (f64::from(s[lo]) + (f64::from(s[hi]) - f64::from(s[lo])) * f) as f32
}

/// Applies the paper's rule to the peaks of the considered blocks.
pub fn select(peaks: &[ExpertPeak]) -> (f32, f32, Vec<ExpertPeak>) {
    let o: Vec<f32> = peaks.iter().map(|p| p.max_abs_out).collect();
    let p = percentile(&o, 99.5);
    let max = o.iter().copied().fold(0.0f32, f32::max);
    let tenth = (max / 10.0).floor();
    let chosen = peaks
        .iter()
        .filter(|x| x.max_abs_out > p && x.max_abs_out > tenth)
        .cloned()
        .collect();
    (p, tenth, chosen)
}

/// The profiler: gathers the peaks block by block, decides at the end.
pub struct SuperExperts {
    layers: usize,
    /// Protect what it finds (`protect: [super-experts]`); otherwise only report.
    protect: bool,
    peaks: Vec<ExpertPeak>,
    channels: Vec<ChannelPeak>,
    /// Where the result goes once decided (shared with the caller).
    pub found: std::rc::Rc<std::cell::RefCell<SuperExpertProfile>>,
}

impl SuperExperts {
    pub fn new(layers: usize, protect: bool) -> Self {
        Self {
            layers,
            protect,
            peaks: Vec::new(),
            channels: Vec::new(),
            found: Default::default(),
        }
    }

    fn blocks_below(&self) -> usize {
        (0.75 * self.layers as f64).round() as usize
    }
}

fn down_outputs(block: &BlockWeights) -> Vec<TapPoint> {
    block
        .linears
        .iter()
        .filter_map(|(s, _, _)| match s.id.role {
            LinearRole::Expert {
                index,
                part: MlpPart::Down,
            } => Some(TapPoint::ExpertDownOut(index)),
            LinearRole::Mlp(MlpPart::Down) => Some(TapPoint::MlpDownOut),
            _ => None,
        })
        .collect()
}

impl Profiler for SuperExperts {
    fn needs(&self, block: &BlockWeights) -> BTreeMap<TapPoint, StatSet> {
        down_outputs(block)
            .into_iter()
            .map(|p| (p, StatSet::of(&[StatKind::MaxAbs])))
            .collect()
    }

    fn observe_block(
        &mut self,
        block: &BlockWeights,
        stats: &Stats,
        _view: &super::BlockView<'_>,
    ) -> Result<()> {
        for p in down_outputs(block) {
            let m = stats.max_abs(p)?;
            match p {
                TapPoint::ExpertDownOut(e) => self.peaks.push(ExpertPeak {
                    block: block.block,
                    expert: e,
                    max_abs_out: m.iter().copied().fold(0.0, f32::max),
                }),
                _ => {
                    let (channel, &max) = m
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .unwrap_or((0, &0.0));
                    let median = percentile(m, 50.0);
                    self.channels.push(ChannelPeak {
                        block: block.block,
                        channel,
                        max_abs_out: max,
                        median_channel_max: median,
                        massive: max > 100.0 && max > 1000.0 * median,
                    });
                }
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>, allocation: &mut Allocation) -> Result<Vec<String>> {
        let below = self.blocks_below();
        let peaks: Vec<ExpertPeak> = self
            .peaks
            .iter()
            .filter(|p| p.block < below)
            .cloned()
            .collect();
        let (p99_5, tenth_of_max, chosen) = select(&peaks);
        let mut notes = Vec::new();
        if self.protect {
            for s in &chosen {
                let ids = [MlpPart::Gate, MlpPart::Up, MlpPart::Down].map(|part| {
                    LinearId::new(
                        s.block,
                        LinearRole::Expert {
                            index: s.expert,
                            part,
                        },
                    )
                });
                allocation.protect(
                    ids,
                    &format!("super expert (max |down_proj output| {:.4})", s.max_abs_out),
                );
            }
            notes.push(match chosen.len() {
                0 => "protect: super-experts: the profile found no super expert".to_string(),
                n => format!(
                    "protect: super-experts: {n} super expert(s) kept dense and at full precision: {}",
                    chosen
                        .iter()
                        .map(|s| format!("blocks.{}.moe.experts.{}", s.block, s.expert))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let profile = SuperExpertProfile {
            blocks_below: below,
            p99_5,
            tenth_of_max,
            super_experts: chosen,
            peaks,
            dense_channels: self.channels.clone(),
        };
        allocation.profiles.push(serde_json::json!({
            "super_experts": {
                "blocks_below": profile.blocks_below,
                "p99_5": profile.p99_5,
                "tenth_of_max": profile.tenth_of_max,
                "found": profile.super_experts,
                "massive_channels": profile.dense_channels.iter().filter(|c| c.massive).collect::<Vec<_>>(),
            }
        }));
        *self.found.borrow_mut() = profile;
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        // np.percentile([1, 2, 3, 4], 50) = 2.5; (…, 99.5) = 3.985; one value: itself.
        assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), 2.5);
        assert!((percentile(&[1.0, 2.0, 3.0, 4.0], 99.5) - 3.985).abs() < 1e-6);
        assert_eq!(percentile(&[7.0], 99.5), 7.0);
    }

    #[test]
    fn the_rule_needs_both_the_percentile_and_a_tenth_of_the_max() {
        let peak = |block, expert, m| ExpertPeak {
            block,
            expert,
            max_abs_out: m,
        };
        // 400 ordinary peaks of about 1 and one planted at 50: only the planted one.
        let mut v: Vec<ExpertPeak> = (0..400)
            .map(|i| peak(i / 8, i % 8, 1.0 + (i % 7) as f32 * 0.01))
            .collect();
        v.push(peak(3, 9, 50.0));
        let (_, tenth, chosen) = select(&v);
        assert_eq!(tenth, 5.0);
        assert_eq!(chosen, vec![peak(3, 9, 50.0)]);
        // All alike: a tenth of the max binds nothing, so the pairs above P99.5 (the top two of
        // 400) are chosen, as the reference's rule does.
        let flat: Vec<ExpertPeak> = (0..400)
            .map(|i| peak(0, i, 1.0 + i as f32 * 1e-3))
            .collect();
        let chosen: Vec<usize> = select(&flat).2.iter().map(|p| p.expert).collect();
        assert_eq!(chosen, vec![398, 399]);
        // A planted peak below ten times the others: the tenth binds, nothing is chosen but it.
        let mut v: Vec<ExpertPeak> = (0..400)
            .map(|i| peak(0, i, 10.0 + (i % 3) as f32))
            .collect();
        v.push(peak(1, 0, 200.0));
        assert_eq!(select(&v).2, vec![peak(1, 0, 200.0)]);
    }
}
