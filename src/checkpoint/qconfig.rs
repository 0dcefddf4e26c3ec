//! `QuantizationConfig`: the compressed-tensors `quantization_config` block of a config.json
//! (ALGORITHMS.md §12.4), checked for what pare can run, with target lookup per module.

use std::path::Path;

use serde_json::Value;

use crate::compress::QuantScheme;
use crate::error::{PareError, Result};

/// Module formats pare reads.
const READABLE_FORMATS: &[&str] = &[
    "pack-quantized",
    "dense",
    "sparse-bitmask",
    "sparse-24-bitmask",
    "mixed-precision",
];

/// One `config_groups` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantGroup {
    /// Key in `config_groups` (`group_0` …).
    pub name: String,
    /// `targets`: class names (`Linear`), exact module names or `re:` patterns.
    pub targets: Vec<String>,
    /// The weight scheme (`group_size` `None` for channel and tensor strategies).
    pub scheme: QuantScheme,
    /// `strategy`: `group`, `channel` or `tensor`.
    pub strategy: String,
    /// The group's own `format` (≥ 0.11), if given.
    pub format: Option<String>,
}

/// The legacy `sparsity_config` block.
#[derive(Clone, Debug, PartialEq)]
pub struct SparsityConfig {
    pub format: String,
    pub targets: Vec<String>,
    pub ignore: Vec<String>,
    pub structure: Option<String>,
    pub global_sparsity: Option<f64>,
}

/// A parsed, supported compressed-tensors `quantization_config`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizationConfig {
    /// Top-level `format` (`pack-quantized`, `dense`, `mixed-precision`, …).
    pub format: Option<String>,
    /// `quantization_status` (`compressed`, `frozen`).
    pub status: Option<String>,
    /// compressed-tensors `version`, absent in ≤ 0.10 layouts.
    pub version: Option<String>,
    pub groups: Vec<QuantGroup>,
    pub ignore: Vec<String>,
    pub sparsity: Option<SparsityConfig>,
}

fn strings(v: Option<&Value>, path: &Path, key: &str) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| PareError::recipe(path, key, "expected a list of strings"))
            })
            .collect(),
        Some(_) => Err(PareError::recipe(path, key, "expected a list of strings")),
    }
}

fn opt_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

