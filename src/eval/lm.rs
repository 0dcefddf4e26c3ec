//! `LanguageModel`: the narrow interface the task runners need from a model (log-likelihoods,
//! greedy decoding, the tokenizer). The engine implements it; tests use a small fake.

/// A causal language model together with its tokenizer, as the task runners see it.
///
/// Conventions: ids include BOS only when `encode(.., add_bos = true)` put it there; `greedy`
/// returns only the new tokens (never the prompt).
pub trait LanguageModel {
    /// `log p(ids[i+1] | ids[..=i])` for `i in 0..ids.len()-1` (length `ids.len()-1`).
    fn token_logprobs(&mut self, ids: &[u32]) -> crate::Result<Vec<f32>>;

    /// Greedy continuation: at most `max_new` tokens, stopping after any token in `stop`
    /// (the stop token is included in the returned ids).
    fn greedy(&mut self, prompt: &[u32], max_new: usize, stop: &[u32]) -> crate::Result<Vec<u32>>;

    /// Token ids of `text`; `add_bos` applies the tokenizer's post-processor (Llama's BOS).
    fn encode(&self, text: &str, add_bos: bool) -> crate::Result<Vec<u32>>;

    /// Text of `ids`, special tokens skipped.
    fn decode(&self, ids: &[u32]) -> crate::Result<String>;

    /// Longest sequence `token_logprobs` and `greedy` accept (prompt plus new tokens).
    fn max_len(&self) -> usize;

    /// Ids that end generation (EOS). The task runners pass them as `stop` to `greedy`.
    /// Defaults to none; implementors with a known EOS should return it.
    fn stop_tokens(&self) -> Vec<u32> {
        Vec::new()
    }
}

/// A fake byte-level model for tests: ids 0..=255 are bytes, 256 is BOS and 257 is EOS.
///
/// Log-probabilities ignore context (a unigram table, so expected sums are easy to compute by
/// hand); greedy decoding replays a scripted reply chosen by the end of the prompt text.
#[cfg(test)]
pub(crate) mod testing {
    use super::LanguageModel;
    use std::collections::HashMap;

    pub const BOS: u32 = 256;
    pub const EOS: u32 = 257;

    #[derive(Default)]
    pub struct FakeLm {
        /// log p of each byte; bytes not present get `default_lp`.
        pub unigram: HashMap<u8, f32>,
        pub default_lp: f32,
        /// (prompt suffix, reply): the first entry whose suffix ends the prompt text is replayed.
        pub replies: Vec<(String, String)>,
        pub max_len: usize,
        /// Every id sequence passed to `token_logprobs`, for assertions.
        pub seen: Vec<Vec<u32>>,
    }

    impl FakeLm {
        pub fn new() -> Self {
            FakeLm {
                default_lp: -5.0,
                max_len: 4096,
                ..Default::default()
            }
        }
        pub fn with_lp(mut self, chars: &str, lp: f32) -> Self {
            for b in chars.bytes() {
                self.unigram.insert(b, lp);
            }
            self
        }
        pub fn reply(mut self, suffix: &str, reply: &str) -> Self {
            self.replies.push((suffix.to_string(), reply.to_string()));
            self
        }
    }

    impl LanguageModel for FakeLm {
        fn token_logprobs(&mut self, ids: &[u32]) -> crate::Result<Vec<f32>> {
            self.seen.push(ids.to_vec());
            Ok(ids[1..]
                .iter()
                .map(|&t| {
                    u8::try_from(t)
                        .ok()
                        .and_then(|b| self.unigram.get(&b).copied())
                        .unwrap_or(self.default_lp)
                })
                .collect())
        }
        fn greedy(
            &mut self,
            prompt: &[u32],
            max_new: usize,
            stop: &[u32],
        ) -> crate::Result<Vec<u32>> {
            let text = self.decode(prompt)?;
            let reply = self
                .replies
                .iter()
                .find(|(s, _)| text.ends_with(s.as_str()))
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            let mut out: Vec<u32> = reply.bytes().map(u32::from).collect();
            out.push(EOS);
            let mut kept = Vec::new();
            for t in out.into_iter().take(max_new) {
                kept.push(t);
                if stop.contains(&t) {
                    break;
                }
            }
            Ok(kept)
        }
        fn encode(&self, text: &str, add_bos: bool) -> crate::Result<Vec<u32>> {
            let mut ids = if add_bos { vec![BOS] } else { Vec::new() };
            ids.extend(text.bytes().map(u32::from));
            Ok(ids)
        }
        fn decode(&self, ids: &[u32]) -> crate::Result<String> {
            let bytes: Vec<u8> = ids.iter().filter_map(|&t| u8::try_from(t).ok()).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        fn max_len(&self) -> usize {
            self.max_len
        }
        fn stop_tokens(&self) -> Vec<u32> {
            vec![EOS]
        }
    }
}
