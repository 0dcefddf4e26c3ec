//! `pare eval`: perplexity on a text, KL-divergence and agreement against a base model, and task
//! suites, gathered into one `Report`.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{PareError, Result};
use crate::eval::tasks::{lm_eval_results, load_task, run_task};
use crate::eval::text::{score, summary, text_windows};
use crate::pipeline::{ModelRunner, Progress};
use crate::report::Report;

/// What to evaluate.
#[derive(Clone, Debug, Default)]
pub struct EvalRequest {
    pub model: PathBuf,
    pub base: Option<PathBuf>,
    pub text: Option<PathBuf>,
    pub seq_len: Option<usize>,
    pub max_windows: Option<usize>,
    pub tasks: Vec<PathBuf>,
}

/// Default window: min(max_position_embeddings, 512), the golden files' protocol.
pub fn default_seq_len(runner: &ModelRunner) -> usize {
    runner.cfg().max_position_embeddings.min(512)
}

/// Evaluates `model` (and `base`, already opened) into the quality and task parts of a report.
pub fn evaluate_into(
    report: &mut Report,
    model: &mut ModelRunner,
    mut base: Option<&mut ModelRunner>,
    text: Option<&Path>,
    seq_len: Option<usize>,
    max_windows: Option<usize>,
    tasks: &[PathBuf],
    progress: &dyn Progress,
) -> Result<()> {
    if let Some(b) = base.as_deref() {
        check_same_tokenizer(model, b)?;
    }
    if let Some(text) = text {
        let seq = seq_len.unwrap_or_else(|| default_seq_len(model));
        if let Some(n) = super::context_note(model.cfg(), "evaluation", seq) {
            progress.warn(&n);
            report.notes.push(n);
        }
        let windows = text_windows(model, text, seq, max_windows)?;
        let scores = score(model, base.as_deref(), &windows, progress)?;
        report.quality = Some(summary::quality(&text.display().to_string(), &scores));
    }
    for path in tasks {
        let task = load_task(path)?;
        progress.start(&format!("task {}", task.header.task), 1);
        let agreement = matches!(task.items, crate::eval::tasks::TaskItems::Agreement(_));
        let result = match base.as_deref_mut() {
            Some(b) if agreement => run_task(model, Some(b), &task)?,
            Some(b) => {
                // The base's own score, for the report's base column.
                let base_result = run_task(b, None, &task)?;
                let mut r = run_task(model, None, &task)?;
                r.base_metrics = Some(base_result.metrics);
                r
            }
            None => run_task(model, None, &task)?,
        };
        progress.finish();
        report.tasks.push(result);
    }
    if !report.tasks.is_empty() {
        report.lm_eval_results = lm_eval_results(&report.tasks);
    }
    Ok(())
}

/// A comparison (KLD, agreement, the base column) needs one token stream for both models:
/// refuses two models whose tokenizers split text differently (exit 2).
pub fn check_same_tokenizer(model: &ModelRunner, base: &ModelRunner) -> Result<()> {
    match model.tokenizer.difference(&base.tokenizer)? {
        None => Ok(()),
        Some(what) => Err(PareError::input(
            base.tokenizer.path(),
            format!(
                "cannot compare the two models: their tokenizers differ ({what}), so one text \
                 gives each model different tokens and neither KLD nor perplexity is comparable"
            ),
        )),
    }
}

/// Runs `pare eval`.
pub fn run(req: &EvalRequest, device: &Device, progress: &dyn Progress) -> Result<Report> {
    if req.text.is_none() && req.tasks.is_empty() {
        return Err(PareError::Usage(
            "pare eval: give --text FILE and/or --tasks FILE...".into(),
        ));
    }
    let t0 = std::time::Instant::now();
    let mut model = ModelRunner::open(&req.model, device)?;
    let mut base = match &req.base {
        Some(b) => Some(ModelRunner::open(b, device)?),
        None => None,
    };
    let mut report = Report {
        provenance: super::provenance(
            &req.model.display().to_string(),
            req.base
                .as_ref()
                .map(|b| b.display().to_string())
                .as_deref(),
        ),
        ..Default::default()
    };
    evaluate_into(
        &mut report,
        &mut model,
        base.as_mut(),
        req.text.as_deref(),
        req.seq_len,
        req.max_windows,
        &req.tasks,
        progress,
    )?;
    report.notes.extend(super::non_finite_note(&model));
    if let Some(b) = &base {
        report.notes.extend(super::non_finite_note(b));
    }
    report.totals.params = model.parameter_count();
    report.totals.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}
