//! A Hugging Face checkpoint directory to one GGUF file for llama.cpp, following llama.cpp's
//! `convert_hf_to_gguf.py` (metadata keys, tensor names, q/k permutation, which tensors stay
//! f32) so llama.cpp loads it as its own conversion.
//!
//! - **Architectures.** `LlamaForCausalLM` / `MistralForCausalLM` / `MixtralForCausalLM` →
//!   `llama` (experts as `ffn_*_exps` stacks `[experts, out, in]`); `Qwen2ForCausalLM` →
//!   `qwen2`; `Qwen3ForCausalLM` → `qwen3`; `Qwen3MoeForCausalLM` → `qwen3moe`. llama.cpp's
//!   `llama` applies RoPE to interleaved pairs where transformers rotates halves, so the rows of
//!   q_proj and k_proj (weights and biases) are permuted per head as convert_hf_to_gguf's
//!   `LlamaModel.permute` does; the Qwen architectures use NeoX RoPE and are written unpermuted.
//! - **Types.** `type` is the file's type. Norms, biases and the MoE router stay F32 (as
//!   convert_hf_to_gguf). Every other float matrix is written at `type`; with `q8_0` and `q4_0`
//!   that quantises it by llama.cpp's reference RTN (see [`super::quants`]), except that `q4_0`
//!   keeps `token_embd` and `output` at `Q8_0` (llama-quantize keeps the output at higher
//!   precision too). A row length that is not a multiple of 32 falls back to F16, as
//!   convert_hf_to_gguf does.
//! - **pare's quantised linears** (compressed-tensors `pack-quantized`) are re-packed from their
//!   integer codes, whatever `type` says, with no second rounding: int4 symmetric groups of 32 →
//!   `Q4_0`, int8 symmetric groups of 32 → `Q8_0`. Anything else (another group size, asymmetric,
//!   activation-ordered groups, a scale f16 cannot hold) is refused with exit 2: GGUF's `Q4_1`
//!   stores its minimum as an f16, which cannot hold `−scale·(zp+8)` exactly.
//! - **Refused** (exit 2, naming config.json and the field): RoPE scaling, sliding-window
//!   attention, Qwen3-MoE with `norm_topk_prob: false` or with dense blocks between MoE blocks
//!   (llama.cpp's `qwen3moe` has neither).
//!
//! Memory: one tensor (one expert stack) at a time; the output is written to `{out}.partial` and
//! renamed into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use serde::Serialize;

use crate::arch::{Architecture, LinearSlot};
use crate::checkpoint::{QuantizationConfig, TensorStore};
use crate::config::{ArchKind, HfConfig};
use crate::error::{PareError, Result};
use crate::gguf::container::{GgufWriter, TensorPlan, Value};
use crate::gguf::{GgmlType, quants, vocab};
use crate::id::{LinearRole, MlpPart};

/// What a GGUF export wrote, for the report and `--json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct GgufReport {
    /// The file written.
    pub file: String,
    /// The requested type (`q4_0`, …).
    #[serde(rename = "type")]
    pub ty: String,
    /// llama.cpp architecture (`llama`, `qwen3`, …).
    pub architecture: String,
    pub tensors: usize,
    pub bytes: u64,
    /// Tensors per ggml type.
    pub tensors_by_type: BTreeMap<String, usize>,
    /// Quantised linears re-packed from pare's codes, exactly.
    pub exact: usize,
    /// Float tensors quantised here with llama.cpp's RTN (not by the recipe's method).
    pub requantised: Vec<String>,
    /// Anything a user should know (pre-tokenizer guesses, F16 fallbacks).
    pub notes: Vec<String>,
}

/// Where one GGUF tensor's data comes from.
enum Source {
    /// A float tensor of the checkpoint; rows permuted for RoPE when `permute_heads` is set.
    Float {
        name: String,
        permute_heads: Option<usize>,
    },
    /// A linear (`{key}.weight` or packed).
    Linear {
        slot: LinearSlot,
        permute_heads: Option<usize>,
        packed: bool,
    },
    /// MoE experts of one projection, stacked `[experts, rows, cols]`.
    Experts {
        slots: Vec<LinearSlot>,
        packed: bool,
    },
}

