//! Recipes: YAML → [`Recipe`] (typed, as written) → [`Plan`] (checked against the model's linears).
//!
//! ```yaml
//! calibration: { text: ../calibration/tinystories-train-head.txt, samples: 128, seq_len: 256, seed: 0 }
//!                            # MoE: calibrate_all_experts: auto (default) | true | false
//! steps:                     # ordered; a method may appear more than once
//!   - wanda: { sparsity: 0.5, pattern: "2:4", targets: ["blocks.*.attn.*", "blocks.*.mlp.*"] }
//!   - gptq:  { format: int4-ch-sym }
//! protect: [super-experts]   # MoE: keep the super experts dense through every step
//! propagate: compressed      # or original
//! sequential: block          # or linear (default: block when a step prunes, else linear)
//! export: { format: dense }  # dense | sparse-bitmask | sparse-24-bitmask | pack-quantized | compressed-tensors
//! eval: { text: ../calibration/tinystories-valid-head.txt, seq_len: 256, max_windows: 50, kld: true }
//! ```
//!
//! Stage 1, [`parse_recipe`]: serde with unknown keys rejected; errors name the key path
//! (`steps[1].wanda.sparsity`), the line and column, and suggest the nearest valid key or method.
//! Stage 2, [`resolve`]: every number range-checked, every target glob matched, defaults filled,
//! paths resolved against the recipe's folder.

pub mod llmc;
pub mod plan;
pub mod schema;
pub mod suggest;
pub mod targets;

use std::path::Path;

use crate::error::{PareError, Result};

pub use crate::compress::Step;
pub use plan::{
    CalibSource, CalibrationPlan, EvalPlan, ExportFormat, ExportPlan, Plan, PlanStep, Propagate,
    Sequential, parse_size, resolve,
};
pub use schema::{
    CalibrationSpec, EvalSpec, ExpertCalibration, ExportFormatSpec, ExportSpec, PropagateSpec,
    Recipe, SequentialSpec,
};

/// Reads and parses the recipe at `path` (stage 1 only).
pub fn load_recipe(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PareError::input(path, format!("cannot read recipe: {e}")))?;
    parse_recipe(&text, path)
}

/// Parses recipe `text`; `path` is only used in error messages.
pub fn parse_recipe(text: &str, path: &Path) -> Result<Recipe> {
    // An llm-compressor recipe (`*_stage` keys) is translated; anything else is pare's own.
    if let Ok(v) = serde_saphyr::from_str::<llmc::Node>(text)
        && llmc::is_llmc(&v)
    {
        let recipe = llmc::translate(&v, path)?;
        return check_calibration(recipe, path);
    }
    schema::reset_key_path();
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let parsed = serde_saphyr::from_str_with_options::<Recipe>(text, options);
    let segments = schema::take_key_path();
    let recipe = parsed.map_err(|e| parse_error(&e, &segments, text, path))?;
    check_calibration(recipe, path)
}

/// The calibration block names one source, or none at all (a data-free recipe).
fn check_calibration(recipe: Recipe, path: &Path) -> Result<Recipe> {
    let c = &recipe.calibration;
    match (&c.text, &c.ids) {
        // No calibration at all: a data-free recipe (checked when the steps are resolved).
        (None, None) if c.is_empty() => Ok(recipe),
        (None, None) => Err(PareError::recipe(
            path,
            "calibration",
            "no calibration source: give `text: <file>` (a text file to sample) or `ids: <file.safetensors>` (pre-tokenised input_ids)",
        )),
        (Some(_), Some(_)) => Err(PareError::recipe(
            path,
            "calibration",
            "give either `text` or `ids`, not both",
        )),
        _ => Ok(recipe),
    }
}

