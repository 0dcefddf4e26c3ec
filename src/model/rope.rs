//! Rotary position embeddings in Hugging Face's half-split layout, with `llama3` frequency
//! scaling. Frequencies are computed in f32 as transformers does.

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::HfConfig;

/// Precomputed `cos`/`sin` tables of shape `[max_len, head_dim]`.
#[derive(Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
    /// The same tables on the host, row-major `[max_len, head_dim]`, for the CPU kernels.
    cos_host: std::sync::Arc<Vec<f32>>,
    sin_host: std::sync::Arc<Vec<f32>>,
    head_dim: usize,
}

/// Inverse frequencies `1/θ^(2i/d)` (with llama3 scaling when configured).
pub fn inv_freq(cfg: &HfConfig) -> Vec<f32> {
    let d = cfg.head_dim;
    let mut inv: Vec<f32> = (0..d / 2)
        .map(|i| 1.0 / (cfg.rope_theta as f32).powf((2 * i) as f32 / d as f32))
        .collect();
    if let Some(s) = &cfg.rope_scaling {
        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
        for f in inv.iter_mut() {
            let wavelen = 2.0 * std::f64::consts::PI / *f as f64;
            let scaled = if wavelen < high_wavelen {
                *f as f64
            } else if wavelen > low_wavelen {
                *f as f64 / s.factor
            } else {
                let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                    / (s.high_freq_factor - s.low_freq_factor);
                (1.0 - smooth) * *f as f64 / s.factor + smooth * *f as f64
            };
            *f = scaled as f32;
        }
    }
    inv
}

impl Rope {
    /// Tables for positions `0..max_len`.
    pub fn new(cfg: &HfConfig, max_len: usize, device: &Device) -> Self {
        let inv = inv_freq(cfg);
        let d = cfg.head_dim;
        let mut cos = Vec::with_capacity(max_len * d);
        let mut sin = Vec::with_capacity(max_len * d);
        for p in 0..max_len {
            for half in 0..2 {
                let _ = half;
                for f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        // `cos` was filled as [p][half][i]: exactly cat(freqs, freqs) per position.
        let (cos_host, sin_host) = (std::sync::Arc::new(cos), std::sync::Arc::new(sin));
        let cos = Tensor::<2>::from_data(TensorData::new(cos_host.to_vec(), [max_len, d]), device);
        let sin = Tensor::<2>::from_data(TensorData::new(sin_host.to_vec(), [max_len, d]), device);
        Self {
            cos,
            sin,
            cos_host,
            sin_host,
            head_dim: d,
        }
    }

    /// Rotates `x` of shape `[batch, heads, seq, head_dim]` (positions `0..seq`).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let half = self.head_dim / 2;
        let cos = self.cos.clone().slice([0..s]).reshape([1, 1, s, d]);
        let sin = self.sin.clone().slice([0..s]).reshape([1, 1, s, d]);
        let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..half]);
        let x2 = x.clone().slice([0..b, 0..h, 0..s, half..d]);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * cos + rotated * sin
    }

    /// The host tables `(cos, sin)`, row-major `[max_len, head_dim]`.
    pub fn host_tables(&self) -> (&[f32], &[f32]) {
        (&self.cos_host, &self.sin_host)
    }

    /// The device the tables live on.
    pub fn device(&self) -> Device {
        self.cos.device()
    }

    /// Longest sequence the tables cover.
    pub fn max_len(&self) -> usize {
        self.cos.dims()[0]
    }
}
