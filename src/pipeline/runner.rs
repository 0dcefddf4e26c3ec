//! `ModelRunner`: an opened checkpoint that runs windows of tokens through the model one block at
//! a time (streaming: only one block's weights in memory) or with every block resident (for
//! generation in task evaluation).

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};

use super::progress::Progress;
use crate::arch::Architecture;
use crate::checkpoint::{QuantizationConfig, TensorStore};
use crate::config::HfConfig;
use crate::error::{PareError, Result};
use crate::model::{DecoderBlock, Ends, NoTap, Rope, to_host};
use crate::tokenizer::TextTokenizer;

/// An opened model directory.
pub struct ModelRunner {
    pub dir: PathBuf,
    pub arch: Architecture,
    pub store: TensorStore,
    pub qcfg: Option<QuantizationConfig>,
    pub tokenizer: TextTokenizer,
    pub ends: Ends,
    pub device: Device,
    resident: Option<Vec<DecoderBlock>>,
    /// Sequences per forward batch.
    pub batch: usize,
}

impl ModelRunner {
    /// Opens `dir`: config.json, weights, tokenizer.json, embeddings and head.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let cfg = HfConfig::load(dir)?;
        let store = TensorStore::open(dir)?;
        let qcfg = match cfg.raw.get("quantization_config") {
            Some(v) => QuantizationConfig::from_config(v, &dir.join("config.json"))?,
            None => None,
        };
        let mut tokenizer = TextTokenizer::load(dir)?;
        let arch = Architecture::new(cfg);
        let ends = arch.load_ends(&store, device)?;
        tokenizer.set_model_vocab(ends.vocab, arch.cfg.vocab_size, &dir.join("config.json"));
        Ok(Self {
            dir: dir.to_path_buf(),
            arch,
            store,
            qcfg,
            tokenizer,
            ends,
            device: device.clone(),
            resident: None,
            batch: 4,
        })
    }

    /// Parameters of the model: block linears (by config shape) plus every other tensor stored.
    pub fn parameter_count(&self) -> u64 {
        let linear: usize = self
            .arch
            .all_linears()
            .iter()
            .map(|s| s.rows * s.cols)
            .sum();
        let rest: usize = self
            .arch
            .passthrough_tensors(&self.store)
            .iter()
            .filter_map(|n| self.store.info(n))
            .map(|i| i.shape.iter().product::<usize>())
            .sum();
        (linear + rest) as u64
    }

    /// The model configuration.
    pub fn cfg(&self) -> &HfConfig {
        &self.arch.cfg
    }

    /// Loads block `b` onto the device; returns it with the number of NaN/Inf weights it holds.
    pub fn load_block(&self, b: usize) -> Result<(DecoderBlock, usize)> {
        let w = self.arch.read_block(&self.store, b, self.qcfg.as_ref())?;
        let bad = w.linears.iter().map(|(_, m, _)| m.non_finite()).sum();
        Ok((self.arch.into_block(w, &self.device)?.0, bad))
    }

    /// Keeps every block on the device (for repeated forwards, e.g. generation).
    pub fn make_resident(&mut self) -> Result<()> {
        if self.resident.is_none() {
            let mut blocks = Vec::with_capacity(self.cfg().num_layers);
            for b in 0..self.cfg().num_layers {
                blocks.push(self.load_block(b)?.0);
            }
            self.resident = Some(blocks);
        }
        Ok(())
    }

    /// Runs equal-length `windows` through every block, one block at a time (streaming), and
    /// returns the final hidden states per batch of `self.batch` windows.
    pub fn final_hidden(
        &self,
        windows: &[Vec<u32>],
        progress: &dyn Progress,
    ) -> Result<Vec<Tensor<3>>> {
        let seq = windows.first().map(Vec::len).unwrap_or(0);
        let rope = Rope::new(self.cfg(), seq.max(1), &self.device);
        let mut hidden: Vec<Tensor<3>> = windows
            .chunks(self.batch.max(1))
            .map(|c| self.ends.embed(c))
            .collect::<Result<_>>()?;
        let n = self.cfg().num_layers;
        progress.start("blocks", n as u64);
        for b in 0..n {
            let owned;
            let block = match &self.resident {
                Some(blocks) => &blocks[b],
                None => {
                    let (blk, bad) = self.load_block(b)?;
                    if bad > 0 {
                        progress.warn(&format!("block {b}: {bad} NaN/Inf weights"));
                    }
                    owned = blk;
                    &owned
                }
            };
            for h in hidden.iter_mut() {
                *h = block.forward(h.clone(), &rope, &mut NoTap)?;
            }
            progress.step();
        }
        progress.finish();
        Ok(hidden)
    }

    /// Raw logits `[seq, vocab]` (row-major, host) of one sequence, with every block resident.
    pub fn logits(&mut self, ids: &[u32]) -> Result<Vec<f32>> {
        let h = self.resident_hidden(ids)?;
        to_host(self.ends.logits(h)?)
    }

    /// The final hidden states `[1, seq, hidden]` of one sequence of 1 to
    /// `max_position_embeddings` tokens, with every block resident.
    pub(crate) fn resident_hidden(&mut self, ids: &[u32]) -> Result<Tensor<3>> {
        let max = self.cfg().max_position_embeddings;
        if ids.is_empty() || ids.len() > max {
            return Err(PareError::Usage(format!(
                "sequence of {} tokens; expected 1 to {max} (max_position_embeddings)",
                ids.len()
            )));
        }
        self.make_resident()?;
        let rope = Rope::new(self.cfg(), ids.len(), &self.device);
        let mut h = self.ends.embed(&[ids.to_vec()])?;
        let blocks = self
            .resident
            .as_deref()
            .ok_or_else(|| PareError::Internal("blocks are not resident".into()))?;
        for block in blocks {
            h = block.forward(h, &rope, &mut NoTap)?;
        }
        Ok(h)
    }
}
