//! Dispatch from a resolved [`Method`] to its compressor, what each needs from calibration, and
//! the reconstruction-error metric of the report.

use crate::compress::finequant::finequant;
use crate::compress::gptq::gptq;
use crate::compress::magnitude::magnitude;
use crate::compress::quant::ScaleDtype;
use crate::compress::rtn::quantize_rtn;
use crate::compress::sparsegpt::sparsegpt;
use crate::compress::wanda::wanda;
use crate::compress::{CompressedLinear, InputStats, Method, Needs};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

impl Method {
    /// The statistics the block loop must gather for this method.
    pub fn needs(&self) -> Needs {
        match self {
            Method::Magnitude { .. } | Method::Rtn { .. } | Method::FineQuant { .. } => Needs::NONE,
            Method::Wanda { .. } => Needs {
                sq_norms: true,
                hessian: false,
            },
            Method::SparseGpt { .. } | Method::Gptq { .. } => Needs {
                sq_norms: true,
                hessian: true,
            },
        }
    }

    /// Short method name for messages and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Magnitude { .. } => "magnitude",
            Method::Wanda { .. } => "wanda",
            Method::SparseGpt { .. } => "sparsegpt",
            Method::Rtn { .. } => "rtn",
            Method::FineQuant { .. } => "finequant",
            Method::Gptq { .. } => "gptq",
        }
    }

    /// Compresses the weight of layer `id` (`[out, in]`). `stats` must be present when
    /// [`Method::needs`] asks for anything; `dt` is the dtype the scales are stored in. Returns
    /// the compressed linear and warnings for the report (dead columns, Cholesky retries, chosen
    /// group sizes). Every error names `id`.
    pub fn apply(
        &self,
        id: &str,
        weight: &Matrix,
        stats: Option<&InputStats>,
        dt: ScaleDtype,
    ) -> Result<(CompressedLinear, Vec<String>)> {
        if weight.data.len() != weight.rows * weight.cols {
            return Err(PareError::Numerical(format!(
                "{id}: weight buffer holds {} values, expected {}×{}",
                weight.data.len(),
                weight.rows,
                weight.cols
            )));
        }
        if stats.is_none() && self.needs().any() {
            return Err(PareError::Usage(format!(
                "{id}: {} needs calibration statistics, none were gathered",
                self.name()
            )));
        }
        let need = || {
            stats.ok_or_else(|| {
                PareError::Usage(format!(
                    "{id}: {} needs calibration statistics",
                    self.name()
                ))
            })
        };
        match *self {
            Method::Magnitude { sparsity, pattern } => {
                Ok((magnitude(id, weight, sparsity, pattern)?, vec![]))
            }
            Method::Wanda { sparsity, pattern } => {
                Ok((wanda(id, weight, need()?, sparsity, pattern)?, vec![]))
            }
            Method::SparseGpt {
                sparsity,
                pattern,
                block_size,
                dampening,
            } => sparsegpt(
                id,
                weight,
                need()?,
                sparsity,
                pattern,
                block_size,
                dampening,
            ),
            Method::Rtn { scheme } => {
                let c = quantize_rtn(weight, scheme, dt).map_err(|e| name_layer(id, e))?;
                Ok((c, vec![]))
            }
            Method::FineQuant {
                bits,
                symmetric,
                max_group,
                min_group,
                threshold,
            } => finequant(
                id, weight, bits, symmetric, max_group, min_group, threshold, dt,
            ),
            Method::Gptq {
                scheme,
                block_size,
                dampening,
                actorder,
            } => gptq(
                id,
                weight,
                need()?,
                scheme,
                block_size,
                dampening,
                actorder,
                dt,
            ),
        }
    }
}

/// Prefixes a layer name to an error that does not carry one.
pub(crate) fn name_layer(id: &str, e: PareError) -> PareError {
    match e {
        PareError::Usage(m) if !m.contains(id) => PareError::Usage(format!("{id}: {m}")),
        PareError::Numerical(m) if !m.contains(id) => PareError::Numerical(format!("{id}: {m}")),
        other => other,
    }
}

