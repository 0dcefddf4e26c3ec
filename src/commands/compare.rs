//! `pare compare`: several recipes on one model, on the same calibration and the same evaluation,
//! each written to OUT/<recipe stem>/, gathered into OUT/comparison.{json,md,html}.
//!
//! Shared settings, so that the runs differ only in their steps, propagation and export:
//! - **Calibration**: the first recipe's `calibration` data (text or ids, samples, seq_len,
//!   seed) is used for every recipe (the others' are ignored); each recipe keeps its own
//!   `calibrate_all_experts`.
//! - **Evaluation**: the first recipe's `eval` block is used for every recipe; `--text` replaces
//!   its text (with no eval block, the window is min(max_position_embeddings, 512) and every
//!   window is scored). KL-divergence against the input model is always on. `--tasks` are added
//!   to the eval block's tasks and run on every compressed model.
//!
//! The recipe written next to each output (`recipe.yaml`) is the applied one: its calibration and
//! eval blocks are the shared ones, with absolute paths.
//!
//! Reuse: each run folder holds `compare.json` with a key over everything the run depends on —
//! the applied recipe, pare's version, the model (its path, config.json and the size and time of
//! every weight file) and the bytes of the calibration and evaluation files. An earlier run is
//! read back instead of redone only when its key matches; otherwise it is redone (with a
//! warning). OUT itself must be new, empty or an earlier comparison's folder, unless `force`
//! (which also redoes every run). The input
//! model is added as the `dense` reference row (perplexity of the base, size ratio 1); when tasks
//! are given it is scored on them too (agreement tasks excepted) and that report is kept in
//! OUT/dense/.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::compress::{plan_for, run_with};
use super::eval::{default_seq_len, evaluate_into};
use crate::error::{PareError, Result};
use crate::eval::tasks::{TaskItems, load_task};
use crate::eval::text::text_windows;
use crate::pipeline::{ModelRunner, Progress};
use crate::recipe::plan::{CalibSource, CalibrationPlan, EvalPlan};
use crate::recipe::{CalibrationSpec, EvalSpec, ExpertCalibration, Plan, to_yaml};
use crate::report::{Comparison, ComparisonRow, Report, write_comparison, write_report};

/// Name of the reference row and of its folder under OUT.
pub const DENSE: &str = "dense";

/// What to compare.
#[derive(Clone, Debug, Default)]
pub struct CompareRequest {
    pub model: PathBuf,
    pub recipes: Vec<PathBuf>,
    pub out: PathBuf,
    /// Evaluation text replacing the first recipe's eval text.
    pub text: Option<PathBuf>,
    /// Task files evaluated on every compressed model.
    pub tasks: Vec<PathBuf>,
    /// Re-run recipes whose report already exists.
    pub force: bool,
}

/// One recipe, planned with the shared calibration and evaluation.
struct Job {
    stem: String,
    recipe_path: PathBuf,
    plan: Plan,
    text: String,
}

