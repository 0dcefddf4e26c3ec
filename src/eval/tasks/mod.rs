//! Task-based evaluation: task files (JSONL, `schema`), the four runners (multiple choice, QA,
//! retrieval, agreement), their metrics with standard errors, and the lm-eval `results` view.

pub mod agreement;
pub mod multiple_choice;
pub mod normalize;
pub mod qa;
pub mod retrieval;
pub mod schema;
pub mod stats;

use serde_json::{Map, Value, json};

pub use agreement::run_agreement;
pub use multiple_choice::run_multiple_choice;
pub use qa::run_qa;
pub use retrieval::run_retrieval;
pub use schema::{TaskFile, TaskItems, TaskKind, load_task, parse_task};

use crate::error::{PareError, Result};
use crate::eval::lm::LanguageModel;
use crate::report::TaskResult;

/// Keeps the last `max_len - max_new` prompt ids (at least one), so prompt plus generation fit.
pub(crate) fn fit_prompt(ids: Vec<u32>, max_len: usize, max_new: usize) -> Vec<u32> {
    let room = max_len.saturating_sub(max_new).max(1);
    if ids.len() <= room {
        ids
    } else {
        ids[ids.len() - room..].to_vec()
    }
}

/// Drops everything from the first stop token on.
pub(crate) fn strip_stop(mut ids: Vec<u32>, stop: &[u32]) -> Vec<u32> {
    if let Some(i) = ids.iter().position(|t| stop.contains(t)) {
        ids.truncate(i);
    }
    ids
}

/// Greedy continuation of `prompt` (BOS added) as text: at most `max_new` tokens, stopping at the
/// model's stop tokens, which are not part of the text. Only the new tokens are decoded.
pub fn generate(model: &mut dyn LanguageModel, prompt: &str, max_new: usize) -> Result<String> {
    let ids = fit_prompt(model.encode(prompt, true)?, model.max_len(), max_new);
    let stop = model.stop_tokens();
    let new = strip_stop(model.greedy(&ids, max_new, &stop)?, &stop);
    model.decode(&new)
}

/// Runs one task file. `base` is needed only by agreement tasks.
pub fn run_task(
    model: &mut dyn LanguageModel,
    base: Option<&mut dyn LanguageModel>,
    task: &TaskFile,
) -> Result<TaskResult> {
    let name = task.header.task.as_str();
    let max_new = task.max_new_tokens();
    match &task.items {
        TaskItems::MultipleChoice(items) => run_multiple_choice(model, name, items),
        TaskItems::Qa(items) => run_qa(model, name, items, max_new),
        TaskItems::Retrieval(items) => run_retrieval(model, name, items, max_new),
        TaskItems::Agreement(items) => match base {
            Some(base) => run_agreement(model, base, name, items, max_new),
            None => Err(PareError::input(
                &task.path,
                "an agreement task compares two models; give a base model (--base)",
            )),
        },
    }
}