struct Item {
    plan: TensorPlan,
    source: Source,
}

fn refuse(cfg_path: &Path, field: &str, why: &str) -> PareError {
    PareError::input(cfg_path, format!("`{field}`: {why}"))
}

/// llama.cpp's architecture name, after checking what GGUF export supports.
fn llama_cpp_arch(cfg: &HfConfig, cfg_path: &Path) -> Result<&'static str> {
    if cfg.rope_scaling.is_some() || cfg.raw.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(refuse(
            cfg_path,
            "rope_scaling",
            "GGUF export writes default RoPE only (llama.cpp's Llama 3 scaling needs a rope_freqs tensor pare does not write yet)",
        ));
    }
    if cfg.layer_windows.iter().any(Option::is_some) {
        return Err(refuse(
            cfg_path,
            "sliding_window",
            "GGUF export does not write sliding-window attention; llama.cpp's `llama` would attend to the full context",
        ));
    }
    Ok(match cfg.kind {
        ArchKind::Llama if cfg.architecture == "Qwen2ForCausalLM" => "qwen2",
        ArchKind::Llama | ArchKind::Mixtral => "llama",
        ArchKind::Qwen3 => "qwen3",
        ArchKind::Qwen3Moe => {
            if !cfg.norm_topk_prob {
                return Err(refuse(
                    cfg_path,
                    "norm_topk_prob",
                    "false is not expressible in GGUF: llama.cpp's qwen3moe always renormalises the top-k router weights",
                ));
            }
            if cfg.moe_blocks.iter().any(|m| !m) {
                return Err(refuse(
                    cfg_path,
                    "mlp_only_layers",
                    "llama.cpp's qwen3moe expects routed experts in every block; this config has dense blocks (decoder_sparse_step / mlp_only_layers)",
                ));
            }
            "qwen3moe"
        }
    })
}