impl QuantizationConfig {
    /// Parses `value` (the `quantization_config` of `config_path`). `Ok(None)` when the value is
    /// null; an error naming config.json and the field for anything pare cannot run: activation
    /// or KV-cache quantisation, float/FP8/FP4 types, Marlin-24, bits outside 2–8, another
    /// `quant_method`.
    pub fn from_config(value: &Value, config_path: &Path) -> Result<Option<QuantizationConfig>> {
        let p = config_path;
        let k = |s: &str| format!("quantization_config.{s}");
        let obj = match value {
            Value::Null => return Ok(None),
            Value::Object(o) => o,
            _ => {
                return Err(PareError::recipe(
                    p,
                    "quantization_config",
                    "expected an object",
                ));
            }
        };
        match obj.get("quant_method").and_then(Value::as_str) {
            Some("compressed-tensors") => {}
            other => {
                return Err(PareError::recipe(
                    p,
                    k("quant_method"),
                    format!(
                        "`{}` is not supported; pare reads compressed-tensors checkpoints",
                        other.unwrap_or("(missing)")
                    ),
                ));
            }
        }
        let format = opt_str(obj.get("format"));
        let check_format = |f: &str, key: String| -> Result<()> {
            if READABLE_FORMATS.contains(&f) {
                Ok(())
            } else {
                Err(PareError::recipe(
                    p,
                    key,
                    format!(
                        "format `{f}` is not supported (pare reads {})",
                        READABLE_FORMATS.join(", ")
                    ),
                ))
            }
        };
        if let Some(f) = &format {
            check_format(f, k("format"))?;
        }
        if !matches!(obj.get("kv_cache_scheme"), None | Some(Value::Null)) {
            return Err(PareError::recipe(
                p,
                k("kv_cache_scheme"),
                "KV-cache quantisation is not supported",
            ));
        }
        let mut groups = Vec::new();
        if let Some(cg) = obj.get("config_groups").filter(|v| !v.is_null()) {
            let Some(cg) = cg.as_object() else {
                return Err(PareError::recipe(
                    p,
                    k("config_groups"),
                    "expected an object",
                ));
            };
            for (name, g) in cg {
                let gk = |s: &str| k(&format!("config_groups.{name}.{s}"));
                for act in ["input_activations", "output_activations"] {
                    if !matches!(g.get(act), None | Some(Value::Null)) {
                        return Err(PareError::recipe(
                            p,
                            gk(act),
                            "activation quantisation is not supported (weight-only schemes only)",
                        ));
                    }
                }
                let gformat = opt_str(g.get("format"));
                if let Some(f) = &gformat {
                    check_format(f, gk("format"))?;
                }
                let Some(w) = g.get("weights").and_then(Value::as_object) else {
                    return Err(PareError::recipe(
                        p,
                        gk("weights"),
                        "expected an object with the weight scheme",
                    ));
                };
                let ty = w.get("type").and_then(Value::as_str).unwrap_or("int");
                if ty != "int" {
                    return Err(PareError::recipe(
                        p,
                        gk("weights.type"),
                        format!("`{ty}` weights are not supported (integer only)"),
                    ));
                }
                let bits = w.get("num_bits").and_then(Value::as_u64).unwrap_or(0);
                if !(2..=8).contains(&bits) {
                    return Err(PareError::recipe(
                        p,
                        gk("weights.num_bits"),
                        format!("{bits} bits is not supported (2 to 8)"),
                    ));
                }
                let strategy = w
                    .get("strategy")
                    .and_then(Value::as_str)
                    .unwrap_or("tensor")
                    .to_string();
                let group_size = match strategy.as_str() {
                    "group" => match w.get("group_size").and_then(Value::as_u64) {
                        Some(g) if g > 0 => Some(g as usize),
                        _ => {
                            return Err(PareError::recipe(
                                p,
                                gk("weights.group_size"),
                                "strategy `group` needs a positive group_size",
                            ));
                        }
                    },
                    "channel" | "tensor" => None,
                    s => {
                        return Err(PareError::recipe(
                            p,
                            gk("weights.strategy"),
                            format!("strategy `{s}` is not supported (group, channel, tensor)"),
                        ));
                    }
                };
                let symmetric = w.get("symmetric").and_then(Value::as_bool).unwrap_or(true);
                groups.push(QuantGroup {
                    name: name.clone(),
                    targets: strings(g.get("targets"), p, &gk("targets"))?,
                    scheme: QuantScheme {
                        bits: bits as u8,
                        group_size,
                        symmetric,
                    },
                    strategy,
                    format: gformat,
                });
            }
        }
        let sparsity = match obj.get("sparsity_config") {
            Some(Value::Object(s)) if !s.is_empty() => {
                let sk = |x: &str| k(&format!("sparsity_config.{x}"));
                let f = opt_str(s.get("format")).unwrap_or_else(|| "dense".into());
                check_format(&f, sk("format"))?;
                Some(SparsityConfig {
                    format: f,
                    targets: strings(s.get("targets"), p, &sk("targets"))?,
                    ignore: strings(s.get("ignore"), p, &sk("ignore"))?,
                    structure: opt_str(s.get("sparsity_structure")),
                    global_sparsity: s.get("global_sparsity").and_then(Value::as_f64),
                })
            }
            _ => None,
        };
        Ok(Some(QuantizationConfig {
            format,
            status: opt_str(obj.get("quantization_status")),
            version: opt_str(obj.get("version")),
            groups,
            ignore: strings(obj.get("ignore"), p, &k("ignore"))?,
            sparsity,
        }))
    }

    /// The scheme of linear module `prefix` (e.g. `model.layers.0.mlp.down_proj`): the first group
    /// whose targets match, unless `ignore` matches. Targets: `Linear` (every linear), the exact
    /// name, or `re:<pattern>` (Python `re.match`: anchored at the start).
    pub fn scheme_for(&self, prefix: &str) -> Option<QuantScheme> {
        if self.ignore.iter().any(|t| target_matches(t, prefix)) {
            return None;
        }
        self.groups
            .iter()
            .find(|g| g.targets.iter().any(|t| target_matches(t, prefix)))
            .map(|g| g.scheme)
    }

