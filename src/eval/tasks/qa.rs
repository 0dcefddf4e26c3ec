//! Closed-book factoid QA (LLM-KICK's Factoid-QA, ALGORITHMS.md §10): greedy answer to a fixed
//! prompt; correct when a normalised alias occurs in the normalised *generated* text only.

use std::collections::BTreeMap;

use super::generate;
use super::normalize::contains_answer;
use super::schema::QaItem;
use super::stats::mean_stderr;
use crate::error::Result;
use crate::eval::lm::LanguageModel;
use crate::report::TaskResult;

/// LLM-KICK's factoid prompt (note the trailing space).
pub fn qa_prompt(question: &str) -> String {
    format!("Please give answer to this question: {question}\nThe answer is ")
}

/// True when any alias occurs, as whole normalised words, in the generated continuation.
/// The prompt is never part of `generated`, so a question that mentions its answer does not count
/// (LLM-KICK's script matched against prompt + output).
pub fn qa_correct(generated: &str, answers: &[String]) -> bool {
    answers.iter().any(|a| contains_answer(generated, a))
}

/// Runs a QA task: metric `em` (mean ± stderr) with `max_new` greedy tokens per question.
pub fn run_qa(
    model: &mut dyn LanguageModel,
    name: &str,
    items: &[QaItem],
    max_new: usize,
) -> Result<TaskResult> {
    let mut em = Vec::with_capacity(items.len());
    for item in items {
        let generated = generate(model, &qa_prompt(&item.question), max_new)?;
        em.push(f64::from(u8::from(qa_correct(&generated, &item.answers))));
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("em".to_string(), mean_stderr(&em));
    Ok(TaskResult {
        name: name.to_string(),
        kind: "qa".into(),
        n: items.len(),
        metrics,
        base_metrics: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lm::testing::FakeLm;

    fn qa(q: &str, answers: &[&str]) -> QaItem {
        QaItem {
            question: q.into(),
            answers: answers.iter().map(|s| s.to_string()).collect(),
            id: None,
        }
    }

    #[test]
    fn prompt_text_never_counts_as_answer() {
        // The question contains "blue" but the model answers "green".
        let mut m = FakeLm::new().reply("Is the sky blue or green?\nThe answer is ", "green.");
        let r = run_qa(
            &mut m,
            "t",
            &[qa("Is the sky blue or green?", &["blue"])],
            16,
        )
        .unwrap();
        assert_eq!(r.metrics["em"].value, 0.0);
        let r = run_qa(
            &mut m,
            "t",
            &[qa("Is the sky blue or green?", &["Green"])],
            16,
        )
        .unwrap();
        assert_eq!(r.metrics["em"].value, 1.0);
    }

    #[test]
    fn aliases_match_whole_words_after_normalisation() {
        let mut m = FakeLm::new()
            .reply("sky?\nThe answer is ", "The Blue, of course")
            .reply("grass?\nThe answer is ", "bored");
        let items = [
            qa("Color of the sky?", &["azure", "blue"]),
            qa("Color of grass?", &["red"]),
        ];
        let r = run_qa(&mut m, "colours", &items, 32).unwrap();
        assert_eq!(r.n, 2);
        assert_eq!(r.kind, "qa");
        assert_eq!(r.metrics["em"].value, 0.5);
    }

    #[test]
    fn generation_is_cut_at_max_new() {
        let mut m = FakeLm::new().reply("is ", "xxxxblue");
        let r = run_qa(&mut m, "t", &[qa("q", &["blue"])], 4).unwrap();
        assert_eq!(r.metrics["em"].value, 0.0);
        let r = run_qa(&mut m, "t", &[qa("q", &["xxxxblue"])], 9).unwrap();
        assert_eq!(r.metrics["em"].value, 1.0);
    }
}