/// lm-evaluation-harness's `results` subtree:
/// `{"<task>": {"alias": "<task>", "<metric>,none": v, "<metric>_stderr,none": s | "N/A"}}`.
pub fn lm_eval_results(tasks: &[TaskResult]) -> Value {
    let mut out = Map::new();
    for t in tasks {
        let mut m = Map::new();
        m.insert("alias".into(), json!(t.name));
        for (k, v) in &t.metrics {
            m.insert(format!("{k},none"), json!(v.value));
            let se = v.stderr.map_or_else(|| json!("N/A"), |s| json!(s));
            m.insert(format!("{k}_stderr,none"), se);
        }
        out.insert(t.name.clone(), Value::Object(m));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lm::testing::{EOS, FakeLm};
    use crate::report::MetricValue;
    use std::path::Path;

    #[test]
    fn generate_decodes_only_new_tokens_and_stops() {
        let mut m = FakeLm::new().reply("Q", "answer");
        assert_eq!(generate(&mut m, "Q", 32).unwrap(), "answer");
        assert_eq!(generate(&mut m, "Q", 3).unwrap(), "ans");
        assert_eq!(strip_stop(vec![1, EOS, 2], &[EOS]), vec![1]);
        assert_eq!(fit_prompt(vec![1, 2, 3, 4], 5, 3), vec![3, 4]);
        assert_eq!(fit_prompt(vec![1, 2], 5, 3), vec![1, 2]);
    }

    #[test]
    fn lm_eval_layout() {
        let mut t = TaskResult {
            name: "cloze".into(),
            kind: "multiple_choice".into(),
            n: 3,
            ..Default::default()
        };
        t.metrics.insert(
            "acc".into(),
            MetricValue {
                value: 0.5,
                stderr: Some(0.1),
            },
        );
        t.metrics.insert(
            "acc_norm".into(),
            MetricValue {
                value: 0.25,
                stderr: None,
            },
        );
        let v = lm_eval_results(&[t]);
        assert_eq!(v["cloze"]["alias"], "cloze");
        assert_eq!(v["cloze"]["acc,none"], 0.5);
        assert_eq!(v["cloze"]["acc_stderr,none"], 0.1);
        assert_eq!(v["cloze"]["acc_norm_stderr,none"], "N/A");
    }

    #[test]
    fn agreement_without_base_is_an_input_error() {
        let f = parse_task(
            Path::new("a.jsonl"),
            "{\"task\": \"a\", \"type\": \"agreement\"}\n{\"prompt\": \"x\"}",
        )
        .unwrap();
        let e = run_task(&mut FakeLm::new(), None, &f)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("a.jsonl: an agreement task"), "{e}");
    }

    /// Every shipped task file parses, has the advertised size, and runs on a fake model.
    #[test]
    fn shipped_task_files_parse_and_run() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/eval/tasks"));
        let expect = [
            ("tinystories-cloze.jsonl", TaskKind::MultipleChoice, 40),
            ("tinystories-retrieval.jsonl", TaskKind::Retrieval, 20),
            ("tinystories-qa.jsonl", TaskKind::Qa, 20),
            ("tinystories-agreement.jsonl", TaskKind::Agreement, 20),
        ];
        for (file, kind, min) in expect {
            let f = load_task(&dir.join(file)).unwrap();
            assert_eq!(f.header.kind, kind, "{file}");
            assert!(f.items.len() >= min, "{file}: {} items", f.items.len());
            let mut m = FakeLm::new().with_lp(" abcdefghijklmnopqrstuvwxyz", -2.0);
            let mut b = FakeLm::new();
            let r = run_task(&mut m, Some(&mut b), &f).unwrap();
            assert_eq!(r.n, f.items.len());
            assert_eq!(r.name, file.trim_end_matches(".jsonl"));
        }
    }
}

/// The shipped tasks on the real stories260k model through the engine's `LanguageModel`.
#[cfg(test)]
mod stories260k {
    use super::*;
    use crate::pipeline::runner::ModelRunner;
    use std::path::Path;

    fn open() -> ModelRunner {
        let dev = crate::model::parse_device("cpu").unwrap();
        ModelRunner::open(
            Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/models/stories260k"
            )),
            &dev,
        )
        .unwrap()
    }

    fn task(name: &str) -> TaskFile {
        load_task(&Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/eval/tasks")).join(name))
            .unwrap()
    }

    #[test]
    fn dense_cloze_is_well_above_chance() {
        // Measured: acc 32/48 = 0.667, acc_norm 35/48 = 0.729 (chance 0.25).
        let r = run_task(&mut open(), None, &task("tinystories-cloze.jsonl")).unwrap();
        assert!(r.metrics["acc"].value >= 0.5, "{:?}", r.metrics);
        assert!(r.metrics["acc_norm"].value >= 0.5, "{:?}", r.metrics);
    }

    #[test]
    fn a_model_agrees_with_itself() {
        let (mut a, mut b) = (open(), open());
        let r = run_task(&mut a, Some(&mut b), &task("tinystories-agreement.jsonl")).unwrap();
        assert_eq!(r.metrics["token_match"].value, 1.0);
        assert_eq!(r.metrics["first_divergence"].value, 32.0);
    }
}
