//! "Did you mean …?" hints: edit distance, nearest candidate, and the wording of suggestions.

/// Levenshtein distance between two strings, counted in characters.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a plausible typo: at most a third
/// of the longer string's length (and at least 2 edits allowed), so `sparsty` → `sparsity` but
/// `xyz` suggests nothing. Ties go to the earlier candidate.
pub fn nearest<I, S>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut best: Option<(usize, String)> = None;
    for c in candidates {
        let c = c.as_ref();
        let d = levenshtein(&word.to_lowercase(), &c.to_lowercase());
        let limit = (word.chars().count().max(c.chars().count()) / 3).max(2);
        if d <= limit && best.as_ref().is_none_or(|(bd, _)| d < *bd) {
            best = Some((d, c.to_string()));
        }
    }
    best.map(|(_, c)| c)
}

/// `"; did you mean `x`?"` when a near candidate exists, else the empty string.
pub fn did_you_mean<I, S>(word: &str, candidates: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    match nearest(word, candidates) {
        Some(c) => format!("; did you mean `{c}`?"),
        None => String::new(),
    }
}

/// Joins candidates as `a, b, c` for "expected one of" lists.
pub fn list<I, S>(candidates: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    candidates
        .into_iter()
        .map(|c| c.as_ref().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits serde's "unknown field `x`, expected one of a, b" (or "unknown variant …") into the
/// offending word and the expected names. Accepts names with or without backticks and the
/// single-name form "expected `a`". Returns `None` for any other message.
pub fn parse_unknown(message: &str, what: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(&format!("unknown {what} `"))?;
    let (word, rest) = rest.split_once('`')?;
    let expected = if let Some(list) = rest.split_once("expected one of ").map(|(_, l)| l) {
        list.split(", ")
            .map(|s| s.trim().trim_matches('`').to_string())
            .collect()
    } else if let Some(one) = rest.split_once("expected ").map(|(_, l)| l) {
        vec![one.trim().trim_matches('`').to_string()]
    } else {
        Vec::new()
    };
    Some((
        word.to_string(),
        expected.into_iter().filter(|s| !s.is_empty()).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_hand_checked() {
        assert_eq!(levenshtein("", ""), 0);
        assert_eq!(levenshtein("abc", ""), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("sparsty", "sparsity"), 1);
        assert_eq!(levenshtein("flaw", "lawn"), 2);
    }

    #[test]
    fn nearest_picks_close_names_only() {
        let keys = ["sparsity", "pattern", "targets", "ignore"];
        assert_eq!(nearest("sparsty", keys).as_deref(), Some("sparsity"));
        assert_eq!(nearest("target", keys).as_deref(), Some("targets"));
        assert_eq!(nearest("zzzzzzzz", keys), None);
        assert_eq!(did_you_mean("ignor", keys), "; did you mean `ignore`?");
        assert_eq!(did_you_mean("q", keys), "");
    }

    #[test]
    fn parses_serde_unknown_messages() {
        let (w, e) = parse_unknown(
            "unknown field `sparsty`, expected one of sparsity, pattern",
            "field",
        )
        .unwrap();
        assert_eq!(w, "sparsty");
        assert_eq!(e, vec!["sparsity", "pattern"]);
        let (w, e) = parse_unknown(
            "unknown variant `orig`, expected one of `compressed`, `original`",
            "variant",
        )
        .unwrap();
        assert_eq!(w, "orig");
        assert_eq!(e, vec!["compressed", "original"]);
        let (_, e) = parse_unknown("unknown field `x`, expected `text`", "field").unwrap();
        assert_eq!(e, vec!["text"]);
        assert!(parse_unknown("missing field `steps`", "field").is_none());
    }
}
