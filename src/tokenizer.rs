//! `TextTokenizer`: a checkpoint's `tokenizer.json` through the `tokenizers` crate (no C code),
//! with the Hugging Face defaults pare relies on (BOS added by the post-processor).

use std::path::{Path, PathBuf};

use crate::error::{PareError, Result};

/// A loaded `tokenizer.json`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
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
        Ok(Self { inner, path })
    }

    /// Token ids of `text`; `add_special` applies the post-processor (the BOS of Llama models).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| PareError::input(&self.path, format!("tokenisation failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
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

    /// Id of a token string, if present.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