/// Runs `pare compare` and writes OUT/comparison.{json,md,html}.
pub fn run(req: &CompareRequest, device: &Device, progress: &dyn Progress) -> Result<Comparison> {
    if req.recipes.is_empty() {
        return Err(PareError::Usage(
            "pare compare: give at least one --recipe FILE".into(),
        ));
    }
    let runner = ModelRunner::open(&req.model, device)?;
    let jobs = plan_jobs(req, &runner)?;
    check_out_dir(req)?;
    std::fs::create_dir_all(&req.out)
        .map_err(|e| PareError::io(format!("creating {}", req.out.display()), e))?;

    let mut reports: Vec<(String, String, Report)> = Vec::with_capacity(jobs.len());
    // The base is evaluated once, on the shared windows and tasks, for every run.
    let mut base_cache = super::eval::BaseCache::default();
    for job in &jobs {
        let dir = req.out.join(&job.stem);
        let report_path = dir.join("report.json");
        let key = run_key(&runner, job)?;
        let stored = stored_key(&dir);
        let report = if !req.force && report_path.is_file() && stored.as_deref() == Some(&key) {
            progress.warn(&format!(
                "{}: reusing the identical earlier run in {} (use --force to re-run)",
                job.recipe_path.display(),
                dir.display()
            ));
            read_report(&report_path)?
        } else {
            if !req.force && report_path.is_file() {
                progress.warn(&format!(
                    "{}: the recipe, model or calibration changed since the run in {}; running it again",
                    job.recipe_path.display(),
                    dir.display()
                ));
            }
            // The folder belongs to this comparison (checked above): replace what is there.
            let force = req.force || dir.exists();
            let report = run_with(
                &runner,
                &job.plan,
                &job.text,
                &dir,
                force,
                false,
                &mut base_cache,
                progress,
            )?
            .report;
            write_key(&dir, &key, &job.recipe_path)?;
            report
        };
        reports.push((
            job.stem.clone(),
            job.recipe_path.display().to_string(),
            report,
        ));
    }

    let mut cmp = Comparison {
        runs: Vec::with_capacity(reports.len() + 1),
    };
    let eval = jobs.first().and_then(|j| j.plan.eval.clone());
    cmp.runs
        .push(dense_row(req, &runner, &reports, eval.as_ref(), progress)?);
    for (stem, recipe, report) in &reports {
        cmp.runs
            .push(ComparisonRow::from_report(stem, recipe, report));
    }
    write_comparison(&req.out, &cmp)?;
    Ok(cmp)
}

/// The marker file of a run folder of `pare compare`.
const KEY_FILE: &str = "compare.json";

/// A comparison may write into a new or empty OUT, or into an earlier comparison's (which holds
/// comparison.json or run folders with compare.json); anything else only with `force`.
fn check_out_dir(req: &CompareRequest) -> Result<()> {
    let out = &req.out;
    if req.force || !out.exists() {
        return Ok(());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(out)
        .map_err(|e| PareError::io(format!("reading {}", out.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let ours =
        out.join("comparison.json").is_file() || entries.iter().any(|p| p.join(KEY_FILE).is_file());
    if entries.is_empty() || ours {
        return Ok(());
    }
    Err(PareError::Usage(format!(
        "--out {}: the folder exists and is not a pare compare output; choose another folder or pass --force",
        out.display()
    )))
}

/// The key of a recipe's run.
fn run_key(runner: &ModelRunner, job: &Job) -> Result<String> {
    let eval = job.plan.eval.as_ref();
    let mut files: Vec<std::path::PathBuf> = match &job.plan.calibration.source {
        CalibSource::Text(p) | CalibSource::Ids(p) => vec![p.clone()],
        CalibSource::None => vec![],
    };
    files.extend(eval.map(|e| e.text.clone()));
    files.extend(eval.into_iter().flat_map(|e| e.tasks.iter().cloned()));
    key_of(runner, &job.text, &files)
}

/// FNV-1a over everything a run depends on (see the module docs), as hex: pare's version,
/// `what` (the applied recipe), the model's files and the bytes of `inputs`.
fn key_of(runner: &ModelRunner, what: &str, inputs: &[PathBuf]) -> Result<String> {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    let mut feed = |label: &str, bytes: &[u8]| {
        h.write(label.as_bytes());
        h.write(&(bytes.len() as u64).to_le_bytes());
        h.write(bytes);
    };
    feed("pare", crate::VERSION.as_bytes());
    feed("recipe", what.as_bytes());
    let model = absolute(&runner.dir)?;
    feed("model", model.display().to_string().as_bytes());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&model)
        .map_err(|e| PareError::io(format!("reading {}", model.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "safetensors" || x == "json")
        })
        .collect();
    files.sort();
    for f in &files {
        let meta = std::fs::metadata(f)
            .map_err(|e| PareError::io(format!("reading {}", f.display()), e))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        feed("file", format!("{name} {} {mtime}", meta.len()).as_bytes());
    }
    feed("config", &read(&model.join("config.json"))?);
    for p in inputs {
        feed("input", &read(p)?);
    }
    Ok(format!("{:016x}", h.finish()))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| PareError::input(path, format!("cannot read: {e}")))
}

fn stored_key(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(KEY_FILE)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("key").and_then(|k| k.as_str()).map(str::to_string)
}

fn write_key(dir: &Path, key: &str, recipe: &Path) -> Result<()> {
    let v = serde_json::json!({
        "key": key,
        "recipe": recipe.display().to_string(),
        "pare": crate::VERSION,
    });
    let p = dir.join(KEY_FILE);
    std::fs::write(&p, format!("{v:#}\n"))
        .map_err(|e| PareError::io(format!("writing {}", p.display()), e))
}

/// Reads a report.json written by an earlier run.
fn read_report(path: &Path) -> Result<Report> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PareError::input(path, format!("cannot read report: {e}")))?;
    Report::from_json(&text).map_err(|e| {
        PareError::input(
            path,
            format!("not a pare report.json ({e}); remove it or re-run with --force"),
        )
    })
}

