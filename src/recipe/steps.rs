//! Stage 2 for one step: its targets matched against the model's linears, then its method's own
//! `resolve` (in the method's folder) range-checks every parameter against those targets.

use crate::compress::Step;
use crate::compress::spec::ResolveCtx;
use crate::error::Result;
use crate::recipe::plan::{Ctx, PlanStep};
use crate::recipe::targets;

pub(super) fn resolve_step(ctx: &Ctx, index: usize, step: &Step) -> Result<PlanStep> {
    let name = step.name();
    let key = format!("steps[{index}].{name}");
    let (tg, ig) = step.selection();
    let targets = targets::select(tg, ig.unwrap_or(&[]), ctx.linears).map_err(|e| {
        let at = match e.index {
            Some(i) => format!("{key}.{}[{i}]", e.field),
            None => key.clone(),
        };
        ctx.err(at, e.message)
    })?;
    let rctx = ResolveCtx {
        recipe: ctx.path,
        key: key.clone(),
        targets: targets
            .iter()
            .filter_map(|id| ctx.linears.iter().find(|l| l.id == *id))
            .collect(),
    };
    let method = step.resolve(&rctx)?;
    Ok(PlanStep {
        name: name.to_string(),
        key,
        method,
        targets,
    })
}
