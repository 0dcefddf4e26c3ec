//! `HfConfig`: the fields of a Hugging Face `config.json` that pare's architectures use, read
//! leniently (unknown keys ignored) and then checked, with errors naming the file and the field.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{PareError, Result};

/// Architectures pare can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ArchKind {
    /// `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM` (dense decoder).
    Llama,
    /// `MixtralForCausalLM` (top-k routed experts in every block, `block_sparse_moe`).
    Mixtral,
    /// `Qwen3ForCausalLM`: a dense decoder with per-head q/k RMSNorm before RoPE.
    Qwen3,
    /// `Qwen3MoeForCausalLM`: Qwen3 attention; routed experts (`mlp.experts`) in the blocks
    /// that `decoder_sparse_step` and `mlp_only_layers` choose, a dense MLP in the others.
    Qwen3Moe,
}

/// RoPE frequency scaling of type `llama3` (Llama 3.1+).
#[derive(Clone, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The checked model configuration.
#[derive(Clone, Debug)]
pub struct HfConfig {
    /// `architectures[0]` as written.
    pub architecture: String,
    pub kind: ArchKind,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (Qwen2, or `attention_bias: true`).
    pub attention_bias: bool,
    pub sliding_window: Option<usize>,
    /// Per block: the sliding window it attends with, `None` for full causal attention (see
    /// [`HfConfig::window_of`]).
    pub layer_windows: Vec<Option<usize>>,
    /// MoE: number of experts and experts per token (0 for dense models).
    pub num_experts: usize,
    pub experts_per_token: usize,
    /// MoE: the FFN width of one expert (`moe_intermediate_size`; Mixtral: `intermediate_size`).
    pub expert_ffn: usize,
    /// MoE: the top-k router probabilities are renormalised to sum to 1 (`norm_topk_prob`;
    /// always for Mixtral).
    pub norm_topk_prob: bool,
    /// Per block: routed experts (true) or a dense MLP (false).
    pub moe_blocks: Vec<bool>,
    /// q and k are RMS-normed per head (weights `[head_dim]`) before RoPE (Qwen3).
    pub qk_norm: bool,
    /// MC-MoE online dynamic pruning: per block, the β of `compression.odp.beta` (pare's own
    /// field; `None` for dense blocks or without the policy).
    pub odp_beta: Vec<Option<f32>>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// The whole file, kept so outputs can copy it with additions.
    pub raw: Value,
}

#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    sliding_window: Option<usize>,
    num_local_experts: Option<usize>,
    num_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    norm_topk_prob: Option<bool>,
    decoder_sparse_step: Option<usize>,
    mlp_only_layers: Option<Vec<usize>>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    hidden_act: Option<String>,
}

/// More blocks than any model has; a larger `num_hidden_layers` is a damaged config.
const MAX_LAYERS: usize = 100_000;

/// The top-level keys of config.json that pare reads (those of `RawConfig`).
const USED_FIELDS: [&str; 30] = [
    "quantization_config",
    "layer_types",
    "use_sliding_window",
    "max_window_layers",
    "architectures",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "rope_theta",
    "rope_parameters",
    "rope_scaling",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "sliding_window",
    "num_local_experts",
    "num_experts_per_tok",
    "num_experts",
    "moe_intermediate_size",
    "norm_topk_prob",
    "decoder_sparse_step",
    "mlp_only_layers",
    "bos_token_id",
    "eos_token_id",
    "hidden_act",
];

