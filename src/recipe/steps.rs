//! Stage 2 for one step: the method's parameters range-checked against the linears it targets
//! (N:M and group sizes must divide every target's d_in), defaults filled, the `Method` built.

use crate::compress::formats::{self, FormatKind};
use crate::compress::{Method, NofM, QuantScheme};
use crate::error::Result;
use crate::recipe::plan::{
    Ctx, DEFAULT_BLOCK_SIZE, DEFAULT_DAMPENING, DEFAULT_FINEQUANT_THRESHOLD, DEFAULT_MIN_GROUP,
    PlanStep,
};
use crate::recipe::schema::{ActOrderSpec, Step};
use crate::recipe::{suggest, targets};

pub(super) fn resolve_step(ctx: &Ctx, index: usize, step: &Step) -> Result<PlanStep> {
    let name = step.name();
    let key = format!("steps[{index}].{name}");
    let k = |field: &str| format!("{key}.{field}");
    let (tg, ig) = match step {
        Step::Magnitude(s) | Step::Wanda(s) => (&s.targets, &s.ignore),
        Step::SparseGpt(s) => (&s.targets, &s.ignore),
        Step::Rtn(s) => (&s.targets, &s.ignore),
        Step::Gptq(s) => (&s.targets, &s.ignore),
        Step::FineQuant(s) => (&s.targets, &s.ignore),
    };
    let targets = targets::select(tg.as_deref(), ig.as_deref().unwrap_or(&[]), ctx.linears)
        .map_err(|e| {
            let at = match e.index {
                Some(i) => format!("{key}.{}[{i}]", e.field),
                None => key.clone(),
            };
            ctx.err(at, e.message)
        })?;
    let method = match step {
        Step::Magnitude(s) => {
            let (sparsity, pattern) =
                prune_params(ctx, &key, s.sparsity, s.pattern.as_deref(), &targets)?;
            Method::Magnitude { sparsity, pattern }
        }
        Step::Wanda(s) => {
            let (sparsity, pattern) =
                prune_params(ctx, &key, s.sparsity, s.pattern.as_deref(), &targets)?;
            Method::Wanda { sparsity, pattern }
        }
        Step::SparseGpt(s) => {
            let (sparsity, pattern) =
                prune_params(ctx, &key, s.sparsity, s.pattern.as_deref(), &targets)?;
            let block_size = block_size(ctx, &k("block_size"), s.block_size)?;
            if let Some(p) = pattern
                && block_size % p.m != 0
            {
                return Err(ctx.err(
                    k("block_size"),
                    format!("block_size {block_size} is not a multiple of M = {} from pattern `{}:{}` (N:M groups must not straddle blocks)", p.m, p.n, p.m),
                ));
            }
            Method::SparseGpt {
                sparsity,
                pattern,
                block_size,
                dampening: dampening(ctx, &k("dampening"), s.dampening)?,
            }
        }
        Step::Rtn(s) => Method::Rtn {
            scheme: quant_scheme(ctx, &k("format"), s.format.as_deref(), &targets)?,
        },
        Step::Gptq(s) => Method::Gptq {
            scheme: quant_scheme(ctx, &k("format"), s.format.as_deref(), &targets)?,
            block_size: block_size(ctx, &k("block_size"), s.block_size)?,
            dampening: dampening(ctx, &k("dampening"), s.dampening)?,
            actorder: s.actorder.unwrap_or(ActOrderSpec::Static) == ActOrderSpec::Static,
        },
        Step::FineQuant(s) => {
            let supported = formats::supported_bits();
            let bits = match s.bits {
                None => {
                    return Err(ctx.err(
                        k("bits"),
                        format!("required: bits per weight, one of {supported:?}"),
                    ));
                }
                Some(b) if !supported.contains(&b) => {
                    return Err(ctx.err(
                        k("bits"),
                        format!("{b} bits is not in the format table; use one of {supported:?}"),
                    ));
                }
                Some(b) => b,
            };
            let min_group = s.min_group.unwrap_or(DEFAULT_MIN_GROUP);
            let max_group = s.max_group.unwrap_or(0);
            if min_group == 0 {
                return Err(ctx.err(k("min_group"), "min_group must be at least 1"));
            }
            if max_group != 0 && max_group < min_group {
                return Err(ctx.err(
                    k("max_group"),
                    format!("max_group {max_group} is below min_group {min_group} (0 means one group per output channel)"),
                ));
            }
            if max_group != 0 {
                check_group_divides(ctx, &k("max_group"), max_group, &targets, "max_group")?;
            }
            let threshold = s
                .threshold
                .unwrap_or(f64::from(DEFAULT_FINEQUANT_THRESHOLD));
            if !(threshold.is_finite() && threshold > 0.0) {
                return Err(ctx.err(
                    k("threshold"),
                    format!("threshold {threshold} must be a positive number"),
                ));
            }
            Method::FineQuant {
                bits,
                symmetric: s.symmetric.unwrap_or(true),
                max_group,
                min_group,
                threshold: threshold as f32,
            }
        }
    };
    Ok(PlanStep {
        name: name.to_string(),
        key,
        method,
        targets,
    })
}

