//! Multiple-choice scoring as lm-evaluation-harness does it: each choice is a continuation of the
//! context after a `" "` delimiter, only continuation tokens are summed; `acc` takes the choice
//! with the highest log-likelihood, `acc_norm` the highest log-likelihood per character.

use std::collections::BTreeMap;

use super::schema::McItem;
use super::stats::mean_stderr;
use crate::error::{PareError, Result};
use crate::eval::lm::LanguageModel;
use crate::report::TaskResult;

/// lm-evaluation-harness's default `target_delimiter`.
pub const TARGET_DELIMITER: &str = " ";

/// Context and continuation ids of one request, split the way lm-evaluation-harness's
/// `_encode_pair` does: trailing whitespace of the context moves to the continuation; the text
/// is encoded whole and the context alone, and the continuation is the tail of the whole encoding
/// past the length of the context encoding (so a token merged across the boundary is counted as
/// continuation). BOS is added, as for lm-eval models with `add_bos_token=True`.
pub fn encode_pair(
    model: &dyn LanguageModel,
    context: &str,
    continuation: &str,
) -> Result<(Vec<u32>, Vec<u32>)> {
    let trimmed = context.trim_end();
    let moved = &context[trimmed.len()..];
    let continuation = format!("{moved}{continuation}");
    let whole = model.encode(&format!("{trimmed}{continuation}"), true)?;
    let ctx = model.encode(trimmed, true)?;
    let cont = if whole.len() > ctx.len() {
        whole[ctx.len()..].to_vec()
    } else {
        // Degenerate tokenisation (the whole is not longer than the context): score the
        // continuation encoded on its own.
        model.encode(&continuation, false)?
    };
    Ok((ctx, cont))
}

/// Sum of `log p(continuation | context)` over the continuation tokens, and their number.
/// Over-long inputs are cut from the left to `max_len` tokens, as lm-eval does.
pub fn loglikelihood(
    model: &mut dyn LanguageModel,
    context: &str,
    continuation: &str,
) -> Result<(f64, usize)> {
    let (ctx, cont) = encode_pair(model, context, continuation)?;
    if cont.is_empty() {
        return Err(PareError::Usage(format!(
            "continuation {continuation:?} encodes to no tokens"
        )));
    }
    let max_len = model.max_len();
    if cont.len() >= max_len {
        return Err(PareError::Usage(format!(
            "continuation of {} tokens does not fit the model's {} positions",
            cont.len(),
            max_len
        )));
    }
    let mut ids = ctx;
    ids.extend_from_slice(&cont);
    let start = ids.len().saturating_sub(max_len);
    let ids = &ids[start..];
    let lps = model.token_logprobs(ids)?;
    if lps.len() + 1 != ids.len() {
        return Err(PareError::Usage(format!(
            "model returned {} log-probs for {} ids (expected {})",
            lps.len(),
            ids.len(),
            ids.len() - 1
        )));
    }
    let ll = lps[lps.len() - cont.len()..]
        .iter()
        .map(|&x| f64::from(x))
        .sum();
    Ok((ll, cont.len()))
}

/// What the model chose for one item.
#[derive(Clone, Debug, PartialEq)]
pub struct McOutcome {
    /// Log-likelihood of each choice.
    pub lls: Vec<f64>,
    /// argmax of `lls` (first on ties, like numpy).
    pub pred: usize,
    /// argmax of `lls[i] / chars(choice i)`.
    pub pred_norm: usize,
}

fn argmax(xs: impl Iterator<Item = f64>) -> usize {
    let mut best = (0, f64::NEG_INFINITY);
    for (i, x) in xs.enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0
}

/// Scores one item.
pub fn score_item(model: &mut dyn LanguageModel, item: &McItem) -> Result<McOutcome> {
    let context = item.full_context();
    let lls = item
        .choices
        .iter()
        .map(|c| loglikelihood(model, &context, &format!("{TARGET_DELIMITER}{c}")).map(|r| r.0))
        .collect::<Result<Vec<_>>>()?;
    let pred = argmax(lls.iter().copied());
    let pred_norm = argmax(
        lls.iter()
            .zip(&item.choices)
            .map(|(ll, c)| ll / c.chars().count().max(1) as f64),
    );
    Ok(McOutcome {
        lls,
        pred,
        pred_norm,
    })
}