/// Plans every recipe with the first recipe's calibration and the shared evaluation; checks the
/// evaluation inputs and the output folder names before any work.
fn plan_jobs(req: &CompareRequest, runner: &ModelRunner) -> Result<Vec<Job>> {
    let mut plans = Vec::with_capacity(req.recipes.len());
    for path in &req.recipes {
        let (plan, _) = plan_for(runner, path)?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                PareError::input(
                    path,
                    "recipe file name has no usable stem for its output folder",
                )
            })?
            .to_string();
        if stem == DENSE {
            return Err(PareError::input(
                path,
                format!(
                    "the output folder `{DENSE}` is kept for the dense reference; rename the recipe"
                ),
            ));
        }
        if let Some((_, other, _)) = plans.iter().find(|(s, _, _)| *s == stem) {
            let other: &PathBuf = other;
            return Err(PareError::input(
                path,
                format!(
                    "same file stem `{stem}` as {}: both would write {}",
                    other.display(),
                    req.out.join(&stem).display()
                ),
            ));
        }
        plans.push((stem, path.clone(), plan));
    }
    let calibration = absolute_calibration(&plans[0].2.calibration)?;
    let eval = shared_eval(req, runner, plans[0].2.eval.as_ref())?;
    text_windows(runner, &eval.text, eval.seq_len, Some(1))?;
    for t in &eval.tasks {
        load_task(t)?;
    }
    plans
        .into_iter()
        .map(|(stem, recipe_path, mut plan)| {
            // The data is shared; how MoE experts are calibrated on it stays each recipe's.
            plan.calibration = CalibrationPlan {
                experts: plan.calibration.experts,
                ..calibration.clone()
            };
            plan.eval = Some(eval.clone());
            plan.recipe.calibration = calibration_spec(&plan.calibration);
            plan.recipe.eval = Some(eval_spec(&eval));
            let text = format!(
                "# applied by pare compare from {}: calibration and eval shared by every run\n{}",
                recipe_path.display(),
                to_yaml(&plan.recipe)?
            );
            Ok(Job {
                stem,
                recipe_path,
                plan,
                text,
            })
        })
        .collect()
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map_err(|e| PareError::input(path, format!("cannot resolve path: {e}")))
}

fn absolute_calibration(c: &CalibrationPlan) -> Result<CalibrationPlan> {
    let source = match &c.source {
        CalibSource::Text(p) => CalibSource::Text(absolute(p)?),
        CalibSource::Ids(p) => CalibSource::Ids(absolute(p)?),
        CalibSource::None => CalibSource::None,
    };
    Ok(CalibrationPlan {
        source,
        ..c.clone()
    })
}

