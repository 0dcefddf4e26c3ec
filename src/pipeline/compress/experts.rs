//! Static expert pruning inside the block loop: the saliency pass over one MoE block's
//! calibration inputs, the removal of the least salient experts from the device block, and the
//! block's linear slots renumbered for the output (see [`crate::compress::expert_prune`]).

use burn::tensor::Tensor;

use crate::arch::{Architecture, LinearSlot};
use crate::compress::expert_prune::{Params, SaliencyTap, choose_kept};
use crate::error::{PareError, Result};
use crate::id::{LinearId, LinearRole};
use crate::model::{DecoderBlock, Ffn, Rope};
use crate::report::ExpertPruneReport;

/// Prunes the experts of MoE block `b` (`block`, its linears `slots` as read) by `params`'
/// saliency over the calibration inputs `hidden`; the experts in `protected` (super experts) are
/// always kept. Returns the output's slots (named by `out`,
/// the architecture with the kept expert count) with each linear's original id, the removed
/// linears and the report.
pub fn prune(
    block: &mut DecoderBlock,
    slots: Vec<LinearSlot>,
    out: &Architecture,
    b: usize,
    params: &Params,
    protected: &[usize],
    hidden: &[Tensor<3>],
    rope: &Rope,
) -> Result<Pruned> {
    let Ffn::Moe(moe) = &block.ffn else {
        return Err(PareError::Internal(format!(
            "expert-prune: block {b} has no experts"
        )));
    };
    let n = moe.experts.len();
    let mut tap = SaliencyTap::new(n, params.saliency);
    for h in hidden {
        block.observe_forward(h.clone(), rope, &mut tap)?;
    }
    let scores = tap.scores(params.saliency, b);
    let mut ranked = scores.clone();
    for &e in protected {
        if let Some(s) = ranked.get_mut(e) {
            *s = f64::INFINITY;
        }
    }
    let kept = choose_kept(&ranked, params.kept);
    if let Ffn::Moe(moe) = &mut block.ffn {
        moe.retain_experts(&kept)?;
    }
    // The output's slots, in its order; each maps back to the linear it was read as.
    let mut renamed = Vec::new();
    for slot in out.linears(b) {
        let orig = match slot.id.role {
            LinearRole::Expert { index, part } => LinearId::new(
                b,
                LinearRole::Expert {
                    index: kept[index],
                    part,
                },
            ),
            _ => slot.id,
        };
        if !slots.iter().any(|s| s.id == orig) {
            return Err(PareError::Internal(format!(
                "expert-prune: block {b} has no linear {orig}"
            )));
        }
        renamed.push((slot, orig));
    }
    // Weights the output drops: the removed experts, and the router's rows for them.
    let removed = slots
        .iter()
        .map(|s| match renamed.iter().find(|(_, o)| *o == s.id) {
            Some((n, _)) => (s.rows - n.rows.min(s.rows)) * s.cols,
            None => s.rows * s.cols,
        })
        .sum();
    Ok(Pruned {
        slots: renamed,
        removed,
        report: ExpertPruneReport {
            block: b,
            saliency: params.saliency.name().to_string(),
            kept,
            scores,
            tokens_routed: tap.tokens,
        },
    })
}

/// One block after expert pruning.
pub struct Pruned {
    /// The output's linears, each with its id in the model as read.
    pub slots: Vec<(LinearSlot, LinearId)>,
    /// Weights of the input the output drops (removed experts, their router rows), counted in
    /// the size before.
    pub removed: usize,
    pub report: ExpertPruneReport,
}
