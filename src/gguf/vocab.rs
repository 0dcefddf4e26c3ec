//! `tokenizer.ggml.*` metadata from a Hugging Face `tokenizer.json` (and `tokenizer_config.json`),
//! as llama.cpp's `convert_hf_to_gguf.py` writes it, for the two tokenizer kinds of the Llama
//! family:
//!
//! - **SentencePiece-style BPE** (`model.type: BPE`, `byte_fallback: true`, a `Sequence` decoder;
//!   Llama 2, Mistral, stories260k): `tokenizer.ggml.model = "llama"`, tokens in id order, token
//!   types (`BYTE` for `<0xNN>`, `CONTROL` for special added tokens, `NORMAL` otherwise) and
//!   scores. llama.cpp's SentencePiece tokenizer merges the adjacent pair of highest score, so
//!   pare scores a token by its merge rank (`−rank` of the first merge producing it, 0 for tokens
//!   no merge produces), which makes that merge order BPE's. convert_hf_to_gguf's `LlamaHfVocab`
//!   writes −1000 for every token instead, which leaves the merge order to position alone.
//! - **Byte-level BPE** (GPT-2 style; Llama 3, Qwen2/3, tiny-llama): `"gpt2"`, tokens, token types
//!   (`CONTROL` for special added tokens, `USER_DEFINED` for other added tokens, `UNUSED`
//!   `[PAD{i}]` padding up to `vocab_size`), merges as `"a b"`, and `tokenizer.ggml.pre` from the
//!   pre-tokenizer: `gpt-2` for a bare `ByteLevel` with its regex, `llama-bpe` / `qwen2` for those
//!   split patterns, otherwise `default` with a note.
//!
//! Both get BOS/EOS/UNK/PAD ids and `add_bos_token` / `add_eos_token` (tokenizer_config.json
//! first, else the post-processor's template), and `tokenizer.chat_template` when given.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{PareError, Result};
use crate::gguf::Value;

/// llama.cpp's `enum llama_token_type`.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

const LLAMA3_SPLIT: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_SPLIT: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

fn read_json(path: &Path) -> Result<Json> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PareError::io(format!("reading {}", path.display()), e))?;
    serde_json::from_str(&text).map_err(|e| PareError::input(path, format!("not valid JSON: {e}")))
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && t.starts_with("<0x")
        && t.ends_with('>')
        && b[3..5].iter().all(u8::is_ascii_hexdigit)
}

/// The merges of a BPE model as `(left, right)`, accepting both `"a b"` and `["a", "b"]`.
fn merges(model: &Json, path: &Path) -> Result<Vec<(String, String)>> {
    let Some(list) = model.get("merges").and_then(Json::as_array) else {
        return Ok(Vec::new());
    };
    list.iter()
        .map(|m| match m {
            Json::String(s) => s
                .split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    PareError::input(path, format!("model.merges entry `{s}` has no space"))
                }),
            Json::Array(a) if a.len() == 2 => Ok((
                a[0].as_str().unwrap_or_default().to_string(),
                a[1].as_str().unwrap_or_default().to_string(),
            )),
            _ => Err(PareError::input(
                path,
                "model.merges: expected \"a b\" strings or [a, b] pairs",
            )),
        })
        .collect()
}

fn pre_tokenizer(tok: &Json, notes: &mut Vec<String>) -> String {
    let pre = tok.get("pre_tokenizer").unwrap_or(&Json::Null);
    let typ = pre.get("type").and_then(Json::as_str).unwrap_or("");
    if typ == "ByteLevel" && pre.get("use_regex").and_then(Json::as_bool).unwrap_or(true) {
        return "gpt-2".into();
    }
    if typ == "Sequence" {
        let regex = pre
            .get("pretokenizers")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("type").and_then(Json::as_str) == Some("Split"))
            .find_map(|p| p.get("pattern")?.get("Regex")?.as_str().map(str::to_string));
        match regex.as_deref() {
            Some(LLAMA3_SPLIT) => return "llama-bpe".into(),
            Some(QWEN2_SPLIT) => return "qwen2".into(),
            _ => {}
        }
    }
    notes.push(format!(
        "tokenizer.json's pre-tokenizer ({typ}) is not one pare names for llama.cpp; wrote \
         tokenizer.ggml.pre = default, so llama.cpp's text splitting may differ from transformers'"
    ));
    "default".into()
}

