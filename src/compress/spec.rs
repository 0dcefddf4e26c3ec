//! Resolving a method's recipe spec: the context a method folder's `resolve` gets, and the one
//! validator per shared parameter (sparsity and pattern, lazy-block size, dampening,
//! quantisation format, group size), so every method checks a parameter the same way.

use std::path::Path;

use crate::arch::LinearSlot;
use crate::compress::formats::{self, FormatKind};
use crate::compress::kit::select::MAX_M;
use crate::compress::{MethodKind, NofM, QuantScheme};
use crate::error::PareError;
use crate::id::LinearId;
use crate::recipe::suggest;

/// SparseGPT / GPTQ lazy-update block width.
pub const DEFAULT_BLOCK_SIZE: usize = 128;
/// SparseGPT / GPTQ relative dampening (fraction of mean diag H).
pub const DEFAULT_DAMPENING: f32 = 0.01;

/// A step before the one being resolved, as far as a later step may depend on it.
pub struct EarlierStep<'a> {
    /// Its key path, e.g. `steps[0].wanda`.
    pub key: &'a str,
    pub kind: MethodKind,
    /// It leaves an explicit mask on its targets (every pruner but expert pruning, which
    /// removes whole experts).
    pub masks: bool,
    pub targets: &'a [LinearId],
}

/// What a step's `resolve` sees: where it is in the recipe, the linears it targets and the
/// steps before it.
pub struct ResolveCtx<'a> {
    /// The recipe file (for error messages).
    pub recipe: &'a Path,
    /// The step's key path, e.g. `steps[1].wanda`.
    pub key: String,
    /// The linears the step targets, in model order.
    pub targets: Vec<&'a LinearSlot>,
    /// The recipe's earlier steps, in order.
    pub earlier: Vec<EarlierStep<'a>>,
}

