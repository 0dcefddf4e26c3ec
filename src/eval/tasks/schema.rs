//! Task files: JSONL with one header line naming the task and its type, then one item per line.
//! Parsing checks every item and reports errors as `file: line K: …` (schema in eval/README.md).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::normalize::normalize;
use crate::error::{PareError, Result};

/// The four kinds of task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    MultipleChoice,
    Qa,
    Retrieval,
    Agreement,
}

impl TaskKind {
    /// The name used in files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::MultipleChoice => "multiple_choice",
            TaskKind::Qa => "qa",
            TaskKind::Retrieval => "retrieval",
            TaskKind::Agreement => "agreement",
        }
    }

    /// Generation length used when the header gives no `max_new_tokens`.
    pub fn default_max_new(self) -> usize {
        match self {
            TaskKind::MultipleChoice => 0,
            TaskKind::Qa => 16,
            TaskKind::Retrieval => 24,
            TaskKind::Agreement => 32,
        }
    }
}

/// The first line of a task file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskHeader {
    /// Task name used in reports (e.g. `tinystories-cloze`).
    pub task: String,
    #[serde(rename = "type")]
    pub kind: TaskKind,
    /// Tokens to generate for qa / retrieval / agreement.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub description: Option<String>,
    /// Where the items came from and under which licence.
    #[serde(default)]
    pub source: Option<String>,
}

/// A multiple-choice item, scored the lm-evaluation-harness way.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McItem {
    pub context: String,
    pub choices: Vec<String>,
    /// Index of the gold choice.
    pub answer: usize,
    /// Solved examples (full text each), prepended to the context joined by `"\n\n"`.
    #[serde(default)]
    pub fewshot: Vec<String>,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

impl McItem {
    /// The context with the few-shot examples in front: `ex1\n\nex2\n\ncontext`.
    pub fn full_context(&self) -> String {
        if self.fewshot.is_empty() {
            return self.context.clone();
        }
        let mut s = self.fewshot.join("\n\n");
        s.push_str("\n\n");
        s.push_str(&self.context);
        s
    }
}

/// A closed-book factoid question with answer aliases.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QaItem {
    pub question: String,
    pub answers: Vec<String>,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

/// A question answered from a passage given in the prompt.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalItem {
    pub passage: String,
    pub question: String,
    pub answers: Vec<String>,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

/// A prompt continued greedily by the model and by the base.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgreementItem {
    pub prompt: String,
    #[serde(default)]
    pub id: Option<serde_json::Value>,
}

/// The items of a task file, by kind.
#[derive(Clone, Debug)]
pub enum TaskItems {
    MultipleChoice(Vec<McItem>),
    Qa(Vec<QaItem>),
    Retrieval(Vec<RetrievalItem>),
    Agreement(Vec<AgreementItem>),
}

impl TaskItems {
    /// Number of items.
    pub fn len(&self) -> usize {
        match self {
            TaskItems::MultipleChoice(v) => v.len(),
            TaskItems::Qa(v) => v.len(),
            TaskItems::Retrieval(v) => v.len(),
            TaskItems::Agreement(v) => v.len(),
        }
    }

    /// True when there are no items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed task file.
#[derive(Clone, Debug)]
pub struct TaskFile {
    pub path: PathBuf,
    pub header: TaskHeader,
    pub items: TaskItems,
}

impl TaskFile {
    /// `max_new_tokens` from the header, or the kind's default.
    pub fn max_new_tokens(&self) -> usize {
        self.header
            .max_new_tokens
            .unwrap_or_else(|| self.header.kind.default_max_new())
    }
}

/// Reads and checks a task file.
pub fn load_task(path: &Path) -> Result<TaskFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PareError::input(path, format!("cannot read task file: {e}")))?;
    parse_task(path, &text)
}

