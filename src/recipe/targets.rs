//! Target selection: match a step's `targets` / `ignore` patterns against the model's linears.
//!
//! A pattern is one of:
//! - a glob over canonical ids (`blocks.3.attn.q`, `blocks.3.moe.experts.5.up` …): `*` matches
//!   any run of characters, dots included (`blocks.*.attn.*` matches every attention projection
//!   of every block); `?` matches exactly one character; anything else matches itself;
//! - a Hugging Face module name as the checkpoint spells it (`model.layers.3.self_attn.q_proj`,
//!   with or without `.weight`);
//! - `re:<regex>`, llm-compressor's form: Python `re.match` of the regex against the module name
//!   (`re:.*mlp.down_proj`; the regex subset of [`crate::checkpoint::qconfig::regex_match`]);
//! - `Linear`, llm-compressor's class target: the default targets (every block linear but the
//!   MoE routers, which a step compresses only when it names them).
//!
//! Every pattern a user writes must match at least one linear; the error lists the id shapes
//! the model has and the nearest id.

use crate::arch::LinearSlot;
use crate::id::LinearId;
use crate::recipe::suggest;

/// Targets used when a step gives none: every linear of every decoder block except MoE routers.
pub const DEFAULT_TARGETS: &[&str] = &[
    "blocks.*.attn.*",
    "blocks.*.mlp.*",
    "blocks.*.moe.experts.*",
];

/// True when `id` matches the glob `pattern` (whole string).
pub fn glob_match(pattern: &str, id: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = id.chars().collect();
    // Iterative matcher with single-star backtracking (linear in practice for ids).
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == s[si])) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// True when the pattern `pat` (any of the forms in the module docs) names the linear `slot`,
/// whose canonical id is `id`.
pub fn pattern_matches(pat: &str, slot: &LinearSlot, id: &str) -> bool {
    if pat == "Linear" {
        return DEFAULT_TARGETS.iter().any(|p| glob_match(p, id));
    }
    if let Some(re) = pat.strip_prefix("re:") {
        return crate::checkpoint::qconfig::regex_match(re, &slot.key);
    }
    let module = !slot.key.is_empty()
        && (pat == slot.key || pat.strip_suffix(".weight") == Some(slot.key.as_str()));
    module || glob_match(pat, id)
}

/// Why a selection failed; the caller turns it into a recipe error at the right key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectError {
    /// Index into the `targets` or `ignore` list that matched nothing (`None`: the selection as a
    /// whole is empty).
    pub index: Option<usize>,
    /// `"targets"` or `"ignore"` (or empty for an empty selection).
    pub field: &'static str,
    pub message: String,
}

/// Selects the linears a step works on, in model order: those matching any of `targets`
/// ([`DEFAULT_TARGETS`] when `None`) and none of `ignore`. Every user-written pattern must match
/// at least one linear, and the selection must not be empty.
pub fn select(
    targets: Option<&[String]>,
    ignore: &[String],
    linears: &[LinearSlot],
) -> Result<Vec<LinearId>, SelectError> {
    let names: Vec<String> = linears.iter().map(|l| l.id.to_string()).collect();
    let any = |pat: &str, l: &LinearSlot, n: &str| pattern_matches(pat, l, n);
    for (field, list) in [("targets", targets.unwrap_or(&[])), ("ignore", ignore)] {
        for (i, pat) in list.iter().enumerate() {
            if !linears.iter().zip(&names).any(|(l, n)| any(pat, l, n)) {
                return Err(SelectError {
                    index: Some(i),
                    field,
                    message: no_match_message(pat, linears),
                });
            }
        }
    }
    let matches_target = |l: &LinearSlot, id: &str| match targets {
        Some(t) => t.iter().any(|p| any(p, l, id)),
        None => DEFAULT_TARGETS.iter().any(|p| glob_match(p, id)),
    };
    let chosen: Vec<LinearId> = linears
        .iter()
        .zip(&names)
        .filter(|(l, n)| matches_target(l, n) && !ignore.iter().any(|p| any(p, l, n)))
        .map(|(l, _)| l.id)
        .collect();
    if chosen.is_empty() {
        return Err(SelectError {
            index: None,
            field: "",
            message: "this step selects no linear (`targets` minus `ignore` is empty)".to_string(),
        });
    }
    Ok(chosen)
}