/// The sliding window of each block, as transformers decides it. Llama never slides. Mistral,
/// Mixtral, Qwen2 and Qwen3 use `layer_types` when the config lists them (`sliding_attention` /
/// `full_attention`); otherwise Mistral and Mixtral slide in every block when `sliding_window`
/// is set (Mistral's default is 4096 when the key is absent; `null` turns it off), and Qwen2
/// and Qwen3 from block `max_window_layers` (default 28) on. The Qwen families slide only with
/// `use_sliding_window: true` (then 4096 when `sliding_window` is absent); Qwen3-MoE then
/// slides in every block.
fn layer_windows(
    raw: &Value,
    architecture: &str,
    window: Option<usize>,
    layers: usize,
    path: &Path,
) -> Result<Vec<Option<usize>>> {
    // The Qwen families slide only with `use_sliding_window: true`.
    let qwen = matches!(
        architecture,
        "Qwen2ForCausalLM" | "Qwen3ForCausalLM" | "Qwen3MoeForCausalLM"
    );
    let window = match (architecture, raw.get("sliding_window")) {
        _ if qwen && raw.get("use_sliding_window").and_then(Value::as_bool) != Some(true) => None,
        // transformers' defaults when the key is absent.
        ("MistralForCausalLM", None) => Some(4096),
        (_, None) if qwen => Some(4096),
        _ => window.filter(|&w| w > 0),
    };
    if !qwen && !matches!(architecture, "MistralForCausalLM" | "MixtralForCausalLM") {
        return Ok(vec![None; layers]);
    }
    // Qwen3-MoE's attention reads `sliding_window` alone, in every block.
    if architecture == "Qwen3MoeForCausalLM" {
        return Ok(vec![window; layers]);
    }
    if let Some(types) = raw.get("layer_types").filter(|v| !v.is_null()) {
        let types = types
            .as_array()
            .filter(|a| a.len() == layers)
            .ok_or_else(|| {
                PareError::input(
                    path,
                    format!(
                        "field `layer_types`: expected a list of {layers} strings (one per block)"
                    ),
                )
            })?;
        return types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("full_attention") => Ok(None),
                Some("sliding_attention") => Ok(window),
                _ => Err(PareError::input(
                    path,
                    format!("field `layer_types[{i}]`: {t}; expected \"full_attention\" or \"sliding_attention\""),
                )),
            })
            .collect();
    }
    Ok(match architecture {
        "Qwen2ForCausalLM" | "Qwen3ForCausalLM" => {
            let from = raw
                .get("max_window_layers")
                .and_then(Value::as_u64)
                .unwrap_or(28) as usize;
            (0..layers).map(|i| window.filter(|_| i >= from)).collect()
        }
        _ => vec![window; layers],
    })
}

/// A required field that must be > 0, with the error naming it.
fn positive(v: Option<usize>, field: &str, path: &Path) -> Result<usize> {
    match v {
        Some(x) if x > 0 => Ok(x),
        Some(_) => Err(PareError::input(
            path,
            format!("field `{field}` must be > 0"),
        )),
        None => Err(PareError::input(path, format!("missing field `{field}`"))),
    }
}

fn first_id(v: &Option<Value>) -> Option<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| x as u32),
        Some(Value::Array(a)) => a.first().and_then(|x| x.as_u64()).map(|x| x as u32),
        _ => None,
    }
}

impl HfConfig {
    /// The sliding window block `b` attends with (`None`: full causal attention).
    pub fn window_of(&self, b: usize) -> Option<usize> {
        self.layer_windows.get(b).copied().flatten()
    }

    /// True when block `b` routes tokens to experts (false: a dense MLP).
    pub fn is_moe_block(&self, b: usize) -> bool {
        self.moe_blocks.get(b).copied().unwrap_or(false)
    }

    /// True when any block routes tokens to experts.
    pub fn has_experts(&self) -> bool {
        self.moe_blocks.iter().any(|&m| m)
    }

    /// The smallest sliding window of any block, if one slides.
    pub fn min_window(&self) -> Option<usize> {
        self.layer_windows.iter().flatten().copied().min()
    }

