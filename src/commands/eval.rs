//! `pare eval`: perplexity on a text, KL-divergence and agreement against a base model, and task
//! suites, gathered into one `Report`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::error::{PareError, Result};
use crate::eval::tasks::{lm_eval_results, load_task, run_task};
use crate::eval::text::{score_with, summary, text_windows};
use crate::pipeline::{ModelRunner, Progress};
use crate::report::{MetricValue, Report};

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

/// What evaluating a base model gave, kept for the next model compared with the same base
/// (`pare compare` evaluates the base once): its final hidden states on the windows last scored,
/// and its task metrics by task file.
#[derive(Default)]
pub struct BaseCache {
    hidden: Option<(Vec<Vec<u32>>, Vec<burn::tensor::Tensor<3>>)>,
    tasks: BTreeMap<PathBuf, BTreeMap<String, MetricValue>>,
}

impl BaseCache {
    /// The base's final hidden states on `windows`, computed unless these windows were last.
    fn final_hidden(
        &mut self,
        base: &ModelRunner,
        windows: &[Vec<u32>],
        progress: &dyn Progress,
    ) -> Result<&[burn::tensor::Tensor<3>]> {
        let fresh = self
            .hidden
            .as_ref()
            .is_some_and(|(w, _)| w.as_slice() == windows);
        if !fresh {
            self.hidden = None; // free the old states before computing the new ones
            let h = base.final_hidden(windows, progress)?;
            self.hidden = Some((windows.to_vec(), h));
        }
        match &self.hidden {
            Some((_, h)) => Ok(h.as_slice()),
            None => Err(PareError::Internal("base hidden states missing".into())),
        }
    }
}

/// Evaluates `model` (and `base`, already opened, with what earlier evaluations of it left in
/// its cache) into the quality and task parts of a report.
pub fn evaluate_into(
    report: &mut Report,
    model: &mut ModelRunner,
    mut base: Option<(&mut ModelRunner, &mut BaseCache)>,
    text: Option<&Path>,
    seq_len: Option<usize>,
    max_windows: Option<usize>,
    tasks: &[PathBuf],
    progress: &dyn Progress,
) -> Result<()> {
    if let Some((b, _)) = &base {
        check_same_tokenizer(model, b)?;
    }
    if let Some(text) = text {
        let seq = seq_len.unwrap_or_else(|| default_seq_len(model));
        if let Some(n) = super::context_note(model.cfg(), "evaluation", seq) {
            progress.warn(&n);
            report.notes.push(n);
        }
        let windows = text_windows(model, text, seq, max_windows)?;
        let base_hidden = match &mut base {
            Some((b, cache)) => Some((&**b, cache.final_hidden(b, &windows, progress)?)),
            None => None,
        };
        // Only the evaluated model's forward below counts ODP's skipped expert calls.
        crate::model::odp_counts_reset();
        let scores = score_with(model, base_hidden, &windows, progress)?;
        let mut q = summary::quality(&text.display().to_string(), &scores);
        let (calls, skipped) = crate::model::odp_counts();
        if calls > 0 {
            q.odp = Some(crate::report::OdpStats {
                expert_calls: calls,
                skipped,
                skipped_fraction: skipped as f64 / calls as f64,
            });
        }
        report.quality = Some(q);
    }
    for path in tasks {
        let task = load_task(path)?;
        progress.start(&format!("task {}", task.header.task), 1);
        let agreement = matches!(task.items, crate::eval::tasks::TaskItems::Agreement(_));
        let result = match &mut base {
            Some((b, _)) if agreement => run_task(model, Some(&mut **b), &task)?,
            Some((b, cache)) => {
                // The base's own score, for the report's base column (once per task file).
                let metrics = match cache.tasks.get(path) {
                    Some(m) => m.clone(),
                    None => {
                        let m = run_task(&mut **b, None, &task)?.metrics;
                        cache.tasks.insert(path.clone(), m.clone());
                        m
                    }
                };
                let mut r = run_task(model, None, &task)?;
                r.base_metrics = Some(metrics);
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
    let mut cache = BaseCache::default();
    evaluate_into(
        &mut report,
        &mut model,
        base.as_mut().map(|b| (b, &mut cache)),
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