/// Checks sparsity and pattern of a pruning step; returns (sparsity, pattern).
fn prune_params(
    ctx: &Ctx,
    key: &str,
    sparsity: Option<f64>,
    pattern: Option<&str>,
    targets: &[String],
) -> Result<(f32, Option<NofM>)> {
    let pattern = match pattern {
        None => None,
        Some(p) => formats::parse_pattern(p).map_err(|m| {
            let hint = if p.contains(':') {
                String::new()
            } else {
                suggest::did_you_mean(p, formats::pattern_names())
            };
            ctx.err(format!("{key}.pattern"), format!("{m}{hint}"))
        })?,
    };
    match pattern {
        None => {
            let Some(s) = sparsity else {
                return Err(ctx.err(
                    format!("{key}.sparsity"),
                    "required for unstructured pruning: the fraction of weights to zero, in [0, 1), e.g. 0.5 (or give `pattern: \"2:4\"` to keep 2 of every 4)",
                ));
            };
            check_sparsity(ctx, key, s)?;
            Ok((s as f32, None))
        }
        Some(p) => {
            let implied = 1.0 - p.n as f64 / p.m as f64;
            if let Some(s) = sparsity {
                check_sparsity(ctx, key, s)?;
                if (s - implied).abs() > 1e-6 {
                    return Err(ctx.err(
                        format!("{key}.sparsity"),
                        format!("pattern `{}:{}` keeps {} of every {} weights, i.e. sparsity {implied}; sparsity {s} contradicts it (leave it out)", p.n, p.m, p.n, p.m),
                    ));
                }
            }
            for id in targets {
                if let Some(l) = ctx.slot(id)
                    && l.cols % p.m != 0
                {
                    return Err(ctx.err(
                        format!("{key}.pattern"),
                        format!("pattern `{}:{}` works on groups of {} input columns, but `{id}` has d_in = {}, not a multiple of {}; exclude it with `ignore: [\"{id}\"]`", p.n, p.m, p.m, l.cols, p.m),
                    ));
                }
            }
            Ok((implied as f32, Some(p)))
        }
    }
}

fn check_sparsity(ctx: &Ctx, key: &str, s: f64) -> Result<()> {
    if !(0.0..1.0).contains(&s) {
        return Err(ctx.err(
            format!("{key}.sparsity"),
            format!("sparsity {s} is outside [0, 1): it is the fraction of weights set to zero, e.g. 0.5"),
        ));
    }
    Ok(())
}

fn block_size(ctx: &Ctx, key: &str, v: Option<usize>) -> Result<usize> {
    match v {
        Some(0) => Err(ctx.err(key, "block_size must be at least 1 (default 128)")),
        v => Ok(v.unwrap_or(DEFAULT_BLOCK_SIZE)),
    }
}

fn dampening(ctx: &Ctx, key: &str, v: Option<f64>) -> Result<f32> {
    let d = v.unwrap_or(f64::from(DEFAULT_DAMPENING));
    if !(d.is_finite() && d > 0.0) {
        return Err(ctx.err(
            key,
            format!("dampening {d} must be a positive fraction of mean(diag H), e.g. 0.01"),
        ));
    }
    Ok(d as f32)
}

/// Looks up a quantisation format and checks its group size divides every target's d_in.
fn quant_scheme(
    ctx: &Ctx,
    key: &str,
    name: Option<&str>,
    targets: &[String],
) -> Result<QuantScheme> {
    let names: Vec<&str> = formats::quant_names().collect();
    let Some(name) = name else {
        return Err(ctx.err(
            key,
            "required: a quantisation format such as `int4-g128-sym` (see `pare formats`)",
        ));
    };
    let scheme = match formats::row_by_name(name).map(|r| r.kind) {
        Some(FormatKind::Quant(s)) => s,
        Some(FormatKind::Sparse(_)) => {
            return Err(ctx.err(key, format!("`{name}` is a sparsity pattern (use it as `pattern:` of a pruning step), not a quantisation format")));
        }
        None => {
            return Err(ctx.err(
                key,
                format!(
                    "unknown format `{name}`{} (formats: {})",
                    suggest::did_you_mean(name, &names),
                    names.join(", ")
                ),
            ));
        }
    };
    if let Some(g) = scheme.group_size {
        check_group_divides(ctx, key, g, targets, &format!("format `{name}`"))?;
    }
    Ok(scheme)
}

fn check_group_divides(
    ctx: &Ctx,
    key: &str,
    group: usize,
    targets: &[String],
    what: &str,
) -> Result<()> {
    for id in targets {
        if let Some(l) = ctx.slot(id)
            && l.cols % group != 0
        {
            return Err(ctx.err(
                key,
                format!("{what} uses groups of {group} input columns, but `{id}` has d_in = {}, not a multiple of {group}; use a per-channel format (`-ch-`) or exclude it with `ignore`", l.cols),
            ));
        }
    }
    Ok(())
}