/// Parses task JSONL `text`; `path` is used in error messages. Blank lines are skipped.
pub fn parse_task(path: &Path, text: &str) -> Result<TaskFile> {
    let err = |line: usize, msg: String| PareError::input(path, format!("line {line}: {msg}"));
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((hline, htext)) = lines.next() else {
        return Err(PareError::input(
            path,
            "empty task file (expected a header line {\"task\": .., \"type\": ..})",
        ));
    };
    let header: TaskHeader = parse_line(htext).map_err(|m| {
        err(hline, format!("bad header ({m}); expected {{\"task\": \"<name>\", \"type\": \"multiple_choice|qa|retrieval|agreement\"}}"))
    })?;
    if header.task.trim().is_empty() {
        return Err(err(hline, "header: `task` (the task name) is empty".into()));
    }
    if header.kind != TaskKind::MultipleChoice && header.max_new_tokens == Some(0) {
        return Err(err(
            hline,
            "header: `max_new_tokens` must be at least 1".into(),
        ));
    }
    let body: Vec<(usize, &str)> = lines.collect();
    let items = match header.kind {
        TaskKind::MultipleChoice => TaskItems::MultipleChoice(parse_items(&body, check_mc, &err)?),
        TaskKind::Qa => TaskItems::Qa(parse_items(&body, check_qa, &err)?),
        TaskKind::Retrieval => TaskItems::Retrieval(parse_items(&body, check_retrieval, &err)?),
        TaskKind::Agreement => TaskItems::Agreement(parse_items(&body, check_agreement, &err)?),
    };
    if items.is_empty() {
        return Err(PareError::input(
            path,
            "task file has a header but no items",
        ));
    }
    Ok(TaskFile {
        path: path.to_path_buf(),
        header,
        items,
    })
}