    /// Reads and checks `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(PareError::input(dir, "model directory does not exist"));
        }
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| PareError::input(&path, format!("cannot read config.json: {e}")))?;
        Self::parse(&text, &path)
    }

    /// Parses config text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        // Python's json writes bare NaN/Infinity and transformers reads them: accepted in fields
        // pare does not use, refused (naming the field) in the ones it does.
        let raw: Value = crate::json::parse(text)
            .map_err(|e| PareError::input(path, format!("not valid JSON: {e}")))?;
        for field in USED_FIELDS {
            if let Some((at, token)) = raw.get(field).and_then(crate::json::non_finite_at) {
                return Err(PareError::input(
                    path,
                    format!(
                        "field `{field}{at}` is {token}; pare reads this field and needs a finite number"
                    ),
                ));
            }
        }
        let c: RawConfig = serde_json::from_value(raw.clone())
            .map_err(|e| PareError::input(path, format!("unexpected field type: {e}")))?;
        let need = |v: Option<usize>, field: &str| positive(v, field, path);
        let architecture = c
            .architectures
            .as_ref()
            .and_then(|a| a.first().cloned())
            .ok_or_else(|| PareError::input(path, "missing field `architectures`"))?;
        let kind = match architecture.as_str() {
            "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" => ArchKind::Llama,
            "MixtralForCausalLM" => ArchKind::Mixtral,
            "Qwen3ForCausalLM" => ArchKind::Qwen3,
            "Qwen3MoeForCausalLM" => ArchKind::Qwen3Moe,
            other => {
                return Err(PareError::input(
                    path,
                    format!(
                        "field `architectures`: unsupported architecture `{other}`; expected one of \
                         LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, \
                         MixtralForCausalLM, Qwen3MoeForCausalLM"
                    ),
                ));
            }
        };
        if let Some(act) = &c.hidden_act {
            if act != "silu" {
                return Err(PareError::input(
                    path,
                    format!("field `hidden_act`: `{act}` is not supported; expected `silu`"),
                ));
            }
        }
        let hidden_size = need(c.hidden_size, "hidden_size")?;
        let num_heads = need(c.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = c.num_key_value_heads.unwrap_or(num_heads);
        if num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(PareError::input(
                path,
                format!(
                    "field `num_key_value_heads`: {num_kv_heads} must divide num_attention_heads {num_heads}"
                ),
            ));
        }
        let head_dim = match c.head_dim {
            Some(h) if h > 0 => h,
            _ if hidden_size % num_heads == 0 => hidden_size / num_heads,
            _ => {
                return Err(PareError::input(
                    path,
                    "field `head_dim` missing and hidden_size is not divisible by num_attention_heads",
                ));
            }
        };
        if head_dim % 2 != 0 {
            return Err(PareError::input(
                path,
                format!("field `head_dim`: {head_dim} must be even for RoPE"),
            ));
        }
        // rope_theta: top level (transformers 4) or inside rope_parameters (transformers 5).
        let params = c.rope_parameters.as_ref().or(c.rope_scaling.as_ref());
        let rope_theta = c
            .rope_theta
            .or_else(|| {
                params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(Value::as_f64)
            })
            .unwrap_or(10000.0);
        let rope_scaling = parse_rope_scaling(params, path)?;
        let num_layers = need(c.num_hidden_layers, "num_hidden_layers")?;
        if num_layers > MAX_LAYERS {
            return Err(PareError::input(
                path,
                format!(
                    "field `num_hidden_layers`: {num_layers} blocks; expected at most {MAX_LAYERS}"
                ),
            ));
        }
        let intermediate_size = need(c.intermediate_size, "intermediate_size")?;
        let moe = Experts::parse(&c, kind, num_layers, intermediate_size, path)?;
        Ok(HfConfig {
            kind,
            vocab_size: need(c.vocab_size, "vocab_size")?,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(2048),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            attention_bias: c
                .attention_bias
                .unwrap_or(architecture == "Qwen2ForCausalLM"),
            qk_norm: matches!(kind, ArchKind::Qwen3 | ArchKind::Qwen3Moe),
            sliding_window: c.sliding_window,
            layer_windows: layer_windows(&raw, &architecture, c.sliding_window, num_layers, path)?,
            num_experts: moe.count,
            experts_per_token: moe.top_k,
            expert_ffn: moe.ffn,
            norm_topk_prob: moe.norm_topk_prob,
            odp_beta: odp_beta(&raw, num_layers, path)?,
            moe_blocks: moe.blocks,
            bos_token_id: first_id(&c.bos_token_id),
            eos_token_id: first_id(&c.eos_token_id),
            architecture,
            raw,
        })
    }
}

