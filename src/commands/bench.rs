//! `pare bench`: performance as ratios measured in one run on the same machine.
//!
//! * `forward`: tokens/s of the block-by-block forward, this machine's GEMM throughput through the
//!   same burn backend, and achieved model FLOP/s ÷ GEMM FLOP/s.
//! * `compress`: each recipe's total time over one plain forward pass of the same calibration set.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::calib::{CalibrationSet, SplitMix64};
use crate::error::Result;
use crate::model::to_host;
use crate::pipeline::{ModelRunner, Progress, Silent};

/// Result of `pare bench forward`.
#[derive(Clone, Debug, Serialize)]
pub struct ForwardBench {
    pub model: String,
    pub sequences: usize,
    pub seq_len: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    /// Model FLOPs per token (2·params of block linears and head + causal attention).
    pub flops_per_token: f64,
    pub model_gflops: f64,
    /// Peak of the GEMM the forward uses (pare's faer GEMM on the CPU).
    pub gemm_gflops: f64,
    /// burn's own matmul on the same shapes, for comparison.
    pub burn_gemm_gflops: f64,
    pub ratio: f64,
    pub peak_rss_bytes: u64,
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 when unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<u64>().ok())
                    .map(|kb| kb * 1024)
            })
        })
        .unwrap_or(0)
}

/// GFLOP/s of the GEMM the forward uses for an `m×k · k×n` product (best of several runs): on
/// the host pare's own ([`crate::kernels::gemm::linear`], faer), elsewhere burn's matmul.
pub fn gemm_gflops(m: usize, k: usize, n: usize, device: &Device) -> Result<f64> {
    if crate::model::on_host(device) {
        let x: Vec<f32> = (0..m * k).map(|i| ((i % 97) as f32) * 0.01 - 0.5).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i % 89) as f32) * 0.01 - 0.4).collect();
        let mut y = vec![0f32; m * n];
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            crate::kernels::gemm::linear(&x, &w, n, None, &mut y, false);
            best = best.min(t.elapsed().as_secs_f64());
        }
        return Ok(2.0 * (m * k * n) as f64 / best / 1e9);
    }
    burn_gemm_gflops(m, k, n, device)
}

/// GFLOP/s of an `m×k · k×n` matmul through burn on `device` (best of several runs).
pub fn burn_gemm_gflops(m: usize, k: usize, n: usize, device: &Device) -> Result<f64> {
    let a = Tensor::<2>::random([m, k], Distribution::Uniform(-1.0, 1.0), device);
    let b = Tensor::<2>::random([k, n], Distribution::Uniform(-1.0, 1.0), device);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.clone().matmul(b.clone());
        to_host(c.slice([0..1, 0..1]))?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
}

/// Random token windows (uniform over the vocabulary, seeded).
fn random_windows(vocab: usize, n: usize, seq: usize) -> Vec<Vec<u32>> {
    let mut rng = SplitMix64::new(0);
    (0..n)
        .map(|_| {
            (0..seq)
                .map(|_| rng.below_or_eq(vocab as u64 - 1) as u32)
                .collect()
        })
        .collect()
}

/// Model FLOPs per token at context `seq`: 2·(block linears + head) + causal attention
/// (QKᵀ and AV over on average `seq/2` positions per layer).
pub fn flops_per_token(runner: &ModelRunner, seq: usize) -> f64 {
    let c = runner.cfg();
    let linear: usize = runner
        .arch
        .all_linears()
        .iter()
        .map(|s| {
            // Experts: only top-k of them run per token.
            if s.id.role.is_expert() {
                s.rows * s.cols * c.experts_per_token / c.num_experts.max(1)
            } else {
                s.rows * s.cols
            }
        })
        .sum();
    let head = c.vocab_size * c.hidden_size;
    let attn =
        2.0 * 2.0 * c.num_layers as f64 * (seq as f64 / 2.0) * (c.num_heads * c.head_dim) as f64;
    2.0 * (linear + head) as f64 + attn
}