/// The architecture metadata, in convert_hf_to_gguf's order.
fn arch_metadata(cfg: &HfConfig, arch: &str, name: &str, ty: GgmlType) -> Vec<(String, Value)> {
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| Value::U32(v as u32);
    let mut kv = vec![
        ("general.architecture".to_string(), Value::Str(arch.into())),
        ("general.type".into(), Value::Str("model".into())),
        ("general.name".into(), Value::Str(name.into())),
        (k("block_count"), u(cfg.num_layers)),
        (k("context_length"), u(cfg.max_position_embeddings)),
        (k("embedding_length"), u(cfg.hidden_size)),
        (k("feed_forward_length"), u(cfg.intermediate_size)),
        (k("attention.head_count"), u(cfg.num_heads)),
        (k("attention.head_count_kv"), u(cfg.num_kv_heads)),
        (k("rope.freq_base"), Value::F32(cfg.rope_theta as f32)),
        (
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
    ];
    if cfg.has_experts() {
        kv.push((k("expert_count"), u(cfg.num_experts)));
        kv.push((k("expert_used_count"), u(cfg.experts_per_token)));
    }
    kv.push((k("attention.key_length"), u(cfg.head_dim)));
    kv.push((k("attention.value_length"), u(cfg.head_dim)));
    kv.push(("general.file_type".into(), Value::U32(ty.file_type())));
    if arch == "llama" {
        kv.push((k("vocab_size"), u(cfg.vocab_size)));
        kv.push((k("rope.dimension_count"), u(cfg.head_dim)));
    }
    if arch == "qwen3moe" {
        kv.push((k("expert_feed_forward_length"), u(cfg.expert_ffn)));
    }
    kv.push(("general.quantization_version".into(), Value::U32(2)));
    kv
}

/// The ggml type of a float matrix of the checkpoint, by the rules in the module docs; `head`
/// is token_embd or output.
fn float_type(ty: GgmlType, head: bool, row: usize) -> GgmlType {
    let t = match ty {
        GgmlType::Q4_0 if head => GgmlType::Q8_0,
        t => t,
    };
    if row.is_multiple_of(t.block_size()) {
        t
    } else {
        GgmlType::F16
    }
}

/// The ggml type of a packed linear's scheme, or an error saying why GGUF cannot hold it.
fn packed_type(
    qcfg: Option<&QuantizationConfig>,
    slot: &LinearSlot,
    cfg_path: &Path,
) -> Result<GgmlType> {
    let scheme = qcfg.and_then(|q| q.scheme_for(&slot.key)).ok_or_else(|| {
        PareError::input(
            cfg_path,
            format!(
                "`quantization_config`: no config_groups entry targets `{}`, which is stored pack-quantized",
                slot.key
            ),
        )
    })?;
    match (scheme.bits, scheme.group_size, scheme.symmetric) {
        (4, Some(32), true) => Ok(GgmlType::Q4_0),
        (8, Some(32), true) => Ok(GgmlType::Q8_0),
        _ => Err(PareError::input(
            cfg_path,
            format!(
                "`quantization_config`: `{}` is int{} {} with group size {}; GGUF holds pare's codes exactly only as Q4_0 (int4, symmetric, groups of 32) or Q8_0 (int8, symmetric, groups of 32), and Q4_1 stores its minimum as an f16, which cannot hold an asymmetric grid exactly. Quantise with int4-g32-sym / int8-g32-sym (W4A16 with group_size 32), or export a dense checkpoint, which pare quantises by llama.cpp's RTN",
                slot.key,
                scheme.bits,
                if scheme.symmetric {
                    "symmetric"
                } else {
                    "asymmetric"
                },
                scheme
                    .group_size
                    .map_or("none (channel/tensor)".to_string(), |g| g.to_string()),
            ),
        )),
    }
}

/// llama.cpp's tensor name of a block linear.
fn linear_name(b: usize, role: LinearRole) -> String {
    let part = |p: MlpPart| match p {
        MlpPart::Gate => "gate",
        MlpPart::Up => "up",
        MlpPart::Down => "down",
    };
    match role {
        LinearRole::Q => format!("blk.{b}.attn_q.weight"),
        LinearRole::K => format!("blk.{b}.attn_k.weight"),
        LinearRole::V => format!("blk.{b}.attn_v.weight"),
        LinearRole::O => format!("blk.{b}.attn_output.weight"),
        LinearRole::Mlp(p) => format!("blk.{b}.ffn_{}.weight", part(p)),
        LinearRole::Router => format!("blk.{b}.ffn_gate_inp.weight"),
        LinearRole::Expert { part: p, .. } => format!("blk.{b}.ffn_{}_exps.weight", part(p)),
    }
}

/// Destination row `r` of a RoPE-permuted matrix takes source row `perm[r]`: within each head of
/// `rows / heads` rows, `(2, d/2)` becomes `(d/2, 2)` (convert_hf_to_gguf's `LlamaModel.permute`).
fn rope_permutation(rows: usize, heads: usize) -> Vec<usize> {
    let d = rows / heads;
    let half = d / 2;
    (0..rows)
        .map(|r| {
            let (h, within) = (r / d, r % d);
            let (i, j) = (within / 2, within % 2);
            h * d + j * half + i
        })
        .collect()
}

fn encode_float(data: &[f32], row: usize, t: GgmlType, out: &mut Vec<u8>) {
    match t {
        GgmlType::F32 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => data
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => data.chunks(row).for_each(|r| quants::q8_0_rtn(r, out)),
        GgmlType::Q4_0 => data.chunks(row).for_each(|r| quants::q4_0_rtn(r, out)),
    }
}

fn permute_rows(data: &[f32], row: usize, perm: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len());
    for &src in perm {
        out.extend_from_slice(&data[src * row..(src + 1) * row]);
    }
    out
}

