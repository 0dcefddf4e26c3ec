//! `TextTokenizer`: a checkpoint's `tokenizer.json` through the `tokenizers` crate (no C code),
//! with the Hugging Face defaults pare relies on (BOS added by the post-processor).

use std::path::{Path, PathBuf};

use crate::error::{PareError, Result};

/// A loaded `tokenizer.json`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// The model's embedding rows, config.json's `vocab_size` and config.json's path: every
    /// id encoded must index the embedding table.
    model_vocab: Option<(usize, usize, PathBuf)>,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(PareError::input(
                &path,
                "missing tokenizer.json (needed to tokenise text)",
            ));
        }
        let inner = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| PareError::input(&path, format!("cannot load tokenizer: {e}")))?;
        Ok(Self {
            inner,
            path,
            model_vocab: None,
        })
    }

    /// Ties the tokenizer to a model: `rows` embedding rows, config.json (`config`) declaring
    /// `vocab_size`. From then on an encoded id the table cannot hold is an input error naming
    /// both files.
    pub fn set_model_vocab(&mut self, rows: usize, vocab_size: usize, config: &Path) {
        self.model_vocab = Some((rows, vocab_size, config.to_path_buf()));
    }

    /// Token ids of `text`; `add_special` applies the post-processor (the BOS of Llama models).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| PareError::input(&self.path, format!("tokenisation failed: {e}")))?;
        let ids = enc.get_ids();
        if let Some((rows, vocab_size, config)) = &self.model_vocab {
            if let Some(&bad) = ids.iter().find(|&&t| t as usize >= *rows) {
                let token = self.inner.id_to_token(bad).unwrap_or_default();
                let added = self.inner.get_added_tokens_decoder().contains_key(&bad);
                return Err(PareError::input(
                    &self.path,
                    format!(
                        "token `{token}` gets id {bad}{}, outside the model's embedding table of \
                         {rows} rows ({} `vocab_size` is {vocab_size}): the tokenizer does not \
                         belong to this model",
                        if added { " (an added token)" } else { "" },
                        config.display()
                    ),
                ));
            }
        }
        Ok(ids.to_vec())
    }

    /// Ids of a whole document (calibration or evaluation text); the same ids as
    /// [`Self::encode`]'s.
    ///
    /// The tokeniser's working set for a long text is many times the text (about 130 bytes per
    /// input byte for the shipped byte-level BPE). It runs on a short-lived thread, so the
    /// allocator serves it from that thread's own arena rather than interleaving it with the
    /// run's long-lived data; the BPE word cache is cleared and the freed pages are handed back
    /// to the OS before this returns (see [`crate::mem`]).
    pub fn encode_document(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let ids = std::thread::scope(|s| {
            s.spawn(|| {
                let ids = self.encode(text, add_special);
                if let tokenizers::models::ModelWrapper::BPE(bpe) = self.inner.get_model() {
                    bpe.clear_cache();
                }
                ids
            })
            .join()
        })
        .map_err(|_| PareError::Internal("the tokeniser thread panicked".into()))?;
        crate::mem::release_free_heap();
        ids
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| PareError::input(&self.path, format!("decoding failed: {e}")))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// `None` when `other` turns every text into the same ids as `self`, else what differs
    /// (vocabulary, merges, added tokens, normaliser, pre-tokeniser, post-processor or
    /// decoder), read from the two `tokenizer.json` files. The vocabulary size alone says
    /// nothing: two BPE tokenisers of 4,096 tokens with different merges split text differently.
    pub fn difference(&self, other: &TextTokenizer) -> Result<Option<String>> {
        let (a, b) = (identity(&self.path)?, identity(&other.path)?);
        if a == b {
            return Ok(None);
        }
        let model = |v: &serde_json::Value, k: &str| v.get("model").and_then(|m| m.get(k)).cloned();
        let what = if model(&a, "vocab") != model(&b, "vocab") {
            "vocabularies".to_string()
        } else if model(&a, "merges") != model(&b, "merges") {
            "merges".to_string()
        } else {
            let keys = [
                "model",
                "added_tokens",
                "normalizer",
                "pre_tokenizer",
                "post_processor",
                "decoder",
            ];
            let k = keys
                .iter()
                .find(|k| a.get(**k) != b.get(**k))
                .unwrap_or(&"settings");
            format!("`{k}` sections")
        };
        Ok(Some(format!(
            "{} and {} have different {what}",
            self.path.display(),
            other.path.display()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Id of a token string, if present.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// The parts of a `tokenizer.json` that decide the ids of a text (truncation, padding and the
/// format version do not).
fn identity(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PareError::input(path, format!("cannot read tokenizer.json: {e}")))?;
    let mut v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| PareError::input(path, format!("tokenizer.json is not valid JSON: {e}")))?;
    if let Some(o) = v.as_object_mut() {
        for k in ["version", "truncation", "padding"] {
            o.remove(k);
        }
    }
    // One spelling per meaning: merges as pairs (older writers use "a b" strings), and model
    // keys at their defaults (null, false: absent in older files) dropped.
    if let Some(m) = v.get_mut("model").and_then(|m| m.as_object_mut()) {
        m.retain(|_, x| !(x.is_null() || *x == serde_json::Value::Bool(false)));
        if let Some(merges) = m.get_mut("merges").and_then(|x| x.as_array_mut()) {
            for merge in merges.iter_mut() {
                let pair = merge
                    .as_str()
                    .and_then(|s| s.split_once(' '))
                    .map(|(a, b)| serde_json::json!([a, b]));
                if let Some(p) = pair {
                    *merge = p;
                }
            }
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tokenizer written by an older `tokenizers` (merges as "a b" strings, default
    /// keys absent) is the same; one swapped merge is not.
    #[test]
    fn tokenizer_identity_ignores_spelling_not_merges() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/stories260k"));
        let tmp = tempfile::tempdir().unwrap();
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json")).unwrap())
                .unwrap();
        let write = |v: &serde_json::Value| {
            std::fs::write(tmp.path().join("tokenizer.json"), v.to_string()).unwrap();
            TextTokenizer::load(tmp.path()).unwrap()
        };
        let a = TextTokenizer::load(dir).unwrap();
        let m = v["model"].as_object_mut().unwrap();
        let merges: Vec<serde_json::Value> = m["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()).into())
            .collect();
        m.insert("merges".into(), merges.into());
        m.retain(|_, x| !(x.is_null() || *x == serde_json::Value::Bool(false)));
        assert_eq!(a.difference(&write(&v)).unwrap(), None);
        v["model"]["merges"].as_array_mut().unwrap().swap(0, 1);
        let d = a.difference(&write(&v)).unwrap().unwrap();
        assert!(d.contains("merges"), "{d}");
    }

    #[test]
    fn stories260k_ids_match_llama2c() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/models/stories260k"
        ));
        let t = TextTokenizer::load(dir).unwrap();
        assert_eq!(
            t.encode("Once upon a time, there was a little dragon", true)
                .unwrap(),
            vec![
                1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 279, 420, 412, 428, 289
            ]
        );
        assert_eq!(
            t.encode("Lily’s cat", true).unwrap(),
            vec![1, 317, 468, 419, 280, 294]
        );
    }
}