/// The `tokenizer.ggml.*` metadata of `dir` for a model of `vocab_size` rows, and notes for the
/// report. Errors (exit 2) name tokenizer.json and the field.
pub fn tokenizer_metadata(
    dir: &Path,
    vocab_size: usize,
) -> Result<(Vec<(String, Value)>, Vec<String>)> {
    let path = dir.join("tokenizer.json");
    let tok = read_json(&path)?;
    let model = tok
        .get("model")
        .ok_or_else(|| PareError::input(&path, "no `model` object"))?;
    if model.get("type").and_then(Json::as_str) != Some("BPE") {
        return Err(PareError::input(
            &path,
            format!(
                "model.type is {}; GGUF export supports BPE tokenizers (SentencePiece-style or byte-level)",
                model.get("type").unwrap_or(&Json::Null)
            ),
        ));
    }
    let vocab = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| PareError::input(&path, "model.vocab: expected an object"))?;
    let mut by_id: Vec<Option<String>> = vec![None; vocab_size];
    let mut put = |t: &str, id: u64| -> Result<()> {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| by_id.get_mut(i))
            .ok_or_else(|| {
                PareError::input(
                    &path,
                    format!("token `{t}` has id {id}, outside config.json vocab_size {vocab_size}"),
                )
            })?;
        *slot = Some(t.to_string());
        Ok(())
    };
    for (t, id) in vocab {
        put(t, id.as_u64().unwrap_or(u64::MAX))?;
    }
    let mut added: HashMap<u64, bool> = HashMap::new();
    for a in tok
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Json::as_u64),
            a.get("content").and_then(Json::as_str),
        ) else {
            return Err(PareError::input(
                &path,
                "added_tokens: each needs `id` and `content`",
            ));
        };
        put(content, id)?;
        added.insert(
            id,
            a.get("special").and_then(Json::as_bool).unwrap_or(false),
        );
    }
    let byte_fallback = model
        .get("byte_fallback")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let merges = merges(model, &path)?;
    let mut notes = Vec::new();
    let mut kv: Vec<(String, Value)> = Vec::new();
    let kind_of = |i: usize| match added.get(&(i as u64)) {
        Some(true) => Some(CONTROL),
        Some(false) => Some(USER_DEFINED),
        None => None,
    };
    let tokens: Vec<String> = by_id
        .iter()
        .enumerate()
        .map(|(i, t)| t.clone().unwrap_or_else(|| format!("[PAD{i}]")))
        .collect();
    if byte_fallback {
        // SentencePiece-style: scores from merge ranks.
        let mut rank: HashMap<String, usize> = HashMap::new();
        for (r, (a, b)) in merges.iter().enumerate() {
            rank.entry(format!("{a}{b}")).or_insert(r);
        }
        let unk = model.get("unk_token").and_then(Json::as_str);
        let types: Vec<i32> = by_id
            .iter()
            .enumerate()
            .map(|(i, t)| match t {
                None => UNUSED,
                Some(t) if is_byte_token(t) => BYTE,
                Some(t) if Some(t.as_str()) == unk && kind_of(i).is_none() => UNKNOWN,
                Some(_) => kind_of(i).unwrap_or(NORMAL),
            })
            .collect();
        let scores: Vec<f32> = tokens
            .iter()
            .map(|t| rank.get(t).map_or(0.0, |&r| -(r as f32)))
            .collect();
        kv.push(("tokenizer.ggml.model".into(), Value::Str("llama".into())));
        kv.push(("tokenizer.ggml.pre".into(), Value::Str("default".into())));
        kv.push(("tokenizer.ggml.tokens".into(), Value::ArrStr(tokens)));
        kv.push(("tokenizer.ggml.scores".into(), Value::ArrF32(scores)));
        kv.push(("tokenizer.ggml.token_type".into(), Value::ArrI32(types)));
    } else {
        let types: Vec<i32> = by_id
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_none() {
                    UNUSED
                } else {
                    kind_of(i).unwrap_or(NORMAL)
                }
            })
            .collect();
        let pre = pre_tokenizer(&tok, &mut notes);
        kv.push(("tokenizer.ggml.model".into(), Value::Str("gpt2".into())));
        kv.push(("tokenizer.ggml.pre".into(), Value::Str(pre)));
        kv.push(("tokenizer.ggml.tokens".into(), Value::ArrStr(tokens)));
        kv.push(("tokenizer.ggml.token_type".into(), Value::ArrI32(types)));
        kv.push((
            "tokenizer.ggml.merges".into(),
            Value::ArrStr(merges.iter().map(|(a, b)| format!("{a} {b}")).collect()),
        ));
    }
    special_tokens(dir, &tok, &by_id, &mut kv)?;
    Ok((kv, notes))
}

/// BOS/EOS/UNK/PAD ids, add_bos/add_eos, chat template.
fn special_tokens(
    dir: &Path,
    tok: &Json,
    by_id: &[Option<String>],
    kv: &mut Vec<(String, Value)>,
) -> Result<()> {
    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = if cfg_path.is_file() {
        read_json(&cfg_path)?
    } else {
        Json::Null
    };
    let id_of = |text: &str| by_id.iter().position(|t| t.as_deref() == Some(text));
    // tokenizer_config.json gives `"<s>"` or `{"content": "<s>", …}`.
    let named = |key: &str| -> Option<u32> {
        let v = cfg.get(key)?;
        let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
        id_of(text).map(|i| i as u32)
    };
    for (key, gguf_key) in [
        ("bos_token", "tokenizer.ggml.bos_token_id"),
        ("eos_token", "tokenizer.ggml.eos_token_id"),
        ("unk_token", "tokenizer.ggml.unknown_token_id"),
        ("pad_token", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = named(key) {
            kv.push((gguf_key.into(), Value::U32(id)));
        }
    }
    // add_bos / add_eos: tokenizer_config.json, else the post-processor's single template.
    let template: Vec<String> = tok
        .get("post_processor")
        .and_then(|p| p.get("single"))
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            p.get("SpecialToken")
                .and_then(|s| s.get("id"))
                .and_then(Json::as_str)
                .unwrap_or("$")
                .to_string()
        })
        .collect();
    let bos_text = cfg
        .get("bos_token")
        .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()));
    let eos_text = cfg
        .get("eos_token")
        .and_then(|v| v.as_str().or_else(|| v.get("content")?.as_str()));
    let add_bos = cfg
        .get("add_bos_token")
        .and_then(Json::as_bool)
        .or_else(|| {
            (!template.is_empty()).then(|| template.first().map(String::as_str) == bos_text)
        });
    let add_eos = cfg
        .get("add_eos_token")
        .and_then(Json::as_bool)
        .or_else(|| {
            (!template.is_empty()).then(|| template.last().map(String::as_str) == eos_text)
        });
    if let Some(b) = add_bos {
        kv.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(b)));
    }
    if let Some(b) = add_eos {
        kv.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(b)));
    }
    if let Some(t) = cfg.get("chat_template").and_then(Json::as_str) {
        kv.push(("tokenizer.chat_template".into(), Value::Str(t.to_string())));
    }
    Ok(())
}
