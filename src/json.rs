//! JSON as Python writes it: `json.dumps` emits the bare tokens `NaN`, `Infinity` and
//! `-Infinity` for non-finite floats, transformers loads them, and strict JSON (serde_json)
//! rejects them. [`parse`] reads such text, standing each bare token in for a marker string, so
//! a field pare does not use passes through untouched; [`non_finite_at`] finds a marker inside
//! a field pare does use; [`to_string_pretty`] writes the bare tokens back.

use serde_json::Value;

/// The bare tokens and the marker strings that stand for them after [`parse`].
const TOKENS: [(&str, &str); 3] = [
    ("-Infinity", "\u{1}pare:-Infinity"),
    ("Infinity", "\u{1}pare:Infinity"),
    ("NaN", "\u{1}pare:NaN"),
];

/// Parses `text`, accepting Python's bare `NaN`, `Infinity` and `-Infinity` outside strings.
pub fn parse(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str(&mark(text))
}

/// `text` with every bare non-finite token outside strings replaced by its quoted marker.
fn mark(text: &str) -> std::borrow::Cow<'_, str> {
    if !TOKENS.iter().any(|(t, _)| text.contains(t)) {
        return text.into();
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 32);
    let (mut i, mut start, mut in_str, mut escaped) = (0, 0, false, false);
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            i += 1;
            continue;
        }
        let hit = TOKENS
            .iter()
            .find(|(t, _)| bytes[i..].starts_with(t.as_bytes()));
        match hit {
            Some((t, marker)) => {
                out.push_str(&text[start..i]);
                out.push_str(&serde_json::Value::String((*marker).to_string()).to_string());
                i += t.len();
                start = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[start..]);
    out.into()
}

/// The bare token a marker stands for, if `v` is one.
fn token_of(v: &Value) -> Option<&'static str> {
    let s = v.as_str()?;
    TOKENS.iter().find(|(_, m)| *m == s).map(|(t, _)| *t)
}

/// The first non-finite value inside `v` (after [`parse`]): its path below `v` (`""` for `v`
/// itself, else `.key` / `[i]` steps) and its token.
pub fn non_finite_at(v: &Value) -> Option<(String, &'static str)> {
    if let Some(t) = token_of(v) {
        return Some((String::new(), t));
    }
    match v {
        Value::Object(m) => m
            .iter()
            .find_map(|(k, x)| non_finite_at(x).map(|(p, t)| (format!(".{k}{p}"), t))),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite_at(x).map(|(p, t)| (format!("[{i}]{p}"), t))),
        _ => None,
    }
}

/// Pretty JSON (2-space) with markers written back as the bare tokens Python reads.
pub fn to_string_pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    for (t, marker) in TOKENS {
        let quoted = serde_json::Value::String(marker.to_string()).to_string();
        if s.contains(&quoted) {
            s = s.replace(&quoted, t);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_non_finite_tokens_round_trip_and_strings_are_untouched() {
        let text = r#"{"a": NaN, "b": [1, -Infinity, Infinity], "c": "NaN and \"Infinity\"", "d": {"e": 2.5}}"#;
        let v = parse(text).unwrap();
        assert_eq!(v["c"], "NaN and \"Infinity\"");
        assert_eq!(v["d"]["e"], 2.5);
        assert_eq!(non_finite_at(&v["a"]), Some((String::new(), "NaN")));
        assert_eq!(non_finite_at(&v["b"]), Some(("[1]".into(), "-Infinity")));
        assert_eq!(non_finite_at(&v["d"]), None);
        let back = to_string_pretty(&v);
        assert!(
            back.contains("\"a\": NaN") && back.contains("-Infinity,"),
            "{back}"
        );
        assert!(back.contains("\"NaN and \\\"Infinity\\\"\""), "{back}");
        assert_eq!(parse(&back).unwrap(), v);
        // Strict JSON is read as before.
        assert_eq!(parse(r#"{"x": [1, 2]}"#).unwrap()["x"][1], 2);
        assert!(parse("{\"x\": nan}").is_err());
    }
}