fn parse_line<T: DeserializeOwned>(line: &str) -> std::result::Result<T, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("malformed JSON: {e}"))?;
    if !value.is_object() {
        return Err("expected a JSON object".into());
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

fn parse_items<T: DeserializeOwned>(
    body: &[(usize, &str)],
    check: fn(&T) -> std::result::Result<(), String>,
    err: &dyn Fn(usize, String) -> PareError,
) -> Result<Vec<T>> {
    body.iter()
        .map(|&(line, text)| {
            let item: T = parse_line(text).map_err(|m| err(line, m))?;
            check(&item).map_err(|m| err(line, m))?;
            Ok(item)
        })
        .collect()
}

fn check_mc(item: &McItem) -> std::result::Result<(), String> {
    if item.choices.is_empty() {
        return Err("`choices` is empty".into());
    }
    if let Some(i) = item.choices.iter().position(|c| c.trim().is_empty()) {
        return Err(format!("choice {i} is empty"));
    }
    if item.answer >= item.choices.len() {
        return Err(format!(
            "`answer` {} is out of range (there are {} choices, indices 0..{})",
            item.answer,
            item.choices.len(),
            item.choices.len() - 1
        ));
    }
    Ok(())
}

fn check_aliases(answers: &[String]) -> std::result::Result<(), String> {
    if answers.is_empty() {
        return Err("`answers` is empty".into());
    }
    if let Some(a) = answers.iter().find(|a| normalize(a).is_empty()) {
        return Err(format!(
            "answer {a:?} is empty after normalisation (it can never match)"
        ));
    }
    Ok(())
}

fn check_qa(item: &QaItem) -> std::result::Result<(), String> {
    if item.question.trim().is_empty() {
        return Err("`question` is empty".into());
    }
    check_aliases(&item.answers)
}

fn check_retrieval(item: &RetrievalItem) -> std::result::Result<(), String> {
    if item.passage.trim().is_empty() {
        return Err("`passage` is empty".into());
    }
    if item.question.trim().is_empty() {
        return Err("`question` is empty".into());
    }
    check_aliases(&item.answers)
}

fn check_agreement(item: &AgreementItem) -> std::result::Result<(), String> {
    if item.prompt.is_empty() {
        return Err("`prompt` is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TaskFile> {
        parse_task(Path::new("tasks/x.jsonl"), text)
    }

    fn err_of(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    const MC_HEAD: &str = r#"{"task": "t", "type": "multiple_choice"}"#;

    #[test]
    fn parses_each_kind() {
        let f = parse(&format!(
            "{MC_HEAD}\n\n{}\n",
            r#"{"context": "A", "choices": ["x", "y"], "answer": 1, "fewshot": ["Q x"], "id": 3}"#
        ))
        .unwrap();
        let TaskItems::MultipleChoice(items) = &f.items else {
            panic!()
        };
        assert_eq!(items[0].answer, 1);
        assert_eq!(items[0].full_context(), "Q x\n\nA");
        let f = parse("{\"task\": \"q\", \"type\": \"qa\", \"max_new_tokens\": 8}\n{\"question\": \"Q?\", \"answers\": [\"blue\"]}").unwrap();
        assert_eq!(f.max_new_tokens(), 8);
        assert_eq!(f.items.len(), 1);
        let f = parse("{\"task\": \"r\", \"type\": \"retrieval\"}\n{\"passage\": \"P\", \"question\": \"Q?\", \"answers\": [\"Tom\"]}").unwrap();
        assert_eq!(f.max_new_tokens(), 24);
        let f =
            parse("{\"task\": \"a\", \"type\": \"agreement\"}\n{\"prompt\": \"Once\"}").unwrap();
        assert!(matches!(f.items, TaskItems::Agreement(_)));
    }

    #[test]
    fn bad_files_name_file_and_line() {
        let e = err_of(&format!(
            "{MC_HEAD}\n{{\"context\": \"A\", \"choices\": [\"x\"], \"answer\": 0}}\n{{\"context\": \"A\", \"choices\": [\"x\", \"y\"], \"answer\": 2}}"
        ));
        assert!(
            e.starts_with("tasks/x.jsonl: line 3: `answer` 2 is out of range"),
            "{e}"
        );
        let e = err_of(&format!(
            "{MC_HEAD}\n{{\"context\": \"A\", \"choices\": [], \"answer\": 0}}"
        ));
        assert!(e.contains("line 2: `choices` is empty"), "{e}");
        let e = err_of(&format!("{MC_HEAD}\n{{\"context\": \"A\", \"answer\": 0}}"));
        assert!(e.contains("line 2: missing field `choices`"), "{e}");
        let e = err_of(&format!(
            "{MC_HEAD}\n{{\"context\": \"A\", \"choices\": [\"x\"] \"answer\": 0}}"
        ));
        assert!(e.contains("line 2: malformed JSON"), "{e}");
        let e = err_of(&format!(
            "{MC_HEAD}\n{{\"context\": \"A\", \"choice\": [\"x\"], \"answer\": 0}}"
        ));
        assert!(e.contains("line 2: unknown field `choice`"), "{e}");
        // blank lines still count for numbering
        let e = err_of(
            "{\"task\": \"q\", \"type\": \"qa\"}\n\n{\"question\": \"Q\", \"answers\": [\"The\"]}",
        );
        assert!(
            e.contains("line 3: answer \"The\" is empty after normalisation"),
            "{e}"
        );
        let e = err_of("{\"task\": \"q\", \"type\": \"essay\"}\n");
        assert!(e.contains("line 1: bad header"), "{e}");
        let e = err_of("{\"question\": \"Q\", \"answers\": [\"x\"]}");
        assert!(e.contains("line 1: bad header"), "{e}");
        assert!(err_of("\n\n").contains("empty task file"));
        assert!(err_of(MC_HEAD).contains("no items"));
        let e = err_of(
            "{\"task\": \"r\", \"type\": \"retrieval\"}\n{\"passage\": \"\", \"question\": \"Q\", \"answers\": [\"x\"]}",
        );
        assert!(e.contains("line 2: `passage` is empty"), "{e}");
    }
}