/// The evaluation every run gets: the first recipe's eval block, `--text` replacing its text,
/// `--tasks` added, KLD on.
fn shared_eval(
    req: &CompareRequest,
    runner: &ModelRunner,
    first: Option<&EvalPlan>,
) -> Result<EvalPlan> {
    let mut eval = match (first, &req.text) {
        (Some(e), text) => EvalPlan {
            text: text.clone().unwrap_or_else(|| e.text.clone()),
            ..e.clone()
        },
        (None, Some(text)) => EvalPlan {
            text: text.clone(),
            seq_len: default_seq_len(runner),
            max_windows: None,
            kld: true,
            tasks: vec![],
        },
        (None, None) => {
            return Err(PareError::recipe(
                &req.recipes[0],
                "eval",
                "pare compare needs an evaluation text: give --text FILE or an `eval` block in the first recipe",
            ));
        }
    };
    eval.kld = true;
    eval.text = absolute(&eval.text)?;
    eval.tasks = eval
        .tasks
        .iter()
        .map(|t| absolute(t))
        .collect::<Result<_>>()?;
    for t in &req.tasks {
        let t = absolute(t)?;
        if !eval.tasks.contains(&t) {
            eval.tasks.push(t);
        }
    }
    Ok(eval)
}

fn calibration_spec(c: &CalibrationPlan) -> CalibrationSpec {
    let (text, ids) = match &c.source {
        CalibSource::Text(p) => (Some(p.display().to_string()), None),
        CalibSource::Ids(p) => (None, Some(p.display().to_string())),
        CalibSource::None => return CalibrationSpec::default(),
    };
    CalibrationSpec {
        text,
        ids,
        samples: Some(c.samples),
        seq_len: Some(c.seq_len),
        seed: Some(c.seed),
        calibrate_all_experts: (c.experts != ExpertCalibration::Auto).then_some(c.experts),
    }
}

fn eval_spec(e: &EvalPlan) -> EvalSpec {
    EvalSpec {
        text: e.text.display().to_string(),
        seq_len: Some(e.seq_len),
        max_windows: e.max_windows,
        kld: Some(e.kld),
        tasks: (!e.tasks.is_empty())
            .then(|| e.tasks.iter().map(|t| t.display().to_string()).collect()),
    }
}

/// The reference row: the base perplexity measured alongside the runs, size ratio 1, KLD 0 and
/// top-token agreement 1 by definition; task scores of the input model when tasks are given.
fn dense_row(
    req: &CompareRequest,
    runner: &ModelRunner,
    reports: &[(String, String, Report)],
    eval: Option<&EvalPlan>,
    progress: &dyn Progress,
) -> Result<ComparisonRow> {
    let base_ppl = reports.iter().find_map(|(_, _, r)| {
        r.quality
            .as_ref()
            .and_then(|q| q.base_perplexity.as_ref())
            .map(|p| p.ppl)
    });
    let mut row = ComparisonRow {
        name: DENSE.into(),
        recipe: DENSE.into(),
        params_bytes_ratio: Some(1.0),
        ppl: base_ppl,
        kld_mean: base_ppl.map(|_| 0.0),
        same_top_p: base_ppl.map(|_| 1.0),
        ..Default::default()
    };
    let mut tasks = vec![];
    for t in eval.map(|e| e.tasks.as_slice()).unwrap_or_default() {
        if !matches!(load_task(t)?.items, TaskItems::Agreement(_)) {
            tasks.push(t.clone());
        }
    }
    if tasks.is_empty() {
        return Ok(row);
    }
    let dir = req.out.join(DENSE);
    let path = dir.join("report.json");
    let key = key_of(runner, "dense tasks", &tasks)?;
    let report = if !req.force && path.is_file() && stored_key(&dir).as_deref() == Some(&key) {
        read_report(&path)?
    } else {
        let mut model = ModelRunner::open(&runner.dir, &runner.device)?;
        let mut report = Report {
            provenance: super::provenance(&runner.dir.display().to_string(), None),
            ..Default::default()
        };
        evaluate_into(
            &mut report,
            &mut model,
            None,
            None,
            None,
            None,
            &tasks,
            progress,
        )?;
        write_report(&dir, &report)?;
        write_key(&dir, &key, Path::new(DENSE))?;
        report
    };
    row.tasks = ComparisonRow::from_report(DENSE, DENSE, &report).tasks;
    Ok(row)
}