/// `compression.odp.beta` (written by pare's `odp:`): one number in [0, 1+ε] or null per block.
fn odp_beta(raw: &Value, blocks: usize, path: &Path) -> Result<Vec<Option<f32>>> {
    let Some(list) = raw.pointer("/compression/odp/beta") else {
        return Ok(vec![None; blocks]);
    };
    let bad = |m: String| PareError::input(path, format!("`compression.odp.beta`: {m}"));
    let Some(list) = list.as_array() else {
        return Err(bad(
            "expected a list with one number (or null) per block".into()
        ));
    };
    if list.len() != blocks {
        return Err(bad(format!(
            "{} entries; num_hidden_layers is {blocks}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(b, v)| match v {
            Value::Null => Ok(None),
            v => match v.as_f64() {
                Some(x) if (0.0..=1.0 + 1e-6).contains(&x) => Ok(Some(x as f32)),
                _ => Err(bad(format!("block {b}: {v} is not a β in [0, 1]"))),
            },
        })
        .collect()
}

/// The MoE fields of a config, checked.
struct Experts {
    count: usize,
    top_k: usize,
    ffn: usize,
    norm_topk_prob: bool,
    blocks: Vec<bool>,
}

impl Experts {
    /// Mixtral: experts in every block, `num_local_experts` wide, top-k renormalised.
    /// Qwen3-MoE: block `i` routes when `i ∉ mlp_only_layers` and `(i + 1) %
    /// decoder_sparse_step == 0` (transformers' rule); the expert count is `num_experts`
    /// (transformers 4) or `num_local_experts` (transformers 5).
    fn parse(
        c: &RawConfig,
        kind: ArchKind,
        layers: usize,
        intermediate_size: usize,
        path: &Path,
    ) -> Result<Self> {
        let moe = matches!(kind, ArchKind::Mixtral | ArchKind::Qwen3Moe);
        if !moe {
            return Ok(Self {
                count: 0,
                top_k: 0,
                ffn: 0,
                norm_topk_prob: false,
                blocks: vec![false; layers],
            });
        }
        let positive = |v: Option<usize>, field: &str| positive(v, field, path);
        let count = match (c.num_local_experts, c.num_experts) {
            (Some(a), Some(b)) if a != b => {
                return Err(PareError::input(
                    path,
                    format!(
                        "fields `num_local_experts` ({a}) and `num_experts` ({b}) disagree; \
                         expected one expert count"
                    ),
                ));
            }
            (Some(_), _) => positive(c.num_local_experts, "num_local_experts")?,
            (None, Some(_)) => positive(c.num_experts, "num_experts")?,
            (None, None) => {
                return Err(PareError::input(
                    path,
                    "missing field `num_local_experts` (or `num_experts`): the expert count",
                ));
            }
        };
        let top_k = positive(c.num_experts_per_tok, "num_experts_per_tok")?;
        if top_k > count {
            return Err(PareError::input(
                path,
                format!("field `num_experts_per_tok`: {top_k} exceeds the {count} experts"),
            ));
        }
        if kind == ArchKind::Mixtral {
            return Ok(Self {
                count,
                top_k,
                ffn: intermediate_size,
                norm_topk_prob: true,
                blocks: vec![true; layers],
            });
        }
        let ffn = positive(c.moe_intermediate_size, "moe_intermediate_size")?;
        let step = positive(c.decoder_sparse_step.or(Some(1)), "decoder_sparse_step")?;
        let dense = c.mlp_only_layers.clone().unwrap_or_default();
        if let Some(&b) = dense.iter().find(|&&b| b >= layers) {
            return Err(PareError::input(
                path,
                format!(
                    "field `mlp_only_layers`: block {b} does not exist; expected indices below \
                     num_hidden_layers {layers}"
                ),
            ));
        }
        Ok(Self {
            count,
            top_k,
            ffn,
            norm_topk_prob: c.norm_topk_prob.unwrap_or(false),
            blocks: (0..layers)
                .map(|i| !dense.contains(&i) && (i + 1) % step == 0)
                .collect(),
        })
    }
}

fn parse_rope_scaling(params: Option<&Value>, path: &Path) -> Result<Option<Llama3RopeScaling>> {
    let Some(p) = params else { return Ok(None) };
    let kind = p
        .get("rope_type")
        .or_else(|| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let num = |k: &str| -> Result<f64> {
                p.get(k).and_then(Value::as_f64).ok_or_else(|| {
                    PareError::input(path, format!("rope scaling `llama3`: missing number `{k}`"))
                })
            };
            Ok(Some(Llama3RopeScaling {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position_embeddings: num("original_max_position_embeddings")?,
            }))
        }
        other => Err(PareError::input(
            path,
            format!("rope scaling type `{other}` is not supported; expected `default` or `llama3`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rope_theta_from_rope_parameters() {
        let text = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,
            "rope_parameters":{"rope_theta":500000.0,"rope_type":"llama3","factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let c = HfConfig::parse(text, Path::new("config.json")).unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.head_dim, 4);
        assert_eq!(c.num_kv_heads, 2);
        assert_eq!(c.rope_scaling.unwrap().factor, 8.0);
    }

    #[test]
    fn odp_policy_is_read_back_and_checked() {
        let with = |odp: &str| {
            format!(
                r#"{{"architectures":["MixtralForCausalLM"],"vocab_size":10,"hidden_size":8,
                "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,
                "num_local_experts":4,"num_experts_per_tok":2,"compression":{{"odp":{odp}}}}}"#
            )
        };
        let p = Path::new("m/config.json");
        let c = HfConfig::parse(&with(r#"{"beta":[0.25,null]}"#), p).unwrap();
        assert_eq!(c.odp_beta, vec![Some(0.25), None]);
        for (bad, why) in [
            (r#"{"beta":[0.25]}"#, "1 entries"),
            (r#"{"beta":[0.25,2.0]}"#, "block 1"),
            (r#"{"beta":"x"}"#, "expected a list"),
        ] {
            let e = HfConfig::parse(&with(bad), p).unwrap_err().to_string();
            assert!(
                e.contains("m/config.json")
                    && e.contains("compression.odp.beta")
                    && e.contains(why),
                "{e}"
            );
        }
        let dense = HfConfig::parse(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2}"#,
            p,
        )
        .unwrap();
        assert_eq!(dense.odp_beta, vec![None]);
    }

    #[test]
    fn unknown_architecture_is_named() {
        let text = r#"{"architectures":["GPT2LMHeadModel"],"vocab_size":10}"#;
        let err = HfConfig::parse(text, Path::new("m/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m/config.json") && err.contains("GPT2LMHeadModel"),
            "{err}"
        );
    }

    /// Qwen3-MoE's block layout and expert fields: which blocks route, both expert-count keys,
    /// defaults, and errors naming the field.
    #[test]
    fn qwen3_moe_fields_follow_transformers() {
        let parse = |extra: &str| {
            let text = format!(
                r#"{{"architectures":["Qwen3MoeForCausalLM"],"vocab_size":10,"hidden_size":8,
                "intermediate_size":16,"num_hidden_layers":4,"num_attention_heads":2,
                "num_experts_per_tok":2,"moe_intermediate_size":4{extra}}}"#
            );
            HfConfig::parse(&text, Path::new("config.json"))
        };
        let c = parse(r#","num_experts":8"#).unwrap();
        assert_eq!(
            (c.num_experts, c.expert_ffn, c.intermediate_size),
            (8, 4, 16)
        );
        assert_eq!(c.moe_blocks, vec![true; 4]);
        assert!(!c.norm_topk_prob && c.qk_norm);
        let c = parse(r#","num_local_experts":8,"decoder_sparse_step":2,"mlp_only_layers":[1]"#)
            .unwrap();
        assert_eq!(c.moe_blocks, vec![false, false, false, true]);
        let c = parse(r#","num_experts":8,"num_local_experts":8,"norm_topk_prob":true"#).unwrap();
        assert!(c.norm_topk_prob);
        for (extra, needle) in [
            ("", "num_local_experts` (or `num_experts`)"),
            (r#","num_experts":8,"num_local_experts":4"#, "disagree"),
            (r#","num_experts":1"#, "num_experts_per_tok"),
            (
                r#","num_experts":8,"mlp_only_layers":[4]"#,
                "mlp_only_layers",
            ),
            (
                r#","num_experts":8,"decoder_sparse_step":0"#,
                "decoder_sparse_step",
            ),
        ] {
            let e = parse(extra).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        let text = r#"{"architectures":["Qwen3MoeForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":4,"num_attention_heads":2,
            "num_experts_per_tok":2,"num_experts":8}"#;
        let e = HfConfig::parse(text, Path::new("config.json")).unwrap_err();
        assert!(e.to_string().contains("moe_intermediate_size"), "{e}");
    }

    /// Which blocks slide, as transformers decides it per architecture.
    #[test]
    fn sliding_windows_follow_transformers_rules() {
        let windows = |arch: &str, extra: &str| -> Vec<Option<usize>> {
            let text = format!(
                r#"{{"architectures":["{arch}"],"vocab_size":10,"hidden_size":8,
                "intermediate_size":16,"num_hidden_layers":3,"num_attention_heads":2,
                "num_local_experts":2,"num_experts_per_tok":1,"moe_intermediate_size":4{extra}}}"#
            );
            HfConfig::parse(&text, Path::new("config.json"))
                .unwrap()
                .layer_windows
        };
        let (m, q) = ("MistralForCausalLM", "Qwen2ForCausalLM");
        assert_eq!(windows(m, r#","sliding_window":64"#), vec![Some(64); 3]);
        assert_eq!(windows(m, r#","sliding_window":null"#), vec![None; 3]);
        assert_eq!(
            windows(m, ""),
            vec![Some(4096); 3],
            "MistralConfig's default"
        );
        assert_eq!(windows("MixtralForCausalLM", ""), vec![None; 3]);
        assert_eq!(
            windows("LlamaForCausalLM", r#","sliding_window":64"#),
            vec![None; 3]
        );
        assert_eq!(windows(q, r#","sliding_window":64"#), vec![None; 3]);
        assert_eq!(
            windows(
                q,
                r#","sliding_window":64,"use_sliding_window":true,"max_window_layers":1"#
            ),
            vec![None, Some(64), Some(64)]
        );
        assert_eq!(
            windows(q, r#","use_sliding_window":true,"max_window_layers":2"#),
            vec![None, None, Some(4096)]
        );
        let types = r#","layer_types":["sliding_attention","full_attention","sliding_attention"]"#;
        assert_eq!(
            windows(m, &format!(r#","sliding_window":8{types}"#)),
            vec![Some(8), None, Some(8)]
        );
        assert_eq!(
            windows(q, &format!(r#","sliding_window":8{types}"#)),
            vec![None; 3]
        );
        let (q3, q3m) = ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM");
        assert_eq!(windows(q3, r#","sliding_window":64"#), vec![None; 3]);
        assert_eq!(
            windows(
                q3,
                r#","sliding_window":64,"use_sliding_window":true,"max_window_layers":2"#
            ),
            vec![None, None, Some(64)]
        );
        assert_eq!(windows(q3m, r#","sliding_window":64"#), vec![None; 3]);
        assert_eq!(
            windows(
                q3m,
                r#","sliding_window":64,"use_sliding_window":true,"max_window_layers":2"#
            ),
            vec![Some(64); 3],
            "Qwen3-MoE slides in every block"
        );
        let bad = r#"{"architectures":["MistralForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,"layer_types":["x"]}"#;
        let e = HfConfig::parse(bad, Path::new("config.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("layer_types"), "{e}");
    }

    /// A non-finite value in a field pare reads is named; a huge block count is refused.
    #[test]
    fn non_finite_and_implausible_fields_are_named() {
        let base = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_attention_heads":2,"#;
        let e = HfConfig::parse(
            &format!(r#"{base}"num_hidden_layers":1,"rms_norm_eps":NaN}}"#),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`rms_norm_eps`") && e.contains("NaN"), "{e}");
        let e = HfConfig::parse(
            &format!(r#"{base}"num_hidden_layers":4294967296}}"#),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("num_hidden_layers"), "{e}");
        assert!(
            HfConfig::parse(
                &format!(r#"{base}"num_hidden_layers":1,"unused":-Infinity}}"#),
                Path::new("c.json")
            )
            .is_ok()
        );
    }
}