/// Relative output error `‖W X − W′X‖ / ‖W X‖ = sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))` from the
/// Hessian of `stats` (exact for the calibration set). `None` without a Hessian, on a shape
/// mismatch, or when `‖W X‖ = 0`.
pub fn reconstruction_error(
    original: &Matrix,
    compressed: &Matrix,
    stats: &InputStats,
) -> Option<f64> {
    let h = stats.hessian.as_ref()?;
    let d = original.cols;
    if h.rows != d || h.cols != d || compressed.rows != original.rows || compressed.cols != d {
        return None;
    }
    use faer::{Accum, Mat, MatRef, Par};
    let rows = original.rows;
    let delta: Vec<f32> = original
        .data
        .iter()
        .zip(&compressed.data)
        .map(|(a, b)| a - b)
        .collect();
    let hm = MatRef::from_row_major_slice(&h.data, d, d);
    // Σ_r v_r H v_rᵀ = Σ (V H) ∘ V, with the GEMM in f32 and the final sum in f64.
    let quad = |v: &[f32]| -> f64 {
        let vm = MatRef::from_row_major_slice(v, rows, d);
        let mut vh = Mat::<f32>::zeros(rows, d);
        faer::linalg::matmul::matmul(vh.as_mut(), Accum::Replace, vm, hm, 1.0f32, Par::rayon(0));
        let mut sum = 0.0f64;
        for r in 0..rows {
            for j in 0..d {
                sum += vh[(r, j)] as f64 * v[r * d + j] as f64;
            }
        }
        sum
    };
    let (num, den) = (quad(&delta), quad(&original.data));
    (den > 0.0).then(|| (num.max(0.0) / den).sqrt())
}

