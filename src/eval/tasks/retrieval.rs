//! In-context retrieval (LLM-KICK's ICR-QA, ALGORITHMS.md §10): answer a question about a passage
//! in the prompt; the answer is the first line of the greedy continuation, scored by exact match,
//! whole-word containment and SQuAD token F1. An empty answer scores 0 everywhere.

use std::collections::BTreeMap;

use super::generate;
use super::normalize::{best_over, contains_answer, exact_match, token_f1};
use super::schema::RetrievalItem;
use super::stats::mean_stderr;
use crate::error::Result;
use crate::eval::lm::LanguageModel;
use crate::report::TaskResult;

/// The retrieval prompt.
pub fn retrieval_prompt(passage: &str, question: &str) -> String {
    format!("{passage}\n\nBased on this text, answer the question.\nQ: {question}\nA:")
}

/// The answer inside a continuation: leading whitespace dropped, then the first line, trimmed.
pub fn first_line(continuation: &str) -> &str {
    continuation
        .trim_start()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
}

/// Per-item scores: (exact match, containment, F1), each the best over the aliases.
///
/// - `em`: normalised prediction equals a normalised alias.
/// - `contains`: a normalised alias occurs as whole words in the normalised prediction
///   (LLM-KICK also accepted prediction ⊆ answer, which made an empty prediction correct).
/// - `f1`: SQuAD token F1.
pub fn score_answer(prediction: &str, answers: &[String]) -> (f64, f64, f64) {
    let b = |x: bool| f64::from(u8::from(x));
    let em = best_over(prediction, answers, |p, a| b(exact_match(p, a)));
    let contains = best_over(prediction, answers, |p, a| b(contains_answer(p, a)));
    let f1 = best_over(prediction, answers, token_f1);
    (em, contains, f1)
}

/// Runs a retrieval task: metrics `em`, `contains`, `f1` (mean ± stderr).
pub fn run_retrieval(
    model: &mut dyn LanguageModel,
    name: &str,
    items: &[RetrievalItem],
    max_new: usize,
) -> Result<TaskResult> {
    let (mut em, mut contains, mut f1) = (vec![], vec![], vec![]);
    for item in items {
        let generated = generate(
            model,
            &retrieval_prompt(&item.passage, &item.question),
            max_new,
        )?;
        let (e, c, f) = score_answer(first_line(&generated), &item.answers);
        em.push(e);
        contains.push(c);
        f1.push(f);
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("em".to_string(), mean_stderr(&em));
    metrics.insert("contains".to_string(), mean_stderr(&contains));
    metrics.insert("f1".to_string(), mean_stderr(&f1));
    Ok(TaskResult {
        name: name.to_string(),
        kind: "retrieval".into(),
        n: items.len(),
        metrics,
        base_metrics: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lm::testing::FakeLm;

    fn ri(q: &str, answers: &[&str]) -> RetrievalItem {
        RetrievalItem {
            passage: "Tom had a dog named Max.".into(),
            question: q.into(),
            answers: answers.iter().map(|s| s.to_string()).collect(),
            id: None,
        }
    }

    #[test]
    fn empty_answer_scores_zero() {
        assert_eq!(score_answer("", &["Max".into()]), (0.0, 0.0, 0.0));
        // the model answers with an empty first line followed by nothing useful
        let mut m = FakeLm::new().reply("Q: What was the dog called?\nA:", " ");
        let r =
            run_retrieval(&mut m, "t", &[ri("What was the dog called?", &["Max"])], 16).unwrap();
        for k in ["em", "contains", "f1"] {
            assert_eq!(r.metrics[k].value, 0.0, "{k}");
        }
    }

    #[test]
    fn first_line_is_the_answer() {
        assert_eq!(first_line(" Max.\nQ: next"), "Max.");
        assert_eq!(first_line("\n\n Max\n"), "Max");
        let mut m = FakeLm::new()
            .reply("dog called?\nA:", " Max.\nQ: Who had the dog?\nA: Tom")
            .reply("Who had the dog?\nA:", " The boy Tom")
            .reply("cat?\nA:", " Max\nTom");
        let items = [
            ri("What was the dog called?", &["Max"]),
            ri("Who had the dog?", &["Tom"]),
            ri("Whose cat?", &["Tom"]),
        ];
        let r = run_retrieval(&mut m, "t", &items, 32).unwrap();
        // item 1: exact; item 2: contained, f1 = 2·(1/2·1)/(1.5) = 2/3; item 3: "Tom" only on line 2 → 0
        assert!((r.metrics["em"].value - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.metrics["contains"].value - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.metrics["f1"].value - (1.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(r.kind, "retrieval");
    }
}