    /// Bits per weight of module `prefix`, `None` when it is not quantised.
    pub fn bits_for(&self, prefix: &str) -> Option<u8> {
        self.scheme_for(prefix).map(|s| s.bits)
    }
}

/// Does a compressed-tensors target match linear module `name`?
pub fn target_matches(target: &str, name: &str) -> bool {
    if target == "Linear" || target == name {
        return true;
    }
    match target.strip_prefix("re:") {
        Some(pat) => regex_match(pat, name),
        None => false,
    }
}

#[derive(Clone, Debug)]
enum Atom {
    Any,
    Lit(char),
}

#[derive(Clone, Debug)]
struct Piece {
    atom: Atom,
    /// (min, max) repetitions; max `None` = unbounded.
    min: usize,
    max: Option<usize>,
}

/// A tiny regex subset with Python `re.match` semantics (anchored at the start, not at the end):
/// literals, `.`, `\` escapes, the postfix operators `*`, `+`, `?`, a leading `^`, a trailing `$`
/// and top-level alternation `|`. Anything else is matched literally.
pub fn regex_match(pattern: &str, text: &str) -> bool {
    pattern.split('|').any(|alt| {
        let alt = alt.strip_prefix('^').unwrap_or(alt);
        let (alt, anchored_end) = match alt.strip_suffix('$') {
            Some(a) if !a.ends_with('\\') => (a, true),
            _ => (alt, false),
        };
        let pieces = parse(alt);
        let chars: Vec<char> = text.chars().collect();
        match_here(&pieces, &chars, anchored_end)
    })
}

fn parse(pat: &str) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut it = pat.chars();
    while let Some(c) = it.next() {
        let atom = match c {
            '.' => Atom::Any,
            '\\' => Atom::Lit(it.next().unwrap_or('\\')),
            '*' | '+' | '?' if !out.is_empty() => {
                let last = out.len() - 1;
                let (min, max) = match c {
                    '*' => (0, None),
                    '+' => (1, None),
                    _ => (0, Some(1)),
                };
                out[last].min = min;
                out[last].max = max;
                continue;
            }
            c => Atom::Lit(c),
        };
        out.push(Piece {
            atom,
            min: 1,
            max: Some(1),
        });
    }
    out
}

