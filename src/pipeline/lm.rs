//! `LanguageModel` for `ModelRunner`: log-likelihoods and greedy decoding with every block
//! resident (no KV cache: each step reruns the prefix, fine for the short task prompts).

use burn::tensor::activation::log_softmax;

use super::runner::ModelRunner;
use crate::error::Result;
use crate::eval::lm::LanguageModel;
use crate::model::to_host;

impl ModelRunner {
    /// Log-softmax rows `[seq, vocab]` of one sequence (host).
    fn log_probs(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.resident_hidden(ids)?;
        to_host(log_softmax(self.ends.logits(h)?, 1))
    }
}

impl LanguageModel for ModelRunner {
    fn token_logprobs(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        if ids.len() < 2 {
            return Ok(Vec::new());
        }
        let v = self.ends.vocab;
        let lp = self.log_probs(ids)?;
        Ok((0..ids.len() - 1)
            .map(|i| lp[i * v + ids[i + 1] as usize])
            .collect())
    }

    fn greedy(&mut self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
        let v = self.ends.vocab;
        let mut ids = prompt.to_vec();
        let mut out = Vec::new();
        while out.len() < max_new && ids.len() < self.max_len() {
            let lp = self.log_probs(&ids)?;
            let last = &lp[(ids.len() - 1) * v..ids.len() * v];
            let mut best = 0;
            for (i, x) in last.iter().enumerate() {
                if *x > last[best] {
                    best = i;
                }
            }
            let t = best as u32;
            ids.push(t);
            out.push(t);
            if stop.contains(&t) {
                break;
            }
        }
        Ok(out)
    }

    fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, add_bos)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids)
    }

    fn max_len(&self) -> usize {
        self.cfg().max_position_embeddings
    }

    fn stop_tokens(&self) -> Vec<u32> {
        self.cfg().eos_token_id.into_iter().collect()
    }
}