/// Converts `dir` into the GGUF file `out` of type `ty`. `name` is `general.name`.
pub fn convert_checkpoint(dir: &Path, out: &Path, ty: GgmlType, name: &str) -> Result<GgufReport> {
    let cfg = HfConfig::load(dir)?;
    let cfg_path = dir.join("config.json");
    let store = TensorStore::open(dir)?;
    let qcfg = match cfg.raw.get("quantization_config") {
        Some(v) => QuantizationConfig::from_config(v, &cfg_path)?,
        None => None,
    };
    let arch_name = llama_cpp_arch(&cfg, &cfg_path)?;
    let permute = arch_name == "llama";
    let arch = Architecture::new(cfg.clone());
    let mut report = GgufReport {
        file: out.display().to_string(),
        ty: ty.label().into(),
        architecture: arch_name.into(),
        ..GgufReport::default()
    };

    let mut kv = arch_metadata(&cfg, arch_name, name, ty);
    let (tok_kv, notes) = vocab::tokenizer_metadata(dir, cfg.vocab_size)?;
    kv.extend(tok_kv);
    report.notes.extend(notes);

    // ---- the tensors, in llama.cpp's usual order ----
    let mut items: Vec<Item> = Vec::new();
    let float_item = |name: &str,
                      gguf: String,
                      t_for: &dyn Fn(&[usize]) -> GgmlType,
                      heads: Option<usize>|
     -> Result<Item> {
        let info = store.info(name).ok_or_else(|| {
            PareError::input(dir, format!("no tensor `{name}` (config.json implies it)"))
        })?;
        let ty = t_for(&info.shape);
        Ok(Item {
            plan: TensorPlan {
                name: gguf,
                shape: info.shape.clone(),
                ty,
            },
            source: Source::Float {
                name: name.to_string(),
                permute_heads: heads,
            },
        })
    };
    let vec_type = |_: &[usize]| GgmlType::F32;
    let head_type = |s: &[usize]| float_type(ty, true, s.last().copied().unwrap_or(1));
    items.push(float_item(
        arch.embed_name(),
        "token_embd.weight".into(),
        &head_type,
        None,
    )?);
    for b in 0..cfg.num_layers {
        let l = format!("model.layers.{b}");
        items.push(float_item(
            &format!("{l}.input_layernorm.weight"),
            format!("blk.{b}.attn_norm.weight"),
            &vec_type,
            None,
        )?);
        let slots = arch.linears(b);
        for slot in &slots {
            let heads = match slot.id.role {
                LinearRole::Q if permute => Some(cfg.num_heads),
                LinearRole::K if permute => Some(cfg.num_kv_heads),
                _ => None,
            };
            match slot.id.role {
                LinearRole::Expert { index, part } => {
                    if index > 0 {
                        continue;
                    }
                    let group: Vec<LinearSlot> = slots
                        .iter()
                        .filter(|s| matches!(s.id.role, LinearRole::Expert { part: p, .. } if p == part))
                        .cloned()
                        .collect();
                    let packed = group
                        .iter()
                        .map(|s| store.contains(&format!("{}.weight_packed", s.key)))
                        .collect::<Vec<_>>();
                    if packed.iter().any(|p| *p != packed[0]) {
                        return Err(PareError::input(
                            dir,
                            format!(
                                "block {b}: some experts' {part:?} projections are pack-quantized and some are not; GGUF stacks them into one tensor of one type"
                            ),
                        ));
                    }
                    let mut t = None;
                    if packed[0] {
                        for s in &group {
                            let ts = packed_type(qcfg.as_ref(), s, &cfg_path)?;
                            if t.is_some_and(|t0| t0 != ts) {
                                return Err(PareError::input(
                                    &cfg_path,
                                    format!(
                                        "block {b}: experts' {part:?} projections are quantised at different widths; GGUF stacks them into one tensor of one type"
                                    ),
                                ));
                            }
                            t = Some(ts);
                        }
                    }
                    let ty = t.unwrap_or_else(|| float_type(ty, false, slot.cols));
                    items.push(Item {
                        plan: TensorPlan {
                            name: linear_name(b, slot.id.role),
                            shape: vec![group.len(), slot.rows, slot.cols],
                            ty,
                        },
                        source: Source::Experts {
                            slots: group,
                            packed: packed[0],
                        },
                    });
                }
                role => {
                    let packed = store.contains(&format!("{}.weight_packed", slot.key));
                    let t = if packed {
                        packed_type(qcfg.as_ref(), slot, &cfg_path)?
                    } else if role == LinearRole::Router {
                        GgmlType::F32
                    } else {
                        float_type(ty, false, slot.cols)
                    };
                    items.push(Item {
                        plan: TensorPlan {
                            name: linear_name(b, role),
                            shape: vec![slot.rows, slot.cols],
                            ty: t,
                        },
                        source: Source::Linear {
                            slot: slot.clone(),
                            permute_heads: heads,
                            packed,
                        },
                    });
                    // Biases (Qwen2, attention_bias) right after their weight.
                    let bias = format!("{}.bias", slot.key);
                    if store.contains(&bias) {
                        let gguf = linear_name(b, role).replace(".weight", ".bias");
                        items.push(float_item(&bias, gguf, &vec_type, heads)?);
                    }
                }
            }
            if slot.id.role == LinearRole::K && cfg.qk_norm {
                // After k: the per-head q/k norms (Qwen3).
                items.push(float_item(
                    &format!("{l}.self_attn.q_norm.weight"),
                    format!("blk.{b}.attn_q_norm.weight"),
                    &vec_type,
                    None,
                )?);
                items.push(float_item(
                    &format!("{l}.self_attn.k_norm.weight"),
                    format!("blk.{b}.attn_k_norm.weight"),
                    &vec_type,
                    None,
                )?);
            }
            if slot.id.role == LinearRole::O {
                items.push(float_item(
                    &format!("{l}.post_attention_layernorm.weight"),
                    format!("blk.{b}.ffn_norm.weight"),
                    &vec_type,
                    None,
                )?);
            }
        }
    }
    items.push(float_item(
        "model.norm.weight",
        "output_norm.weight".into(),
        &vec_type,
        None,
    )?);
    if !cfg.tie_word_embeddings {
        items.push(float_item(
            arch.head_name(),
            "output.weight".into(),
            &head_type,
            None,
        )?);
    }

    // ---- write ----
    let plans: Vec<TensorPlan> = items.iter().map(|i| i.plan.clone()).collect();
    for p in &plans {
        *report
            .tensors_by_type
            .entry(p.ty.label().to_string())
            .or_default() += 1;
    }
    report.tensors = plans.len();
    let mut w = GgufWriter::create(out, &kv, plans)?;
    let mut buf = Vec::new();
    for item in &items {
        crate::interrupt::check()?;
        buf.clear();
        let t = item.plan.ty;
        let is_quant = matches!(t, GgmlType::Q4_0 | GgmlType::Q8_0);
        match &item.source {
            Source::Float {
                name,
                permute_heads,
            } => {
                let (shape, mut data) = store.read_f32(name)?;
                let row = shape.last().copied().unwrap_or(1);
                if let Some(h) = permute_heads {
                    data = permute_rows(
                        &data,
                        1.max(data.len() / shape[0].max(1)),
                        &rope_permutation(shape[0], *h),
                    );
                }
                encode_float(&data, row, t, &mut buf);
                if is_quant {
                    report.requantised.push(item.plan.name.clone());
                }
            }
            Source::Linear {
                slot,
                permute_heads,
                packed,
            } => {
                let perm = permute_heads.map(|h| rope_permutation(slot.rows, h));
                if *packed {
                    encode_packed(&store, qcfg.as_ref(), slot, t, perm.as_deref(), &mut buf)?;
                    report.exact += 1;
                } else {
                    let m = store.read_linear(&slot.key, slot.rows, slot.cols, qcfg.as_ref())?;
                    let data = match &perm {
                        Some(p) => permute_rows(&m.data, slot.cols, p),
                        None => m.data,
                    };
                    encode_float(&data, slot.cols, t, &mut buf);
                    if is_quant {
                        report.requantised.push(item.plan.name.clone());
                    }
                }
            }
            Source::Experts { slots, packed } => {
                for slot in slots {
                    if *packed {
                        encode_packed(&store, qcfg.as_ref(), slot, t, None, &mut buf)?;
                        report.exact += 1;
                    } else {
                        let m =
                            store.read_linear(&slot.key, slot.rows, slot.cols, qcfg.as_ref())?;
                        encode_float(&m.data, slot.cols, t, &mut buf);
                    }
                }
                if !*packed && is_quant {
                    report.requantised.push(item.plan.name.clone());
                }
            }
        }
        w.write_tensor(&buf)?;
    }
    let path: PathBuf = w.finish()?;
    report.bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if report.tensors_by_type.contains_key("f16") && !matches!(ty, GgmlType::F16) {
        report.notes.push(
            "some matrices have rows that are not a multiple of 32 and were written as F16".into(),
        );
    }
    Ok(report)
}