/// `blocks.12.moe.experts.3.up` → `blocks.*.moe.experts.*.up`: the shape of an id.
fn id_shape(id: &str) -> String {
    id.split('.')
        .map(|seg| {
            if !seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn no_match_message(pattern: &str, linears: &[LinearSlot]) -> String {
    if linears.is_empty() {
        return format!("pattern `{pattern}` matches no linear: the model has no linear layers");
    }
    let names: Vec<String> = linears.iter().map(|l| l.id.to_string()).collect();
    let mut shapes: Vec<String> = Vec::new();
    for n in &names {
        let s = id_shape(n);
        if !shapes.contains(&s) {
            shapes.push(s);
        }
    }
    let hint = suggest::nearest(pattern, &shapes)
        .or_else(|| suggest::nearest(pattern, names.iter().map(String::as_str)))
        .map(|n| format!("; did you mean `{n}`?"))
        .unwrap_or_default();
    let shown: Vec<&str> = shapes.iter().take(12).map(String::as_str).collect();
    let more = if shapes.len() > shown.len() {
        ", …"
    } else {
        ""
    };
    format!(
        "pattern `{pattern}` matches no linear{hint} (ids look like: {}{more}; e.g. `{}`; `*` matches any run of characters; also accepted: module names such as `{}` and `re:` patterns over them)",
        shown.join(", "),
        linears[0].id,
        linears[0].key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: &str) -> LinearSlot {
        LinearSlot {
            id: id.parse().unwrap(),
            key: String::new(),
            rows: 4,
            cols: 4,
        }
    }

    fn names(ids: Vec<LinearId>) -> Vec<String> {
        ids.iter().map(|i| i.to_string()).collect()
    }

    fn model() -> Vec<LinearSlot> {
        let mut v = Vec::new();
        for b in 0..2 {
            for r in [
                "attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down",
            ] {
                v.push(slot(&format!("blocks.{b}.{r}")));
            }
        }
        v
    }

    fn moe() -> Vec<LinearSlot> {
        [
            "blocks.0.attn.q",
            "blocks.0.moe.router",
            "blocks.0.moe.experts.0.up",
            "blocks.0.moe.experts.1.up",
        ]
        .iter()
        .map(|s| slot(s))
        .collect()
    }

    #[test]
    fn globs() {
        assert!(glob_match("blocks.*.attn.*", "blocks.3.attn.q"));
        assert!(glob_match("*", "blocks.3.attn.q"));
        assert!(
            glob_match("blocks.*.q", "blocks.3.attn.q"),
            "star spans dots"
        );
        assert!(glob_match("blocks.?.mlp.down", "blocks.7.mlp.down"));
        assert!(!glob_match("blocks.?.mlp.down", "blocks.17.mlp.down"));
        assert!(glob_match("blocks.1.attn.q", "blocks.1.attn.q"));
        assert!(!glob_match("blocks.1.attn.q", "blocks.11.attn.q"));
        assert!(!glob_match("blocks.*.attn", "blocks.1.attn.q"));
        assert!(glob_match("*.up", "blocks.0.moe.experts.12.up"));
        assert!(glob_match("a*b*c", "aXXbYYc") && !glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("", "") && !glob_match("", "x"));
    }

    /// llm-compressor's forms: module names, `re:` patterns over them, and `Linear`.
    #[test]
    fn module_names_regex_and_linear_select_canonical_ids() {
        let cfg = crate::config::HfConfig::parse(
            r#"{"architectures":["MixtralForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,
            "num_local_experts":2,"num_experts_per_tok":1}"#,
            std::path::Path::new("config.json"),
        )
        .unwrap();
        let linears = crate::arch::Architecture::new(cfg).all_linears();
        let sel = |t: &[&str], i: &[&str]| {
            let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
            let i: Vec<String> = i.iter().map(|s| s.to_string()).collect();
            select(Some(&t), &i, &linears).map(names)
        };
        assert_eq!(
            sel(&["model.layers.1.self_attn.q_proj"], &[]).unwrap(),
            vec!["blocks.1.attn.q"]
        );
        assert_eq!(
            sel(
                &["model.layers.0.block_sparse_moe.experts.1.w2.weight"],
                &[]
            )
            .unwrap(),
            vec!["blocks.0.moe.experts.1.down"]
        );
        assert!(
            sel(&["re:.*self_attn.(q|k)_proj"], &[]).is_err(),
            "groups are outside the regex subset: matched literally, so nothing matches (an error, not a silent miss)"
        );
        assert_eq!(
            sel(&["re:model.layers.0.self_attn.*"], &[]).unwrap(),
            vec![
                "blocks.0.attn.q",
                "blocks.0.attn.k",
                "blocks.0.attn.v",
                "blocks.0.attn.o"
            ]
        );
        let all = sel(&["Linear"], &["re:.*experts.*", "re:.*self_attn.o_proj$"]).unwrap();
        assert_eq!(
            all,
            vec![
                "blocks.0.attn.q",
                "blocks.0.attn.k",
                "blocks.0.attn.v",
                "blocks.1.attn.q",
                "blocks.1.attn.k",
                "blocks.1.attn.v"
            ],
            "Linear leaves the routers out, as the default targets do"
        );
        let e = sel(&["re:.*nothing"], &[]).unwrap_err();
        assert_eq!((e.field, e.index), ("targets", Some(0)));
        assert!(
            e.message.contains("model.layers.0.self_attn.q_proj"),
            "{}",
            e.message
        );
        let e = sel(&["blocks.*"], &["model.layers.9.mlp.down_proj"]).unwrap_err();
        assert_eq!((e.field, e.index), ("ignore", Some(0)));
    }

    #[test]
    fn default_targets_skip_router_and_keep_order() {
        let got = names(select(None, &[], &moe()).unwrap());
        assert_eq!(
            got,
            vec![
                "blocks.0.attn.q",
                "blocks.0.moe.experts.0.up",
                "blocks.0.moe.experts.1.up"
            ]
        );
        // Dense model: the MoE default pattern matches nothing and that is fine.
        assert_eq!(select(None, &[], &model()).map(|v| v.len()), Ok(14));
    }

    #[test]
    fn targets_and_ignore() {
        let t = vec!["blocks.*.mlp.*".to_string()];
        let ig = vec!["blocks.*.mlp.down".to_string()];
        let got = names(select(Some(&t), &ig, &model()).unwrap());
        assert_eq!(
            got,
            vec![
                "blocks.0.mlp.gate",
                "blocks.0.mlp.up",
                "blocks.1.mlp.gate",
                "blocks.1.mlp.up"
            ]
        );
    }

    #[test]
    fn pattern_matching_nothing_is_an_error_with_hint() {
        let t = vec![
            "blocks.*.attn.*".to_string(),
            "blocks.*.mlp.dwn".to_string(),
        ];
        let e = select(Some(&t), &[], &model()).unwrap_err();
        assert_eq!((e.field, e.index), ("targets", Some(1)));
        assert!(
            e.message.contains("`blocks.*.mlp.dwn` matches no linear"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("did you mean `blocks.*.mlp.down`?"),
            "{}",
            e.message
        );
        assert!(e.message.contains("blocks.*.attn.q"), "{}", e.message);

        let ig = vec!["blocks.9.*".to_string()];
        let e = select(None, &ig, &model()).unwrap_err();
        assert_eq!((e.field, e.index), ("ignore", Some(0)));
    }

    #[test]
    fn empty_selection_is_an_error() {
        let t = vec!["blocks.0.attn.q".to_string()];
        let e = select(Some(&t), &t, &model()).unwrap_err();
        assert_eq!(e.index, None);
        assert!(e.message.contains("selects no linear"));
    }
}