/// Runs `pare bench forward`.
pub fn forward(
    model: &Path,
    seq_len: usize,
    sequences: usize,
    device: &Device,
) -> Result<ForwardBench> {
    let mut runner = ModelRunner::open(model, device)?;
    runner.batch = sequences.clamp(1, 8);
    // The peak, measured first: the better of the model's largest GEMM shape and a 1024³ one.
    let (h, f) = (runner.cfg().hidden_size, runner.cfg().intermediate_size);
    let gemm = gemm_gflops(runner.batch.min(sequences) * seq_len, h, f, device)?
        .max(gemm_gflops(1024, 1024, 1024, device)?);
    let burn_gemm = burn_gemm_gflops(runner.batch.min(sequences) * seq_len, h, f, device)?
        .max(burn_gemm_gflops(1024, 1024, 1024, device)?);
    let windows = random_windows(runner.ends.vocab, sequences, seq_len);
    // Warm-up on one batch, then the timed streaming forward (blocks loaded from disk each time).
    runner.final_hidden(&windows[..runner.batch.min(windows.len())], &Silent)?;
    let t = Instant::now();
    let hidden = runner.final_hidden(&windows, &Silent)?;
    for h in hidden {
        to_host(runner.ends.logits(h)?.slice([0..1, 0..1]))?;
    }
    let seconds = t.elapsed().as_secs_f64();
    let tokens = (sequences * seq_len) as f64;
    let fpt = flops_per_token(&runner, seq_len);
    let model_gflops = fpt * tokens / seconds / 1e9;

    Ok(ForwardBench {
        model: model.display().to_string(),
        sequences,
        seq_len,
        seconds,
        tokens_per_second: tokens / seconds,
        flops_per_token: fpt,
        model_gflops,
        gemm_gflops: gemm,
        burn_gemm_gflops: burn_gemm,
        ratio: model_gflops / gemm,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// One recipe's line of `pare bench compress`.
#[derive(Clone, Debug, Serialize)]
pub struct CompressBenchRow {
    pub recipe: String,
    pub seconds: f64,
    pub ratio_to_forward: f64,
    /// Seconds in Cholesky factorisations and inverses, and their share of the total.
    pub cholesky_seconds: f64,
    pub cholesky_share: f64,
}

/// Result of `pare bench compress`.
#[derive(Clone, Debug, Serialize)]
pub struct CompressBench {
    pub model: String,
    pub samples: usize,
    pub seq_len: usize,
    /// One plain forward pass of the calibration set, block by block.
    pub forward_seconds: f64,
    pub rows: Vec<CompressBenchRow>,
    pub peak_rss_bytes: u64,
}

/// Runs `pare bench compress`: every recipe on the same calibration set, outputs in a temporary
/// folder that is removed afterwards.
pub fn compress(
    model: &Path,
    recipes: &[PathBuf],
    samples: Option<usize>,
    seq_len: Option<usize>,
    device: &Device,
    progress: &dyn Progress,
) -> Result<CompressBench> {
    let runner = ModelRunner::open(model, device)?;
    let scratch = std::env::temp_dir().join(format!("pare-bench-{}", std::process::id()));
    let mut rows = Vec::new();
    let mut forward_seconds = f64::NAN;
    let (mut used_samples, mut used_seq) = (0, 0);
    for recipe in recipes {
        let (mut plan, text) = super::compress::plan_for(&runner, recipe)?;
        plan.override_calibration(samples, seq_len);
        plan.eval = None;
        if forward_seconds.is_nan() {
            let calib: CalibrationSet =
                crate::pipeline::compress::load_calibration(&runner, &plan)?;
            used_samples = calib.ids.len();
            used_seq = calib.seq_len();
            runner.final_hidden(&calib.ids[..runner.batch.min(calib.ids.len())], &Silent)?;
            let t = Instant::now();
            runner.final_hidden(&calib.ids, &Silent)?;
            forward_seconds = t.elapsed().as_secs_f64();
        }
        let out = scratch.join(
            recipe
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default(),
        );
        let chol_before = crate::compress::timing::cholesky_seconds();
        let t = Instant::now();
        super::compress::run_with(
            &runner,
            &plan,
            &text,
            &out,
            true,
            false,
            &mut super::eval::BaseCache::default(),
            progress,
        )?;
        let seconds = t.elapsed().as_secs_f64();
        let chol = crate::compress::timing::cholesky_seconds() - chol_before;
        rows.push(CompressBenchRow {
            recipe: recipe.display().to_string(),
            seconds,
            ratio_to_forward: seconds / forward_seconds,
            cholesky_seconds: chol,
            cholesky_share: chol / seconds,
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(CompressBench {
        model: model.display().to_string(),
        samples: used_samples,
        seq_len: used_seq,
        forward_seconds,
        rows,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// `pare bench ilp`: MC-MoE's integer program on synthetic blocks.
#[derive(Debug, serde::Serialize)]
pub struct IlpBench {
    pub experts: usize,
    pub budget_bits: f64,
    pub instances: u64,
    /// [`crate::compress::mc_moe::ilp::solve`] (microlp, then the exact check).
    pub microlp_mean_seconds: f64,
    pub microlp_max_seconds: f64,
    /// Instances where microlp's answer was optimal.
    pub microlp_optimal: u64,
    pub exact_mean_seconds: f64,
}

pub fn ilp(experts: usize, budget_bits: f64, instances: u64) -> Result<IlpBench> {
    use crate::compress::mc_moe::ilp;
    let (mut sum, mut max, mut ok, mut exact) = (0.0f64, 0.0f64, 0u64, 0.0f64);
    for seed in 0..instances.max(1) {
        let p = ilp::synthetic(experts, seed, budget_bits);
        let a = ilp::solve(&p)?;
        sum += a.seconds;
        max = max.max(a.seconds);
        ok += u64::from(a.status.starts_with("microlp optimal"));
        let t = std::time::Instant::now();
        let _ = ilp::exact(&p);
        exact += t.elapsed().as_secs_f64();
    }
    let n = instances.max(1) as f64;
    Ok(IlpBench {
        experts,
        budget_bits,
        instances: instances.max(1),
        microlp_mean_seconds: sum / n,
        microlp_max_seconds: max,
        microlp_optimal: ok,
        exact_mean_seconds: exact / n,
    })
}
