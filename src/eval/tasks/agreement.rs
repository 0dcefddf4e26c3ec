//! Generation agreement: the evaluated model and the base continue the same prompt greedily for
//! n tokens; compared token by token (match rate, identical continuations, first divergence).

use std::collections::BTreeMap;

use super::schema::AgreementItem;
use super::stats::{BOOTSTRAP_ITERS, BOOTSTRAP_SEED, bootstrap_stderr, mean_stderr, median};
use super::{fit_prompt, strip_stop};
use crate::error::Result;
use crate::eval::lm::LanguageModel;
use crate::report::TaskResult;

/// Comparison of two continuations over `n` positions. A position past the end of a continuation
/// (generation stopped at EOS) holds "ended", so two continuations that stop together agree there.
#[derive(Clone, Debug, PartialEq)]
pub struct Agreement {
    /// Positions where both continuations agree, out of `n`.
    pub matches: usize,
    /// First position where they differ (`n` when they never do).
    pub first_divergence: usize,
}

/// Compares `a` and `b` position by position over `0..n`.
pub fn compare(a: &[u32], b: &[u32], n: usize) -> Agreement {
    let mut matches = 0;
    let mut first_divergence = n;
    for i in 0..n {
        if a.get(i) == b.get(i) {
            matches += 1;
        } else if first_divergence == n {
            first_divergence = i;
        }
    }
    Agreement {
        matches,
        first_divergence,
    }
}

/// Runs an agreement task with `n` new tokens per prompt. Metrics: `token_match` (fraction of
/// agreeing positions), `sequence_match` (continuations identical), `first_divergence` (mean
/// position), each mean ± stderr, and `first_divergence_median` with a bootstrap stderr.
pub fn run_agreement(
    model: &mut dyn LanguageModel,
    base: &mut dyn LanguageModel,
    name: &str,
    items: &[AgreementItem],
    n: usize,
) -> Result<TaskResult> {
    let n = n.max(1);
    let (mut token, mut seq, mut first) = (vec![], vec![], vec![]);
    for item in items {
        let prompt = fit_prompt(model.encode(&item.prompt, true)?, model.max_len(), n);
        let stop_m = model.stop_tokens();
        let a = strip_stop(model.greedy(&prompt, n, &stop_m)?, &stop_m);
        let stop_b = base.stop_tokens();
        let b = strip_stop(base.greedy(&prompt, n, &stop_b)?, &stop_b);
        let ag = compare(&a, &b, n);
        token.push(ag.matches as f64 / n as f64);
        seq.push(f64::from(u8::from(ag.matches == n)));
        first.push(ag.first_divergence as f64);
    }
    let mut metrics = BTreeMap::new();
    metrics.insert("token_match".to_string(), mean_stderr(&token));
    metrics.insert("sequence_match".to_string(), mean_stderr(&seq));
    metrics.insert("first_divergence".to_string(), mean_stderr(&first));
    metrics.insert(
        "first_divergence_median".to_string(),
        bootstrap_stderr(&first, median, BOOTSTRAP_ITERS, BOOTSTRAP_SEED),
    );
    Ok(TaskResult {
        name: name.to_string(),
        kind: "agreement".into(),
        n: items.len(),
        metrics,
        base_metrics: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::lm::testing::FakeLm;

    #[test]
    fn compare_by_hand() {
        assert_eq!(
            compare(&[1, 2, 3, 4], &[1, 2, 9, 4], 4),
            Agreement {
                matches: 3,
                first_divergence: 2
            }
        );
        assert_eq!(
            compare(&[1, 2], &[1, 2], 4),
            Agreement {
                matches: 4,
                first_divergence: 4
            }
        );
        assert_eq!(
            compare(&[1, 2], &[1, 2, 3], 4),
            Agreement {
                matches: 3,
                first_divergence: 2
            }
        );
        assert_eq!(compare(&[], &[], 3).matches, 3);
    }

    #[test]
    fn agreement_between_two_fakes() {
        let mut model = FakeLm::new().reply("a", "xyzw").reply("b", "pqrs");
        let mut base = FakeLm::new().reply("a", "xyzw").reply("b", "pqXs");
        let items = vec![
            AgreementItem {
                prompt: "a".into(),
                id: None,
            },
            AgreementItem {
                prompt: "b".into(),
                id: None,
            },
        ];
        let r = run_agreement(&mut model, &mut base, "agree", &items, 4).unwrap();
        assert_eq!(r.n, 2);
        assert_eq!(r.metrics["token_match"].value, (1.0 + 0.75) / 2.0);
        assert_eq!(r.metrics["sequence_match"].value, 0.5);
        assert_eq!(r.metrics["first_divergence"].value, (4.0 + 2.0) / 2.0);
        assert_eq!(r.metrics["first_divergence_median"].value, 3.0);
        assert!(r.metrics["first_divergence_median"].stderr.is_some());
        // a model agrees with itself everywhere
        let mut twin = FakeLm::new().reply("a", "xyzw").reply("b", "pqrs");
        let r = run_agreement(&mut model, &mut twin, "self", &items, 8).unwrap();
        assert_eq!(r.metrics["token_match"].value, 1.0);
        assert_eq!(r.metrics["first_divergence"].value, 8.0);
    }
}