/// Cheaper diagonal approximation of [`reconstruction_error`]: uses only `s_j = diag(H)/2`
/// (`sq_norms`), i.e. ignores correlations between input columns:
/// `sqrt(Σ_ij ΔW_ij² s_j / Σ_ij W_ij² s_j)`. Exact only for uncorrelated inputs; `None` on a
/// shape mismatch or zero denominator.
pub fn reconstruction_error_diag(
    original: &Matrix,
    compressed: &Matrix,
    stats: &InputStats,
) -> Option<f64> {
    let d = original.cols;
    if stats.sq_norms.len() != d || compressed.rows != original.rows || compressed.cols != d {
        return None;
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (a, b) in original
        .data
        .chunks(d.max(1))
        .zip(compressed.data.chunks(d.max(1)))
    {
        for j in 0..a.len() {
            let s = stats.sq_norms[j] as f64;
            let dl = (a[j] - b[j]) as f64;
            num += dl * dl * s;
            den += (a[j] as f64) * (a[j] as f64) * s;
        }
    }
    (den > 0.0).then(|| (num / den).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::hessian::tests::{correlated_x, rand_vec, stats_of};
    use crate::compress::sparsegpt::tests::rel_err;
    use crate::compress::{NofM, QuantScheme};

    fn all_methods() -> Vec<Method> {
        let scheme = QuantScheme {
            bits: 4,
            group_size: Some(16),
            symmetric: true,
        };
        vec![
            Method::Magnitude {
                sparsity: 0.5,
                pattern: None,
            },
            Method::Wanda {
                sparsity: 0.0,
                pattern: Some(NofM { n: 2, m: 4 }),
            },
            Method::SparseGpt {
                sparsity: 0.5,
                pattern: None,
                block_size: 16,
                dampening: 0.01,
            },
            Method::Rtn { scheme },
            Method::FineQuant {
                bits: 4,
                symmetric: true,
                max_group: 0,
                min_group: 16,
                threshold: 0.1,
            },
            Method::Gptq {
                scheme,
                block_size: 16,
                dampening: 0.01,
                actorder: true,
            },
        ]
    }

    #[test]
    fn every_method_runs_and_missing_stats_are_named() {
        let (rows, d, t) = (8, 32, 96);
        let x = correlated_x(91, t, d);
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(92, rows * d));
        for m in all_methods() {
            let (c, _) = m
                .apply("blocks.0.mlp.up", &w, Some(&s), ScaleDtype::F32)
                .unwrap();
            assert_eq!((c.weight.rows, c.weight.cols), (rows, d));
            let quantised = matches!(
                m,
                Method::Rtn { .. } | Method::FineQuant { .. } | Method::Gptq { .. }
            );
            assert_eq!(c.quant.is_some(), quantised, "{}", m.name());
            if m.needs().any() {
                let e = m
                    .apply("blocks.0.mlp.up", &w, None, ScaleDtype::F32)
                    .unwrap_err();
                assert!(e.to_string().contains("blocks.0.mlp.up"), "{e}");
            } else {
                assert!(m.apply("x", &w, None, ScaleDtype::F32).is_ok());
            }
        }
        assert!(
            Method::Gptq {
                scheme: QuantScheme {
                    bits: 4,
                    group_size: None,
                    symmetric: true
                },
                block_size: 8,
                dampening: 0.01,
                actorder: false
            }
            .needs()
            .hessian
        );
        assert_eq!(
            Method::Wanda {
                sparsity: 0.5,
                pattern: None
            }
            .needs(),
            Needs {
                sq_norms: true,
                hessian: false
            }
        );
    }

    #[test]
    fn reconstruction_error_equals_output_error() {
        let (rows, d, t) = (5, 12, 40);
        let x = correlated_x(93, t, d);
        let s = stats_of(&x, t, d);
        let w = Matrix::from_vec(rows, d, rand_vec(94, rows * d));
        let (c, _) = Method::Magnitude {
            sparsity: 0.5,
            pattern: None,
        }
        .apply("l", &w, None, ScaleDtype::F32)
        .unwrap();
        let direct = rel_err(&w, &c.weight, &x, t);
        let via_h = reconstruction_error(&w, &c.weight, &s).unwrap();
        assert!(
            (direct - via_h).abs() < 1e-4 * direct,
            "{direct} vs {via_h}"
        );
        let diag = reconstruction_error_diag(&w, &c.weight, &s).unwrap();
        assert!(diag > 0.0 && diag.is_finite());
        let no_h = InputStats {
            hessian: None,
            ..s.clone()
        };
        assert!(reconstruction_error(&w, &c.weight, &no_h).is_none());
        // Diagonal variant is exact for uncorrelated (one-hot) inputs.
        let eye: Vec<f32> = (0..d * d)
            .map(|k| if k / d == k % d { 1.0 } else { 0.0 })
            .collect();
        let s_eye = stats_of(&eye, d, d);
        let a = reconstruction_error(&w, &c.weight, &s_eye).unwrap();
        let b = reconstruction_error_diag(&w, &c.weight, &s_eye).unwrap();
        assert!((a - b).abs() < 1e-9);
    }
}

#[cfg(test)]
mod real_data {
    use super::*;
    use crate::compress::QuantScheme;
    use crate::compress::hessian::StatsAccumulator;
    use safetensors::SafeTensors;

    const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/models/stories260k/");

    fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
        let t = st.tensor(name).unwrap();
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// stories260k block 0: the exact q_proj input (RMSNorm of the embeddings of the reference
    /// calibration ids) and the real q_proj weight.
    #[test]
    fn method_ordering_on_stories260k_q_proj() {
        let model = std::fs::read(format!("{MODEL}model.safetensors")).unwrap();
        let ids = std::fs::read(format!("{MODEL}reference.calib_ids.safetensors")).unwrap();
        let (model, ids) = (
            SafeTensors::deserialize(&model).unwrap(),
            SafeTensors::deserialize(&ids).unwrap(),
        );
        let emb = f32s(&model, "model.embed_tokens.weight");
        let gamma = f32s(&model, "model.layers.0.input_layernorm.weight");
        let wq = Matrix::from_vec(
            64,
            64,
            f32s(&model, "model.layers.0.self_attn.q_proj.weight"),
        );
        let ids: Vec<usize> = ids
            .tensor("input_ids")
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect();
        let d = 64;
        let mut acc = StatsAccumulator::new(
            d,
            Needs {
                sq_norms: true,
                hessian: true,
            },
        );
        let mut x = vec![0f32; 256 * d];
        for seq in ids.chunks(256) {
            for (t, &id) in seq.iter().enumerate() {
                let e = &emb[id * d..(id + 1) * d];
                let rms = (e.iter().map(|v| v * v).sum::<f32>() / d as f32 + 1e-5).sqrt();
                for j in 0..d {
                    x[t * d + j] = e[j] / rms * gamma[j];
                }
            }
            acc.observe(&x, seq.len(), 1);
        }
        let s = acc.finish();
        assert_eq!((s.n_seqs, s.n_tokens), (128, 128 * 256));
        let err = |m: Method| {
            let (c, _) = m
                .apply("blocks.0.attn.q", &wq, Some(&s), ScaleDtype::F32)
                .unwrap();
            reconstruction_error(&wq, &c.weight, &s).unwrap()
        };
        let mag = err(Method::Magnitude {
            sparsity: 0.5,
            pattern: None,
        });
        let wan = err(Method::Wanda {
            sparsity: 0.5,
            pattern: None,
        });
        let sgpt = err(Method::SparseGpt {
            sparsity: 0.5,
            pattern: None,
            block_size: 128,
            dampening: 0.01,
        });
        // On this layer per-matrix magnitude (uneven rows allowed) beats per-row Wanda on the
        // layer error (≈0.10 vs ≈0.13), so only SparseGPT's lead is asserted.
        assert!(
            sgpt < wan && sgpt < mag,
            "sparsegpt {sgpt} wanda {wan} magnitude {mag}"
        );
        let scheme = QuantScheme {
            bits: 4,
            group_size: None,
            symmetric: true,
        };
        let rtn = err(Method::Rtn { scheme });
        let gptq = err(Method::Gptq {
            scheme,
            block_size: 128,
            dampening: 0.01,
            actorder: true,
        });
        assert!(gptq < rtn, "gptq {gptq} rtn {rtn}");
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use crate::compress::hessian::StatsAccumulator;
    use crate::compress::hessian::tests::rand_vec;
    use crate::compress::{NofM, QuantScheme};
    use std::time::Instant;

    /// Timings at tiny-llama scale (128 × 512 calibration tokens): `cargo test --lib
    /// compress::apply::bench -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn tiny_llama_scale_timings() {
        let tokens_per_batch = 4096;
        for (d, rows) in [(320usize, 864usize), (864, 320)] {
            let x = rand_vec(1, tokens_per_batch * d);
            let t0 = Instant::now();
            let mut acc = StatsAccumulator::new(
                d,
                Needs {
                    sq_norms: true,
                    hessian: true,
                },
            );
            for _ in 0..16 {
                acc.observe(&x, tokens_per_batch, 8);
            }
            let s = acc.finish();
            let t_h = t0.elapsed();
            let t0 = Instant::now();
            let mut acc = StatsAccumulator::new(
                d,
                Needs {
                    sq_norms: true,
                    hessian: false,
                },
            );
            for _ in 0..16 {
                acc.observe(&x, tokens_per_batch, 8);
            }
            let t_sq = t0.elapsed();
            let w = Matrix::from_vec(rows, d, rand_vec(2, rows * d));
            let scheme = QuantScheme {
                bits: 4,
                group_size: Some(32),
                symmetric: true,
            };
            let methods = [
                Method::Magnitude {
                    sparsity: 0.5,
                    pattern: None,
                },
                Method::Wanda {
                    sparsity: 0.5,
                    pattern: None,
                },
                Method::SparseGpt {
                    sparsity: 0.5,
                    pattern: None,
                    block_size: 128,
                    dampening: 0.01,
                },
                Method::SparseGpt {
                    sparsity: 0.5,
                    pattern: Some(NofM { n: 2, m: 4 }),
                    block_size: 128,
                    dampening: 0.01,
                },
                Method::Gptq {
                    scheme,
                    block_size: 128,
                    dampening: 0.01,
                    actorder: true,
                },
                Method::FineQuant {
                    bits: 4,
                    symmetric: true,
                    max_group: 0,
                    min_group: 32,
                    threshold: 0.1,
                },
            ];
            eprintln!("d_in {d} rows {rows}: Σx²+XᵀX over 65536 tokens {t_h:?}; Σx² only {t_sq:?}");
            for m in methods {
                let t0 = Instant::now();
                m.apply("bench", &w, Some(&s), ScaleDtype::BF16).unwrap();
                eprintln!("  {:<10} {:?}", m.name(), t0.elapsed());
            }
            let t0 = Instant::now();
            reconstruction_error(&w, &w, &s);
            eprintln!("  reconstruction_error {:?}", t0.elapsed());
        }
    }
}