impl ResolveCtx<'_> {
    /// The last earlier step that compresses `id`, if any.
    pub fn last_earlier(&self, id: LinearId) -> Option<&EarlierStep<'_>> {
        self.earlier.iter().rev().find(|s| s.targets.contains(&id))
    }

    /// For a step that refines an earlier mask (DSnoT, MaskLLM's `prior: previous`): the N:M
    /// pattern of the pruning step that last touched every target. Errors when a target was
    /// not pruned before, was quantised after being pruned (the refinement would discard the
    /// integer form), or when the targets' earlier patterns differ.
    pub fn earlier_mask(&self, what: &str) -> crate::Result<Option<NofM>> {
        let mut found: Option<(&str, Option<NofM>)> = None;
        for l in &self.targets {
            let Some(prev) = self.last_earlier(l.id).filter(|s| s.masks) else {
                return Err(PareError::recipe(
                    self.recipe,
                    self.key.clone(),
                    format!(
                        "{what} refines the mask of an earlier pruning step, but no earlier step prunes `{}`; put a pruning step (magnitude, wanda, sparsegpt) before it, or exclude the linear with `ignore`",
                        l.id
                    ),
                ));
            };
            let MethodKind::Prune { pattern } = prev.kind else {
                return Err(PareError::recipe(
                    self.recipe,
                    self.key.clone(),
                    format!(
                        "`{}` is quantised by {} before {what}, which changes masks only of unquantised weights; order the steps prune → {what} → quantise",
                        l.id, prev.key
                    ),
                ));
            };
            match found {
                Some((key, p)) if p != pattern => {
                    let name = |p: Option<NofM>| {
                        p.map_or("unstructured".to_string(), |p| format!("{}:{}", p.n, p.m))
                    };
                    return Err(PareError::recipe(
                        self.recipe,
                        self.key.clone(),
                        format!(
                            "its targets were pruned with different patterns ({} by {key}, {} by {}); split it into one step per pattern",
                            name(p),
                            name(pattern),
                            prev.key
                        ),
                    ));
                }
                _ => found = Some((prev.key, pattern)),
            }
        }
        Ok(found.and_then(|(_, p)| p))
    }

    /// Errors when an earlier step already compresses one of the targets (for a method that
    /// starts from the original weights and would discard that work).
    pub fn no_earlier(&self, what: &str, hint: &str) -> crate::Result<()> {
        for l in &self.targets {
            if let Some(prev) = self.last_earlier(l.id) {
                return Err(PareError::recipe(
                    self.recipe,
                    self.key.clone(),
                    format!(
                        "{what} starts from the original weights, but {} already compresses `{}`; {hint}",
                        prev.key, l.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A recipe error at `field` of this step.
    pub fn err(&self, field: &str, message: impl Into<String>) -> PareError {
        PareError::recipe(self.recipe, format!("{}.{field}", self.key), message)
    }

    /// Sparsity and N:M pattern of a pruning step. N:M needs no d_in multiple of M: a shorter
    /// tail group keeps `ceil(len·N/M)` (see [`crate::compress::kit::select::group_keep`]).
    pub fn prune(
        &self,
        sparsity: Option<f64>,
        pattern: Option<&str>,
    ) -> crate::Result<(f32, Option<NofM>)> {
        let pattern = match pattern {
            None => None,
            Some(p) => formats::parse_pattern(p).map_err(|m| {
                let hint = if p.contains(':') {
                    String::new()
                } else {
                    suggest::did_you_mean(p, formats::pattern_names())
                };
                self.err("pattern", format!("{m}{hint}"))
            })?,
        };
        match pattern {
            None => {
                let Some(s) = sparsity else {
                    return Err(self.err(
                        "sparsity",
                        "required for unstructured pruning: the fraction of weights to zero, in [0, 1), e.g. 0.5 (or give `pattern: \"2:4\"` to keep 2 of every 4)",
                    ));
                };
                self.check_sparsity(s)?;
                Ok((s as f32, None))
            }
            Some(p) => {
                if p.m > MAX_M {
                    return Err(self.err(
                        "pattern",
                        format!("pattern `{}:{}`: M may be at most {MAX_M}", p.n, p.m),
                    ));
                }
                let implied = 1.0 - p.n as f64 / p.m as f64;
                if let Some(s) = sparsity {
                    self.check_sparsity(s)?;
                    if (s - implied).abs() > 1e-6 {
                        return Err(self.err(
                            "sparsity",
                            format!("pattern `{}:{}` keeps {} of every {} weights, i.e. sparsity {implied}; sparsity {s} contradicts it (leave it out)", p.n, p.m, p.n, p.m),
                        ));
                    }
                }
                Ok((implied as f32, Some(p)))
            }
        }
    }

    fn check_sparsity(&self, s: f64) -> crate::Result<()> {
        if !(0.0..1.0).contains(&s) {
            return Err(self.err(
                "sparsity",
                format!("sparsity {s} is outside [0, 1): it is the fraction of weights set to zero, e.g. 0.5"),
            ));
        }
        Ok(())
    }

    /// Lazy-update block width (default 128); with N:M it must be a multiple of M so that no
    /// group straddles two blocks.
    pub fn block_size(&self, v: Option<usize>, pattern: Option<NofM>) -> crate::Result<usize> {
        let b = match v {
            Some(0) => {
                return Err(self.err("block_size", "block_size must be at least 1 (default 128)"));
            }
            v => v.unwrap_or(DEFAULT_BLOCK_SIZE),
        };
        if let Some(p) = pattern
            && b % p.m != 0
        {
            return Err(self.err(
                "block_size",
                format!("block_size {b} is not a multiple of M = {} from pattern `{}:{}` (N:M groups must not straddle blocks)", p.m, p.n, p.m),
            ));
        }
        Ok(b)
    }

    /// Relative dampening λ / mean(diag H): positive (default 0.01).
    pub fn dampening(&self, v: Option<f64>) -> crate::Result<f32> {
        let d = v.unwrap_or(f64::from(DEFAULT_DAMPENING));
        if !(d.is_finite() && d > 0.0) {
            return Err(self.err(
                "dampening",
                format!("dampening {d} must be a positive fraction of mean(diag H), e.g. 0.01"),
            ));
        }
        Ok(d as f32)
    }

    /// A quantisation format from the format table whose group size divides every target's
    /// d_in.
    pub fn quant_scheme(&self, field: &str, name: Option<&str>) -> crate::Result<QuantScheme> {
        let names: Vec<&str> = formats::quant_names().collect();
        let Some(name) = name else {
            return Err(self.err(
                field,
                "required: a quantisation format such as `int4-g128-sym` (see `pare formats`)",
            ));
        };
        let scheme = match formats::row_by_name(name).map(|r| r.kind) {
            Some(FormatKind::Quant(s)) => s,
            Some(FormatKind::Sparse(_)) => {
                return Err(self.err(field, format!("`{name}` is a sparsity pattern (use it as `pattern:` of a pruning step), not a quantisation format")));
            }
            None => {
                return Err(self.err(
                    field,
                    format!(
                        "unknown format `{name}`{} (formats: {})",
                        suggest::did_you_mean(name, &names),
                        names.join(", ")
                    ),
                ));
            }
        };
        if let Some(g) = scheme.group_size {
            self.group_divides(field, g, &format!("format `{name}`"))?;
        }
        Ok(scheme)
    }

    /// Checks that groups of `group` columns tile every target's d_in.
    pub fn group_divides(&self, field: &str, group: usize, what: &str) -> crate::Result<()> {
        for l in &self.targets {
            if l.cols % group != 0 {
                return Err(self.err(
                    field,
                    format!("{what} uses groups of {group} input columns, but `{}` has d_in = {}, not a multiple of {group}; use a per-channel format (`-ch-`) or exclude it with `ignore`", l.id, l.cols),
                ));
            }
        }
        Ok(())
    }
}
