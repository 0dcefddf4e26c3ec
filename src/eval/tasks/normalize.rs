//! Answer normalisation and string metrics (SQuAD style): lower case, punctuation removed,
//! articles a/an/the removed, whitespace collapsed; exact match, containment and token F1.

use std::collections::HashMap;

/// SQuAD's `normalize_answer`: lower-case, drop punctuation (every char that is neither
/// alphanumeric nor whitespace), drop the words a/an/the, collapse whitespace.
pub fn normalize(text: &str) -> String {
    let lowered = text.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace())
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Normalised equality; an empty normalised prediction or answer never matches.
pub fn exact_match(prediction: &str, answer: &str) -> bool {
    let (p, a) = (normalize(prediction), normalize(answer));
    !p.is_empty() && p == a
}

/// The normalised `answer` occurs in the normalised `text` as whole words (so "red" is not found
/// in "bored"); an empty normalised answer never matches.
pub fn contains_answer(text: &str, answer: &str) -> bool {
    let (t, a) = (normalize(text), normalize(answer));
    !a.is_empty() && format!(" {t} ").contains(&format!(" {a} "))
}

/// SQuAD token F1 between normalised prediction and answer; 0 when either is empty.
pub fn token_f1(prediction: &str, answer: &str) -> f64 {
    let p = normalize(prediction);
    let a = normalize(answer);
    let pt: Vec<&str> = p.split_whitespace().collect();
    let at: Vec<&str> = a.split_whitespace().collect();
    if pt.is_empty() || at.is_empty() {
        return 0.0;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for w in &at {
        *counts.entry(w).or_default() += 1;
    }
    let mut common = 0usize;
    for w in &pt {
        if let Some(c) = counts.get_mut(w)
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / pt.len() as f64;
    let recall = common as f64 / at.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Best value of `metric(prediction, alias)` over all aliases (0 when there are none).
pub fn best_over(prediction: &str, aliases: &[String], metric: impl Fn(&str, &str) -> f64) -> f64 {
    aliases
        .iter()
        .map(|a| metric(prediction, a))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_like_squad() {
        assert_eq!(normalize("  The Big,  RED dog! "), "big red dog");
        assert_eq!(normalize("An apple a day"), "apple day");
        assert_eq!(normalize("don't"), "dont");
        assert_eq!(normalize("theory"), "theory");
        assert_eq!(normalize("Élan\tvital\n"), "élan vital");
        assert_eq!(normalize("the"), "");
    }

    #[test]
    fn exact_and_contains() {
        assert!(exact_match("The Sky.", "sky"));
        assert!(!exact_match("sky blue", "blue"));
        assert!(!exact_match("", ""));
        assert!(contains_answer("it is blue, of course", "Blue"));
        assert!(!contains_answer("she was bored", "red"));
        assert!(!contains_answer("anything", "the"));
        assert!(contains_answer("a big red ball", "red ball"));
    }

    #[test]
    fn f1_by_hand() {
        // prediction "big red dog" vs "red dog": common 2, p = 2/3, r = 1 → f1 = 0.8
        assert!((token_f1("the big red dog", "red dog") - 0.8).abs() < 1e-12);
        assert_eq!(token_f1("", "red"), 0.0);
        assert_eq!(token_f1("cat", "dog"), 0.0);
        assert_eq!(token_f1("Dog.", "the dog"), 1.0);
        // repeated words are counted once per occurrence in the answer
        assert!((token_f1("dog dog", "dog") - 2.0 * 0.5 * 1.0 / 1.5).abs() < 1e-12);
        let aliases = vec!["cat".to_string(), "red dog".to_string()];
        assert!((best_over("big red dog", &aliases, token_f1) - 0.8).abs() < 1e-12);
    }
}
