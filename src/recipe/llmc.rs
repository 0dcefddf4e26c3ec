//! llm-compressor recipes accepted as written: a recipe whose top-level keys include a
//! `*_stage` (ALGORITHMS.md §12.1) is translated into pare's [`Recipe`]. Stages are read in file
//! order, each stage's `*_modifiers` groups in order, and each modifier becomes one step:
//!
//! | llm-compressor | pare |
//! |---|---|
//! | `SparseGPTModifier` | `sparsegpt` (`sparsity`, `mask_structure`, `block_size`, `dampening_frac`, OWL) |
//! | `WandaPruningModifier` | `wanda` (`sparsity`, `mask_structure`, OWL) |
//! | `MagnitudePruningModifier` | `magnitude` (`final_sparsity`; a oneshot run has no schedule) |
//! | `GPTQModifier` | `gptq` (`scheme` or `config_groups`, one step per group, `block_size`, `dampening_frac`, `actorder`) |
//! | `QuantizationModifier` | `rtn` (`scheme` or `config_groups`, one step per group) |
//!
//! `mask_structure: "N:M"` prunes N of every M (llm-compressor's reading), so it becomes pare's
//! `pattern: "(M−N):M"` (keep); `"0:0"` is unstructured. `targets`/`ignore` keep their module
//! names and `re:` patterns (pare's targets read them); `lm_head` entries in `ignore` are
//! dropped, since pare never compresses the head. pare's own top-level keys (`calibration`,
//! `export`, `eval`, `sequential`, `propagate`, `protect`) may stand next to the stages;
//! llm-compressor ignores them. Anything else — activation quantisation, other modifiers
//! (SmoothQuant, AWQ …), per-target sparsity lists, unknown fields — is refused, naming the
//! modifier and the field.

use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

use super::schema::Recipe;
use crate::error::{PareError, Result};

/// pare keys that may stand beside the stages.
const PARE_KEYS: [&str; 6] = [
    "calibration",
    "export",
    "eval",
    "sequential",
    "propagate",
    "protect",
];

/// Fields every modifier may carry that matter only to training schedules (or are deprecated
/// no-ops in oneshot runs).
const SCHEDULE_FIELDS: [&str; 8] = [
    "index",
    "group",
    "start",
    "end",
    "update",
    "run_type",
    "sequential_update",
    "offload_hessians",
];

/// A parsed YAML node whose maps keep their order (stages and modifiers apply in file order;
/// `serde_json`'s maps sort their keys).
#[derive(Clone, Debug)]
pub enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Leaf(Value),
}