/// Runs a multiple-choice task: metrics `acc` and `acc_norm`, each mean ± stderr.
pub fn run_multiple_choice(
    model: &mut dyn LanguageModel,
    name: &str,
    items: &[McItem],
) -> Result<TaskResult> {
    let mut acc = Vec::with_capacity(items.len());
    let mut acc_norm = Vec::with_capacity(items.len());
    for item in items {
        let o = score_item(model, item)?;
        acc.push(f64::from(u8::from(o.pred == item.answer)));
        acc_norm.push(f64::from(u8::from(o.pred_norm == item.answer)));
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("acc".to_string(), mean_stderr(&acc));
    metrics.insert("acc_norm".to_string(), mean_stderr(&acc_norm));
    Ok(TaskResult {
        name: name.to_string(),
        kind: "multiple_choice".into(),
        n: items.len(),
        metrics,
        base_metrics: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lm::testing::{BOS, FakeLm};

    fn item(context: &str, choices: &[&str], answer: usize) -> McItem {
        McItem {
            context: context.into(),
            choices: choices.iter().map(|s| s.to_string()).collect(),
            answer,
            fewshot: vec![],
            id: None,
        }
    }

    #[test]
    fn only_continuation_tokens_are_summed() {
        // context chars cost -5 each (default); only " ab" is summed: -0.5 + 2·(-1)
        let mut m = FakeLm::new().with_lp(" ", -0.5).with_lp("ab", -1.0);
        let (ll, n) = loglikelihood(&mut m, "zzz", " ab").unwrap();
        assert_eq!(n, 3);
        assert!((ll - (-2.5)).abs() < 1e-9);
        assert_eq!(
            m.seen[0],
            vec![
                BOS,
                b'z' as u32,
                b'z' as u32,
                b'z' as u32,
                b' ' as u32,
                b'a' as u32,
                b'b' as u32
            ]
        );
    }

    #[test]
    fn trailing_space_of_context_moves_to_continuation() {
        let m = FakeLm::new();
        let (ctx, cont) = encode_pair(&m, "is ", " x").unwrap();
        assert_eq!(ctx, vec![BOS, b'i' as u32, b's' as u32]);
        assert_eq!(cont, vec![b' ' as u32, b' ' as u32, b'x' as u32]);
    }

    #[test]
    fn higher_loglikelihood_wins_and_acc_norm_divides_by_chars() {
        // "aaaa": -0.1 + 4·(-1) = -4.1 (per char -1.025); "zz": -0.1 + 2·(-1.5) = -3.1 (per char -1.55)
        let mut m = FakeLm::new()
            .with_lp(" ", -0.1)
            .with_lp("a", -1.0)
            .with_lp("z", -1.5);
        let it = item("ctx", &["aaaa", "zz"], 1);
        let o = score_item(&mut m, &it).unwrap();
        assert!(
            (o.lls[0] + 4.1).abs() < 1e-6 && (o.lls[1] + 3.1).abs() < 1e-6,
            "{:?}",
            o.lls
        );
        assert_eq!(o.pred, 1);
        assert_eq!(o.pred_norm, 0);
        let r = run_multiple_choice(&mut m, "t", &[it, item("c", &["zz", "q"], 0)]).unwrap();
        assert_eq!(r.n, 2);
        assert_eq!(r.kind, "multiple_choice");
        assert_eq!(r.metrics["acc"].value, 1.0);
        assert_eq!(r.metrics["acc"].stderr, Some(0.0));
        // item 2: "zz" -3.1/2 = -1.55 vs "q" -5.1/1 → zz wins both ways
        assert_eq!(r.metrics["acc_norm"].value, 0.5);
        assert!((r.metrics["acc_norm"].stderr.unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn fewshot_examples_are_prepended() {
        let mut m = FakeLm::new();
        let mut it = item("C", &["x"], 0);
        it.fewshot = vec!["E1".into(), "E2".into()];
        score_item(&mut m, &it).unwrap();
        let text: String = m.seen[0][1..].iter().map(|&t| t as u8 as char).collect();
        assert_eq!(text, "E1\n\nE2\n\nC x");
    }

    #[test]
    fn long_inputs_are_cut_from_the_left() {
        let mut m = FakeLm::new().with_lp("b", -1.0);
        m.max_len = 4;
        let (ll, n) = loglikelihood(&mut m, "aaaaaaaa", " b").unwrap();
        assert_eq!((n, ll), (2, -6.0));
        assert_eq!(m.seen[0].len(), 4);
        assert!(loglikelihood(&mut m, "a", " bbbbbb").is_err());
    }

    /// A model with the real stories260k tokenizer and a constant log-prob per token.
    struct TokLm(crate::tokenizer::TextTokenizer, Vec<Vec<u32>>);
    impl LanguageModel for TokLm {
        fn token_logprobs(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
            self.1.push(ids.to_vec());
            Ok(vec![-1.0; ids.len() - 1])
        }
        fn greedy(&mut self, _: &[u32], _: usize, _: &[u32]) -> Result<Vec<u32>> {
            Ok(vec![])
        }
        fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
            self.0.encode(text, add_bos)
        }
        fn decode(&self, ids: &[u32]) -> Result<String> {
            self.0.decode(ids)
        }
        fn max_len(&self) -> usize {
            512
        }
    }

    #[test]
    fn real_tokenizer_continuation_is_the_tail_of_the_whole_encoding() {
        let dir = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/models/stories260k"
        ));
        let mut m = TokLm(crate::tokenizer::TextTokenizer::load(dir).unwrap(), vec![]);
        let context = "Lily went to the park. She played on the";
        let whole = m.encode(&format!("{context} swing"), true).unwrap();
        let ctx = m.encode(context, true).unwrap();
        let (ll, n) = loglikelihood(&mut m, context, " swing").unwrap();
        assert_eq!(n, whole.len() - ctx.len());
        assert!(n >= 1);
        assert_eq!(ll, -(n as f64));
        assert_eq!(m.decode(&whole[ctx.len()..]).unwrap().trim(), "swing");
        assert_eq!(m.1[0], [ctx, whole[whole.len() - n..].to_vec()].concat());
    }
}
