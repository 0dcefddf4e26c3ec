//! `pare compress`: recipe → plan → block loop → written checkpoint, then (when the recipe has an
//! `eval` block) the written output is read back and evaluated against the input model.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::eval::{BaseCache, evaluate_into};
use crate::error::{PareError, Result};
use crate::eval::text::text_windows;
use crate::pipeline::{ModelRunner, Progress, compress};
use crate::recipe::{Plan, parse_recipe, plan::parse_size, resolve};
use crate::report::{Report, write_report};

/// What to compress.
#[derive(Clone, Debug, Default)]
pub struct CompressRequest {
    pub model: PathBuf,
    pub recipe: PathBuf,
    pub out: PathBuf,
    pub force: bool,
    pub max_shard_size: Option<String>,
    /// Continue a killed run from its last finished block (see
    /// [`crate::pipeline::compress`]'s resume state).
    pub resume: bool,
}

/// The result of `pare compress`.
pub struct Compressed {
    pub out: PathBuf,
    pub report: Report,
}

/// Reads and resolves a recipe against the opened model.
pub fn plan_for(runner: &ModelRunner, recipe_path: &Path) -> Result<(Plan, String)> {
    let text = std::fs::read_to_string(recipe_path)
        .map_err(|e| PareError::input(recipe_path, format!("cannot read recipe: {e}")))?;
    let recipe = parse_recipe(&text, recipe_path)?;
    let plan = resolve(recipe, recipe_path, &runner.arch.all_linears())?;
    Ok((plan, text))
}

/// Runs `pare compress` on an opened model.
pub fn run_with(
    runner: &ModelRunner,
    plan: &Plan,
    recipe_text: &str,
    out: &Path,
    force: bool,
    resume: bool,
    base_cache: &mut BaseCache,
    progress: &dyn Progress,
) -> Result<Compressed> {
    // Check the evaluation inputs before any work, so a bad eval block fails fast.
    if let Some(e) = &plan.eval {
        text_windows(runner, &e.text, e.seq_len, Some(1))?;
        for t in &e.tasks {
            crate::eval::tasks::load_task(t)?;
        }
    }
    for n in &plan.notes {
        progress.warn(n);
    }
    let context = super::context_note(runner.cfg(), "calibration", plan.calibration.seq_len);
    if let Some(n) = &context {
        progress.warn(n);
    }
    let allocation = crate::pipeline::allocate(runner, plan, out, progress)?;
    let outcome = compress(
        runner,
        plan,
        &allocation,
        recipe_text,
        out,
        force,
        resume,
        progress,
    )?;
    let mut report = outcome.report;
    report.notes.extend(plan.notes.iter().cloned());
    report.notes.extend(super::non_finite_note(runner));
    report.notes.extend(context);
    let calibration = report.provenance.calibration.take();
    let recipe = report.provenance.recipe.take();
    report.provenance = super::provenance(
        &outcome.out.display().to_string(),
        Some(&runner.dir.display().to_string()),
    );
    report.provenance.calibration = calibration;
    report.provenance.recipe = recipe;
    if let Some(e) = &plan.eval {
        let mut compressed = ModelRunner::open(&outcome.out, &runner.device)?;
        let mut base = ModelRunner::open(&runner.dir, &runner.device)?;
        let base_ref = if e.kld || !e.tasks.is_empty() {
            Some((&mut base, base_cache))
        } else {
            None
        };
        evaluate_into(
            &mut report,
            &mut compressed,
            base_ref,
            Some(&e.text),
            Some(e.seq_len),
            e.max_windows,
            &e.tasks,
            progress,
        )?;
    }
    write_report(&outcome.out, &report)?;
    Ok(Compressed {
        out: outcome.out,
        report,
    })
}

/// Runs `pare compress`.
pub fn run(req: &CompressRequest, device: &Device, progress: &dyn Progress) -> Result<Compressed> {
    let runner = ModelRunner::open(&req.model, device)?;
    let (mut plan, _) = plan_for(&runner, &req.recipe)?;
    plan.check_inputs()?;
    if let Some(s) = &req.max_shard_size {
        plan.export.max_shard_bytes =
            parse_size(s).map_err(|e| PareError::Usage(format!("--max-shard-size {s}: {e}")))?;
    }
    let applied = crate::recipe::applied_yaml(&plan)?;
    run_with(
        &runner,
        &plan,
        &applied,
        &req.out,
        req.force,
        req.resume,
        &mut BaseCache::default(),
        progress,
    )
}