impl Node {
    /// As JSON (maps sorted, which no longer matters below a modifier).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
            Node::Seq(s) => Value::Array(s.iter().map(Node::to_value).collect()),
            Node::Leaf(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(json!(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(json!(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(json!(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(json!(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(json!(v)))
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<Node, E> {
                Ok(Node::Leaf(Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> std::result::Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = a.next_element()? {
                    v.push(x);
                }
                Ok(Node::Seq(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> std::result::Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, Node>()? {
                    v.push((k, x));
                }
                Ok(Node::Map(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// True when `v` (a parsed recipe) is in llm-compressor's layout.
pub fn is_llmc(v: &Node) -> bool {
    matches!(v, Node::Map(m) if m.iter().any(|(k, _)| k.ends_with("_stage")))
}

/// Translates an llm-compressor recipe (see the module docs); `path` names it in errors.
pub fn translate(v: &Node, path: &Path) -> Result<Recipe> {
    let err = |key: String, m: String| PareError::recipe(path, key, m);
    let Node::Map(top) = v else {
        return Err(err(String::new(), "expected a map of stages".into()));
    };
    let mut out = Map::new();
    let mut steps = Vec::new();
    for (key, stage) in top {
        if PARE_KEYS.contains(&key.as_str()) {
            out.insert(key.clone(), stage.to_value());
            continue;
        }
        if !key.ends_with("_stage") {
            return Err(err(
                key.clone(),
                format!(
                    "`{key}` is neither an llm-compressor stage (`*_stage`) nor a pare key ({})",
                    PARE_KEYS.join(", ")
                ),
            ));
        }
        let Node::Map(groups) = stage else {
            return Err(err(
                key.clone(),
                "expected a map of `*_modifiers` groups".into(),
            ));
        };
        for (gkey, group) in groups {
            let at = format!("{key}.{gkey}");
            if !gkey.ends_with("_modifiers") {
                return Err(err(at, "expected a `*_modifiers` group".into()));
            }
            let Node::Map(mods) = group else {
                return Err(err(at, "expected a map `ModifierName: {fields}`".into()));
            };
            for (name, fields) in mods {
                let at = format!("{at}.{name}");
                let fields = match fields.to_value() {
                    Value::Null => Map::new(),
                    Value::Object(f) => f,
                    _ => return Err(err(at, "expected a map of fields".into())),
                };
                steps.extend(modifier(name, &fields).map_err(|(f, m)| {
                    err(
                        if f.is_empty() {
                            at.clone()
                        } else {
                            format!("{at}.{f}")
                        },
                        m,
                    )
                })?);
            }
        }
    }
    out.insert("steps".into(), Value::Array(steps));
    serde_json::from_value(Value::Object(out)).map_err(|e| {
        err(
            String::new(),
            format!("the translated recipe is not valid: {e}"),
        )
    })
}

/// A field error: (field, message).
type FieldErr = (String, String);

fn field_err(f: &str, m: impl Into<String>) -> FieldErr {
    (f.to_string(), m.into())
}

/// One modifier as one pare step (`{"wanda": {...}}`).
/// One modifier → its pare steps: one, or one per `config_groups` entry.
fn modifier(name: &str, f: &Map<String, Value>) -> std::result::Result<Vec<Value>, FieldErr> {
    let (method, known): (&str, &[&str]) = match name {
        "SparseGPTModifier" => (
            "sparsegpt",
            &[
                "sparsity",
                "mask_structure",
                "block_size",
                "dampening_frac",
                "preserve_sparsity_mask",
                "sparsity_profile",
                "owl_m",
                "owl_lmbda",
                "targets",
                "ignore",
            ],
        ),
        "WandaPruningModifier" => (
            "wanda",
            &[
                "sparsity",
                "mask_structure",
                "sparsity_profile",
                "owl_m",
                "owl_lmbda",
                "targets",
                "ignore",
            ],
        ),
        "MagnitudePruningModifier" => (
            "magnitude",
            &[
                "init_sparsity",
                "final_sparsity",
                "mask_structure",
                "update_scheduler",
                "scheduler_args",
                "leave_enabled",
                "targets",
                "ignore",
            ],
        ),
        "GPTQModifier" => (
            "gptq",
            &[
                "scheme",
                "config_groups",
                "block_size",
                "dampening_frac",
                "actorder",
                "targets",
                "ignore",
                "kv_cache_scheme",
            ],
        ),
        "QuantizationModifier" => (
            "rtn",
            &[
                "scheme",
                "config_groups",
                "targets",
                "ignore",
                "kv_cache_scheme",
            ],
        ),
        other => {
            return Err(field_err(
                "",
                format!(
                    "`{other}` has no pare equivalent; pare reads SparseGPTModifier, \
                     WandaPruningModifier, MagnitudePruningModifier, GPTQModifier and \
                     QuantizationModifier"
                ),
            ));
        }
    };
    if let Some(k) = f
        .keys()
        .find(|k| !known.contains(&k.as_str()) && !SCHEDULE_FIELDS.contains(&k.as_str()))
    {
        return Err(field_err(
            k,
            format!("{name} field `{k}` has no pare equivalent"),
        ));
    }
    let mut s = Map::new();
    let mut targets = list(f, "targets")?;
    let mut groups: Vec<(String, Option<Vec<String>>)> = Vec::new();
    match method {
        "sparsegpt" | "wanda" | "magnitude" => {
            let key = if method == "magnitude" {
                "final_sparsity"
            } else {
                "sparsity"
            };
            let sparsity = match f.get(key) {
                Some(Value::Number(n)) => n.as_f64(),
                Some(Value::Array(_)) => {
                    return Err(field_err(
                        key,
                        "per-target sparsity lists are not supported; give one number",
                    ));
                }
                Some(_) => return Err(field_err(key, "expected a number")),
                None => None,
            };
            if method == "magnitude" {
                if let (Some(i), Some(s)) =
                    (f.get("init_sparsity").and_then(Value::as_f64), sparsity)
                {
                    if (i - s).abs() > 1e-12 {
                        return Err(field_err(
                            "init_sparsity",
                            "a gradual schedule (init_sparsity ≠ final_sparsity) needs training; a oneshot run prunes to final_sparsity once",
                        ));
                    }
                }
            }
            if let Some(x) = sparsity {
                s.insert("sparsity".into(), json!(x));
            }
            if let Some(p) = mask_structure(f)? {
                s.insert("pattern".into(), json!(p));
            }
            if f.get("preserve_sparsity_mask").and_then(Value::as_bool) == Some(true) {
                return Err(field_err(
                    "preserve_sparsity_mask",
                    "extending an existing mask is not supported",
                ));
            }
            if let Some(p) = f.get("sparsity_profile").filter(|v| !v.is_null()) {
                if p.as_str() != Some("owl") {
                    return Err(field_err("sparsity_profile", "only `owl` is supported"));
                }
                let mut owl = Map::new();
                if let Some(m) = f.get("owl_m").filter(|v| !v.is_null()) {
                    owl.insert("m".into(), m.clone());
                }
                if let Some(l) = f.get("owl_lmbda").filter(|v| !v.is_null()) {
                    owl.insert("lambda".into(), l.clone());
                }
                s.insert("profile".into(), json!({ "owl": owl }));
            }
            if method == "magnitude" {
                // `__ALL_PRUNABLE__` is every prunable parameter: pare's default targets.
                if let Some(t) = targets.as_mut() {
                    t.retain(|x| x != "__ALL_PRUNABLE__");
                }
            }
        }
        _ => {
            groups = scheme(f)?;
            if f.get("kv_cache_scheme").is_some_and(|v| !v.is_null()) {
                return Err(field_err(
                    "kv_cache_scheme",
                    "KV-cache quantisation is not supported",
                ));
            }
            if method == "gptq" {
                match f.get("actorder") {
                    None | Some(Value::Null) => {}
                    Some(Value::Bool(false)) => {
                        s.insert("actorder".into(), json!("none"));
                    }
                    Some(Value::String(a)) if a == "static" || a == "weight" => {
                        s.insert("actorder".into(), json!("static"));
                    }
                    Some(a) => {
                        return Err(field_err(
                            "actorder",
                            format!(
                                "actorder {a} is not supported; pare's GPTQ takes `static` (= `weight`) or none"
                            ),
                        ));
                    }
                }
            }
        }
    }
    for (llmc, pare) in [
        ("block_size", "block_size"),
        ("dampening_frac", "dampening"),
    ] {
        if let Some(v) = f.get(llmc) {
            s.insert(pare.into(), v.clone());
        }
    }
    let ignore: Vec<String> = list(f, "ignore")?
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !names_only_the_head(p))
        .collect();
    let step = |mut s: Map<String, Value>, targets: Option<Vec<String>>, ignore: Vec<String>| {
        // `Linear` alone is pare's default selection.
        if let Some(t) = targets.filter(|t| !(t.is_empty() || t.len() == 1 && t[0] == "Linear")) {
            s.insert("targets".into(), json!(t));
        }
        if !ignore.is_empty() {
            s.insert("ignore".into(), json!(ignore));
        }
        json!({ method: s })
    };
    if groups.is_empty() {
        return Ok(vec![step(s, targets, ignore)]);
    }
    // One step per group. A module two groups target goes to the more specific one, as
    // compressed-tensors matches (a module name before a `re:` pattern before a class name):
    // each step ignores the targets of the more specific groups.
    let all: Vec<Vec<String>> = groups
        .iter()
        .map(|(_, t)| {
            t.clone()
                .or_else(|| targets.clone())
                .unwrap_or_else(|| vec!["Linear".into()])
        })
        .collect();
    let rank = |t: &[String]| t.iter().map(|x| specificity(x)).min().unwrap_or(2);
    Ok(groups
        .iter()
        .enumerate()
        .map(|(i, (format, _))| {
            let mut g = s.clone();
            g.insert("format".into(), json!(format));
            let mut ign = ignore.clone();
            for (j, other) in all.iter().enumerate() {
                if j != i && rank(other) < rank(&all[i]) {
                    ign.extend(other.iter().cloned());
                }
            }
            step(g, Some(all[i].clone()), ign)
        })
        .collect())
}

/// compressed-tensors' match order: 0 for a module name, 1 for a `re:` pattern, 2 for a class
/// name (`Linear`).
fn specificity(target: &str) -> u8 {
    if target.starts_with("re:") {
        1
    } else if target == "Linear" {
        2
    } else {
        0
    }
}

/// A list of strings (a single string counts as a list of one).
fn list(f: &Map<String, Value>, key: &str) -> std::result::Result<Option<Vec<String>>, FieldErr> {
    match f.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| field_err(key, "expected strings"))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(field_err(key, "expected a list of strings")),
    }
}

/// An `ignore` entry that names only the LM head (pare never compresses it).
fn names_only_the_head(p: &str) -> bool {
    match p.strip_prefix("re:") {
        Some(re) => {
            crate::checkpoint::qconfig::regex_match(re, "lm_head") && !re.contains("layers")
        }
        None => p == "lm_head" || p == "lm_head.",
    }
}

/// `mask_structure` → pare's `pattern` (keep N of M), `None` for unstructured.
fn mask_structure(f: &Map<String, Value>) -> std::result::Result<Option<String>, FieldErr> {
    let Some(m) = f.get("mask_structure").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Some(m) = m.as_str() else {
        return Err(field_err(
            "mask_structure",
            "expected a string such as \"2:4\"",
        ));
    };
    if m == "0:0" || m == "unstructured" {
        return Ok(None);
    }
    let parsed = m.split_once(':').and_then(|(n, k)| {
        Some((
            n.trim().parse::<usize>().ok()?,
            k.trim().parse::<usize>().ok()?,
        ))
    });
    match parsed {
        Some((pruned, of)) if of > 0 && pruned < of => Ok(Some(format!("{}:{of}", of - pruned))),
        _ => Err(field_err(
            "mask_structure",
            format!("`{m}`: expected \"N:M\" (N pruned of every M, N < M) or \"0:0\""),
        )),
    }
}

/// `scheme` (a preset name, or `{PRESET: [targets]}`) or `config_groups` → per group a pare format
/// name, and the group's targets when it gives them.
fn scheme(
    f: &Map<String, Value>,
) -> std::result::Result<Vec<(String, Option<Vec<String>>)>, FieldErr> {
    match (
        f.get("scheme").filter(|v| !v.is_null()),
        f.get("config_groups").filter(|v| !v.is_null()),
    ) {
        (Some(_), Some(_)) => Err(field_err(
            "scheme",
            "give `scheme` or `config_groups`, not both",
        )),
        (Some(Value::String(p)), None) => Ok(vec![(preset(p, "scheme")?, None)]),
        (Some(Value::Object(m)), None) if m.len() == 1 => {
            let (p, t) = m
                .iter()
                .next()
                .ok_or_else(|| field_err("scheme", "empty"))?;
            let targets = list(m, p)?;
            Ok(vec![(
                preset(p, "scheme")?,
                targets.or_else(|| t.as_str().map(|s| vec![s.to_string()])),
            )])
        }
        (Some(_), None) => Err(field_err(
            "scheme",
            "expected a preset name such as W4A16, or one `{PRESET: [targets]}`",
        )),
        (None, Some(Value::Object(groups))) if groups.is_empty() => {
            Err(field_err("config_groups", "empty"))
        }
        (None, Some(Value::Object(groups))) => groups
            .iter()
            .map(|(g, group)| config_group(g, group))
            .collect(),
        (None, Some(_)) => Err(field_err("config_groups", "expected a map of groups")),
        (None, None) => Err(field_err(
            "scheme",
            "required: a preset such as W4A16, or `config_groups`",
        )),
    }
}

/// One `config_groups` entry → (pare format name, its targets).
fn config_group(
    g: &str,
    group: &Value,
) -> std::result::Result<(String, Option<Vec<String>>), FieldErr> {
    {
        {
            let at = |k: &str| format!("config_groups.{g}.{k}");
            let Some(group) = group.as_object() else {
                return Err(field_err(&format!("config_groups.{g}"), "expected a map"));
            };
            for k in ["input_activations", "output_activations"] {
                if group.get(k).is_some_and(|v| !v.is_null()) {
                    return Err(field_err(
                        &at(k),
                        "activation quantisation is not supported (pare is weight-only: W4A16, W8A16 …)",
                    ));
                }
            }
            let Some(w) = group.get("weights").and_then(Value::as_object) else {
                return Err(field_err(
                    &at("weights"),
                    "required: the weights' quantisation arguments",
                ));
            };
            let bits = w.get("num_bits").and_then(Value::as_u64).unwrap_or(8);
            if w.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "int")
            {
                return Err(field_err(
                    &at("weights.type"),
                    "only `int` weights are supported",
                ));
            }
            if w.get("dynamic")
                .is_some_and(|v| v.as_bool() != Some(false) && !v.is_null())
            {
                return Err(field_err(
                    &at("weights.dynamic"),
                    "dynamic weight quantisation is not supported",
                ));
            }
            let sym = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
            let group_size = w.get("group_size").and_then(Value::as_i64);
            let strategy = w.get("strategy").and_then(Value::as_str);
            let grouping = match (strategy, group_size) {
                (Some("channel"), _) | (None, None | Some(-1)) => "ch".to_string(),
                (Some("group") | None, Some(g)) if g > 0 => format!("g{g}"),
                (s, g) => {
                    return Err(field_err(
                        &at("weights.strategy"),
                        format!(
                            "strategy {s:?} with group_size {g:?} is not supported; pare takes `channel`, or `group` with a group_size"
                        ),
                    ));
                }
            };
            let name = format!("int{bits}-{grouping}-{}", if sym { "sym" } else { "asym" });
            if crate::compress::formats::scheme_by_name(&name).is_none() {
                return Err(field_err(
                    &at("weights"),
                    format!("{name} is not one of pare's formats (see `pare formats`)"),
                ));
            }
            Ok((name, list(group, "targets")?))
        }
    }
}

/// A compressed-tensors preset name pare can run, as its format name.
fn preset(p: &str, field: &str) -> std::result::Result<String, FieldErr> {
    crate::compress::formats::preset(p)
        .map(str::to_string)
        .ok_or_else(|| {
            field_err(
                field,
                format!("preset `{p}` is not supported; pare runs the weight-only presets W4A16, W4A16_ASYM and W8A16"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn mask_structure_counts_pruned_weights() {
        let m = |s: &str| mask_structure(&fields(json!({ "mask_structure": s })));
        assert_eq!(m("2:4"), Ok(Some("2:4".into())));
        assert_eq!(m("1:4"), Ok(Some("3:4".into())), "prune 1 of 4 = keep 3");
        assert_eq!(m("0:0"), Ok(None));
        assert!(m("4:4").is_err() && m("x").is_err());
    }

    #[test]
    fn head_only_ignores_are_dropped_others_kept() {
        for p in ["lm_head", "re:.*lm_head", "re:lm_head$"] {
            assert!(names_only_the_head(p), "{p}");
        }
        for p in [
            "re:.*mlp.gate$",
            "re:model.layers.*",
            "model.layers.0.mlp.down_proj",
        ] {
            assert!(!names_only_the_head(p), "{p}");
        }
    }

    #[test]
    fn schemes_and_config_groups_name_pare_formats() {
        let s = |v: Value| scheme(&fields(v)).map(|x| x[0].0.clone());
        assert_eq!(s(json!({"scheme": "W4A16"})), Ok("int4-g128-sym".into()));
        assert_eq!(
            scheme(&fields(json!({"scheme": {"W8A16": ["re:.*mlp.*"]}}))),
            Ok(vec![(
                "int8-ch-sym".into(),
                Some(vec!["re:.*mlp.*".to_string()])
            )])
        );
        let g =
            |w: Value| s(json!({"config_groups": {"g": {"targets": ["Linear"], "weights": w}}}));
        assert_eq!(
            g(json!({"num_bits": 4, "symmetric": false, "group_size": 64})),
            Ok("int4-g64-asym".into())
        );
        assert_eq!(
            g(json!({"num_bits": 8, "strategy": "channel"})),
            Ok("int8-ch-sym".into())
        );
        assert!(g(json!({"num_bits": 4, "strategy": "tensor"})).is_err());
        assert!(g(json!({"num_bits": 4, "type": "float"})).is_err());
        assert!(s(json!({})).is_err());
    }
}