/// The recipe `plan` was resolved from, as YAML with every path (calibration, eval text,
/// tasks) made absolute, so that the copy written next to an output re-runs from any folder.
pub fn applied_yaml(plan: &Plan) -> Result<String> {
    let abs = |p: &Path| -> Result<String> {
        std::path::absolute(p)
            .map(|a| a.display().to_string())
            .map_err(|e| PareError::input(p, format!("cannot resolve path: {e}")))
    };
    let mut r = plan.recipe.clone();
    match &plan.calibration.source {
        CalibSource::Text(p) => r.calibration.text = Some(abs(p)?),
        CalibSource::Ids(p) => r.calibration.ids = Some(abs(p)?),
        CalibSource::None => {}
    }
    if let (Some(spec), Some(e)) = (r.eval.as_mut(), plan.eval.as_ref()) {
        spec.text = abs(&e.text)?;
        if spec.tasks.is_some() {
            spec.tasks = Some(e.tasks.iter().map(|t| abs(t)).collect::<Result<_>>()?);
        }
    }
    Ok(format!(
        "# applied by pare {} from {} (paths made absolute)\n{}",
        crate::VERSION,
        plan.recipe_path.display(),
        to_yaml(&r)?
    ))
}

/// Serialises a recipe back to YAML (the applied recipe written next to the output).
pub fn to_yaml(recipe: &Recipe) -> Result<String> {
    serde_saphyr::to_string(recipe)
        .map_err(|e| PareError::Internal(format!("cannot serialise recipe: {e}")))
}

/// Builds the recipe error for a serde-saphyr failure: key path, friendlier message with a
/// suggestion, and the position.
fn parse_error(e: &serde_saphyr::Error, segments: &[String], text: &str, path: &Path) -> PareError {
    let loc = e
        .location()
        .map(|l| (l.line() as usize, l.column() as usize));
    let mut message = e.to_string();
    if let Some((line, col)) = loc {
        let suffix = format!(" at line {line}, column {col}");
        if let Some(m) = message.strip_suffix(&suffix) {
            message = m.to_string();
        }
    }
    let mut leaf: Option<String> = None;
    if let Some((word, expected)) = suggest::parse_unknown(&message, "field") {
        message = format!(
            "unknown key `{word}`{} (valid keys here: {})",
            suggest::did_you_mean(&word, &expected),
            suggest::list(&expected)
        );
        leaf = Some(word);
    } else if let Some((word, expected)) = suggest::parse_unknown(&message, "variant") {
        message = format!(
            "unknown value `{word}`{} (expected one of: {})",
            suggest::did_you_mean(&word, &expected),
            suggest::list(&expected)
        );
    } else if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|r| r.split_once('`'))
    {
        let field = field.0.to_string();
        message = format!("missing key `{field}`");
        leaf = Some(field);
    } else if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let field = rest.split(',').next().unwrap_or(rest).trim().to_string();
        message = format!("key `{field}` is given twice");
        leaf = Some(field);
    } else if message == "invalid floating point" {
        message = "not a number (expected e.g. 0.5)".to_string();
    } else if matches!(
        message.as_str(),
        "invalid u64" | "invalid u32" | "invalid u8" | "invalid usize"
    ) {
        message = "not a whole number ≥ 0".to_string();
    }
    if leaf.is_none() {
        leaf = loc.and_then(|(line, col)| key_before(text, line, col));
    }
    let mut key = key_path(segments);
    if let Some(leaf) = leaf
        && segments.last() != Some(&leaf)
    {
        key = if key.is_empty() {
            leaf
        } else {
            format!("{key}.{leaf}")
        };
    }
    if key.is_empty() {
        key = "(top level)".to_string();
    }
    if let Some((line, col)) = loc {
        message = format!("{message} (line {line}, column {col})");
    }
    PareError::recipe(path, key, message)
}

/// Joins key segments: `["steps", "[1]", "wanda"]` → `steps[1].wanda`.
fn key_path(segments: &[String]) -> String {
    let mut out = String::new();
    for s in segments {
        if !out.is_empty() && !s.starts_with('[') {
            out.push('.');
        }
        out.push_str(s);
    }
    out
}

/// The mapping key written just before 1-based (`line`, `col`) on the same line (`sparsity` for
/// an error at the value of `sparsity: high`), if any.
fn key_before(text: &str, line: usize, col: usize) -> Option<String> {
    let l = text.lines().nth(line.checked_sub(1)?)?;
    let before: String = l.chars().take(col.saturating_sub(1)).collect();
    let before = before.trim_end().strip_suffix(':')?.trim_end();
    let key: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!key.is_empty()).then_some(key)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_masks;
#[cfg(test)]
mod tests_moe;