/// Re-packs a pack-quantized linear's codes as `t` (Q4_0 or Q8_0), rows permuted by `perm`.
fn encode_packed(
    store: &TensorStore,
    qcfg: Option<&QuantizationConfig>,
    slot: &LinearSlot,
    t: GgmlType,
    perm: Option<&[usize]>,
    out: &mut Vec<u8>,
) -> Result<()> {
    let (rows, cols) = (slot.rows, slot.cols);
    let p = store
        .read_quantized(&slot.key, rows, cols, qcfg)?
        .ok_or_else(|| PareError::Internal(format!("`{}` is not pack-quantized", slot.key)))?;
    let file = store.file_of(&format!("{}.weight_packed", slot.key));
    let contiguous = p
        .group_of
        .iter()
        .enumerate()
        .all(|(c, &g)| g == c / quants::QK);
    if p.zero_points.is_some()
        || p.scale_rows != rows
        || p.groups * quants::QK != cols
        || !contiguous
    {
        return Err(PareError::input(
            file,
            format!(
                "`{}` is not stored as symmetric contiguous groups of 32 ({} groups per row{}{}); GGUF Q4_0/Q8_0 cannot hold it exactly",
                slot.key,
                p.groups,
                if p.zero_points.is_some() {
                    ", zero-points"
                } else {
                    ""
                },
                if contiguous {
                    ""
                } else {
                    ", activation-ordered groups"
                },
            ),
        ));
    }
    let want_bits = if t == GgmlType::Q4_0 { 4 } else { 8 };
    if p.bits != want_bits {
        return Err(PareError::input(
            file,
            format!(
                "`{}` holds int{} codes; config.json says int{want_bits}",
                slot.key, p.bits
            ),
        ));
    }
    let mut codes = vec![0i8; cols];
    for r in 0..rows {
        let src = perm.map_or(r, |p| p[r]);
        for (c, v) in codes.iter_mut().enumerate() {
            *v = p.codes[src * cols + c] as i8;
        }
        let scales = &p.scales[src * p.groups..(src + 1) * p.groups];
        let packed = if t == GgmlType::Q4_0 {
            quants::pack_q4_0(&codes, scales, out)
        } else {
            quants::pack_q8_0(&codes, scales, out)
        };
        packed.map_err(|g| {
            PareError::input(
                store.file_of(&format!("{}.weight_scale", slot.key)),
                format!(
                    "`{}.weight_scale` row {src} group {g} is {}, which f16 cannot hold exactly; GGUF stores scales as f16. Quantise with export format gguf in the recipe (pare then keeps scales on the f16 grid)",
                    slot.key,
                    scales[g]
                ),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_permutation_interleaves_halves_per_head() {
        // One head of 4 rows: HF [x0 x1 | y0 y1] → llama.cpp [x0 y0 x1 y1].
        assert_eq!(rope_permutation(4, 1), vec![0, 2, 1, 3]);
        assert_eq!(rope_permutation(8, 2), vec![0, 2, 1, 3, 4, 6, 5, 7]);
    }
}
