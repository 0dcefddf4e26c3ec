//! Calibration data: a text tokenised once and cut into `samples` seeded random windows of
//! `seq_len` tokens (the reference loaders' convention, ALGORITHMS.md §0.1), or pre-tokenised ids
//! from a safetensors file (int64 `input_ids [samples, seq_len]`) so that a run can be reproduced
//! exactly across tools.
//!
//! The random windows use pare's own SplitMix64 generator, not Python's Mersenne Twister: the
//! windows are drawn the same way (uniform start in `[0, len − seq_len − 1]`) but are not the
//! same windows as llm-compressor's. Use an ids file for token-exact parity.

use std::path::Path;

use crate::error::{PareError, Result};
use crate::tokenizer::TextTokenizer;

/// The calibration sequences, all `seq_len` long.
#[derive(Clone, Debug)]
pub struct CalibrationSet {
    pub ids: Vec<Vec<u32>>,
    /// Where they came from, for provenance.
    pub source: String,
    pub seed: u64,
}

/// SplitMix64: small, fast, well-distributed; enough for picking windows.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform integer in `0..=max` (rejection sampling, no modulo bias).
    pub fn below_or_eq(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        let n = max + 1;
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// Draws `samples` windows of `seq_len` tokens from `ids` with `seed`.
pub fn sample_windows(
    ids: &[u32],
    samples: usize,
    seq_len: usize,
    seed: u64,
) -> Option<Vec<Vec<u32>>> {
    if ids.len() <= seq_len {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let max_start = (ids.len() - seq_len - 1) as u64;
    Some(
        (0..samples)
            .map(|_| {
                let i = rng.below_or_eq(max_start) as usize;
                ids[i..i + seq_len].to_vec()
            })
            .collect(),
    )
}

impl CalibrationSet {
    /// Tokenises `path` once with `tok` and draws the windows.
    pub fn from_text(
        path: &Path,
        tok: &TextTokenizer,
        samples: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PareError::input(path, format!("cannot read calibration text: {e}")))?;
        let ids = tok.encode_document(&text, true)?;
        let windows = sample_windows(&ids, samples, seq_len, seed).ok_or_else(|| {
            PareError::input(
                path,
                format!(
                    "calibration text has {} tokens; it must be longer than one window of seq_len {seq_len}",
                    ids.len()
                ),
            )
        })?;
        Ok(Self {
            ids: windows,
            source: path.display().to_string(),
            seed,
        })
    }

    /// Reads int64 `input_ids [samples, seq_len]` from a safetensors file; keeps the first
    /// `samples` rows and the first `seq_len` tokens of each when given.
    pub fn from_ids_file(
        path: &Path,
        samples: Option<usize>,
        seq_len: Option<usize>,
        vocab: usize,
    ) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| PareError::input(path, format!("cannot read ids file: {e}")))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| PareError::input(path, format!("not a safetensors file: {e}")))?;
        let t = st
            .tensor("input_ids")
            .map_err(|_| PareError::input(path, "expected a tensor named `input_ids`"))?;
        let shape = t.shape().to_vec();
        if t.dtype() != safetensors::Dtype::I64 || shape.len() != 2 || shape[1] < 2 {
            return Err(PareError::input(
                path,
                format!(
                    "`input_ids` must be I64 [samples, seq_len ≥ 2]; found {:?} {:?}",
                    t.dtype(),
                    shape
                ),
            ));
        }
        let (rows, full_cols) = (shape[0], shape[1]);
        let cols = seq_len.unwrap_or(full_cols);
        if cols > full_cols || cols < 2 {
            return Err(PareError::input(
                path,
                format!("asked for seq_len {cols}; the file's rows hold {full_cols} tokens"),
            ));
        }
        let take = samples.unwrap_or(rows);
        if take > rows || take == 0 {
            return Err(PareError::input(
                path,
                format!("asked for {take} samples; the file holds {rows}"),
            ));
        }
        let data = t.data();
        let mut ids = Vec::with_capacity(take);
        for r in 0..take {
            let mut row = Vec::with_capacity(cols);
            for c in 0..cols {
                let o = (r * full_cols + c) * 8;
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[o..o + 8]);
                let v = i64::from_le_bytes(b);
                if v < 0 || v as usize >= vocab {
                    return Err(PareError::input(
                        path,
                        format!("input_ids[{r}][{c}] = {v} is outside the vocabulary of {vocab}"),
                    ));
                }
                row.push(v as u32);
            }
            ids.push(row);
        }
        Ok(Self {
            ids,
            source: path.display().to_string(),
            seed: 0,
        })
    }

    pub fn seq_len(&self) -> usize {
        self.ids.first().map(Vec::len).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_seeded_and_in_range() {
        let ids: Vec<u32> = (0..100).collect();
        let a = sample_windows(&ids, 5, 10, 7).unwrap();
        let b = sample_windows(&ids, 5, 10, 7).unwrap();
        assert_eq!(a, b);
        for w in &a {
            assert_eq!(w.len(), 10);
            assert_eq!(w[9] - w[0], 9, "windows are contiguous");
            assert!(w[9] <= 98, "start ≤ len − seq_len − 1");
        }
        assert_ne!(a, sample_windows(&ids, 5, 10, 8).unwrap());
        assert!(sample_windows(&ids, 1, 100, 0).is_none());
    }

    #[test]
    fn reads_the_reference_ids() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/models/stories260k/reference.calib_ids.safetensors"
        ));
        let c = CalibrationSet::from_ids_file(p, None, None, 512).unwrap();
        assert_eq!((c.ids.len(), c.seq_len()), (128, 256));
    }
}