fn match_here(pieces: &[Piece], text: &[char], anchored_end: bool) -> bool {
    let Some((p, rest)) = pieces.split_first() else {
        return !anchored_end || text.is_empty();
    };
    let fits = |c: char| match p.atom {
        Atom::Any => c != '\n',
        Atom::Lit(l) => l == c,
    };
    // Greedy: take as many as allowed, then back off.
    let mut n = 0;
    while p.max.is_none_or(|m| n < m) && n < text.len() && fits(text[n]) {
        n += 1;
    }
    loop {
        if n >= p.min && match_here(rest, &text[n..], anchored_end) {
            return true;
        }
        if n == 0 || n <= p.min {
            return false;
        }
        n -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/ct-rtn");

    fn parse_cfg(v: Value) -> Result<Option<QuantizationConfig>> {
        QuantizationConfig::from_config(&v, Path::new("m/config.json"))
    }

    #[test]
    fn regex_subset() {
        assert!(regex_match(".*mlp.gate$", "model.layers.3.mlp.gate"));
        assert!(!regex_match(".*mlp.gate$", "model.layers.3.mlp.gate_proj"));
        assert!(regex_match(".*mlp.gate", "model.layers.3.mlp.gate_proj"));
        assert!(
            !regex_match("mlp", "model.mlp"),
            "re.match is anchored at the start"
        );
        assert!(regex_match(r"^model\.layers\.1\..*", "model.layers.1.mlp"));
        assert!(!regex_match(r"model\.layers\.1\..*", "model.layers.10.mlp"));
        assert!(!regex_match(r"model\.layers", "modelXlayers"));
        assert!(regex_match(
            "lm_head|.*down_proj$",
            "model.layers.0.mlp.down_proj"
        ));
        assert!(regex_match("a+b?c", "aaac"));
        assert!(!regex_match("a+b?c$", "bc"));
    }

    #[test]
    fn parses_fixture_configs() {
        for (dir, bits, gs) in [("w4g32", 4, Some(32)), ("w8ch", 8, None)] {
            let path = Path::new(FIX).join(dir).join("config.json");
            let cfg: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let q = QuantizationConfig::from_config(&cfg["quantization_config"], &path)
                .unwrap()
                .unwrap();
            assert_eq!(q.version.as_deref(), Some("0.19.0"));
            assert_eq!(q.bits_for("model.layers.0.mlp.down_proj"), Some(bits));
            assert_eq!(
                q.scheme_for("model.layers.0.mlp.down_proj")
                    .unwrap()
                    .group_size,
                gs
            );
            assert_eq!(q.bits_for("lm_head"), None);
            assert!(q.sparsity.is_none());
        }
    }

    #[test]
    fn accepts_old_and_sparse_layouts() {
        // ≤0.10: no version, no transform_config, sparsity_config only when sparse.
        let old = json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
            "config_groups": {"group_0": {"targets": ["re:.*down_proj$", "model.layers.0.self_attn.q_proj"],
                "weights": {"num_bits": 8, "strategy": "channel", "symmetric": false, "type": "int"}}},
            "ignore": ["lm_head"]});
        let q = parse_cfg(old).unwrap().unwrap();
        assert_eq!(q.version, None);
        assert_eq!(q.bits_for("model.layers.3.mlp.down_proj"), Some(8));
        assert_eq!(q.bits_for("model.layers.0.self_attn.q_proj"), Some(8));
        assert_eq!(q.bits_for("model.layers.0.self_attn.k_proj"), None);
        let sparse = json!({"quant_method": "compressed-tensors", "format": "sparse-24-bitmask", "version": "0.9.0",
            "sparsity_config": {"format": "sparse-24-bitmask", "global_sparsity": 0.45, "sparsity_structure": "2:4",
                "targets": ["Linear"], "ignore": ["lm_head"]}});
        let q = parse_cfg(sparse).unwrap().unwrap();
        assert_eq!(q.sparsity.unwrap().structure.as_deref(), Some("2:4"));
        assert!(q.groups.is_empty());
        assert_eq!(parse_cfg(Value::Null).unwrap(), None);
    }

    #[test]
    fn rejects_what_pare_cannot_run() {
        let base = |f: &dyn Fn(&mut Value)| {
            let mut v = json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
                "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": null,
                    "weights": {"num_bits": 4, "strategy": "group", "group_size": 128, "symmetric": true, "type": "int"}}}});
            f(&mut v);
            parse_cfg(v).unwrap_err().to_string()
        };
        let e =
            base(&|v| v["config_groups"]["group_0"]["input_activations"] = json!({"num_bits": 8}));
        assert!(
            e.contains("m/config.json") && e.contains("group_0.input_activations"),
            "{e}"
        );
        let e = base(&|v| v["config_groups"]["group_0"]["weights"]["type"] = json!("float"));
        assert!(e.contains("weights.type"), "{e}");
        let e = base(&|v| v["config_groups"]["group_0"]["weights"]["num_bits"] = json!(16));
        assert!(e.contains("num_bits") && e.contains("16"), "{e}");
        for f in ["float-quantized", "nvfp4-pack-quantized", "marlin-24"] {
            let e = base(&|v| v["format"] = json!(f));
            assert!(
                e.contains("quantization_config.format") && e.contains(f),
                "{e}"
            );
        }
        let e = base(&|v| v["quant_method"] = json!("gptq"));
        assert!(e.contains("quant_method") && e.contains("gptq"), "{e}");
        let e = base(&|v| v["kv_cache_scheme"] = json!({"num_bits": 8}));
        assert!(e.contains("kv_cache_scheme"), "{e}");
    }
}
