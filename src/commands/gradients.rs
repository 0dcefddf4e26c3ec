//! `pare gradients`: the streamed gradient pass on its own, writing the artefact GBLM reads
//! (`gblm: { gradients: FILE }`), like llama.cpp's `llama-imatrix`; and `pare bench gradients`,
//! its time over one plain forward of the same calibration.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;

use crate::error::{PareError, Result};
use crate::pipeline::gradients::{GradientSummary, gradient_pass};
use crate::pipeline::{ModelRunner, Progress, Silent};

/// What to compute.
#[derive(Clone, Debug)]
pub struct GradientsRequest {
    pub model: PathBuf,
    /// The recipe whose `calibration:` block the pass runs over.
    pub recipe: PathBuf,
    pub out: PathBuf,
    pub alpha: f32,
    pub force: bool,
    /// Override the recipe's calibration sample count / sequence length.
    pub samples: Option<usize>,
    pub seq_len: Option<usize>,
}

fn calibration(
    runner: &ModelRunner,
    recipe: &Path,
    samples: Option<usize>,
    seq_len: Option<usize>,
) -> Result<crate::calib::CalibrationSet> {
    let (mut plan, _) = super::compress::plan_for(runner, recipe)?;
    plan.override_calibration(samples, seq_len);
    plan.check_inputs()?;
    crate::pipeline::compress::load_calibration(runner, &plan)
}

/// Runs `pare gradients`. The output must not exist (unless `force`) and must not lie inside
/// the model's folder (loaders that read every `*.safetensors` there would take it for weights).
pub fn run(
    req: &GradientsRequest,
    device: &Device,
    progress: &dyn Progress,
) -> Result<GradientSummary> {
    let runner = ModelRunner::open(&req.model, device)?;
    let model_dir = req
        .model
        .canonicalize()
        .unwrap_or_else(|_| req.model.clone());
    let out_parent = req
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from(".").canonicalize().unwrap_or_default());
    if out_parent.starts_with(&model_dir) {
        return Err(PareError::Usage(format!(
            "--out {}: inside the model folder {}; loaders that read every *.safetensors there \
             would take the gradients for weights. Write it elsewhere",
            req.out.display(),
            req.model.display()
        )));
    }
    if req.out.exists() && !req.force {
        return Err(PareError::Usage(format!(
            "--out {} exists; pass --force to replace it",
            req.out.display()
        )));
    }
    let calib = calibration(&runner, &req.recipe, req.samples, req.seq_len)?;
    gradient_pass(&runner, &calib, req.alpha, &req.out, progress)
}

/// `pare bench gradients`: the pass against one plain forward of the same calibration set.
#[derive(Debug, serde::Serialize)]
pub struct GradientsBench {
    pub model: String,
    pub samples: usize,
    pub seq_len: usize,
    pub forward_seconds: f64,
    pub gradient_seconds: f64,
    pub ratio_to_forward: f64,
    pub mean_loss: f64,
    pub peak_rss_bytes: u64,
}

pub fn bench(
    model: &Path,
    recipe: &Path,
    samples: Option<usize>,
    seq_len: Option<usize>,
    device: &Device,
    progress: &dyn Progress,
) -> Result<GradientsBench> {
    let runner = ModelRunner::open(model, device)?;
    let calib = calibration(&runner, recipe, samples, seq_len)?;
    runner.final_hidden(&calib.ids[..runner.batch.min(calib.ids.len())], &Silent)?;
    let t = Instant::now();
    runner.final_hidden(&calib.ids, &Silent)?;
    let forward_seconds = t.elapsed().as_secs_f64();
    let scratch = std::env::temp_dir().join(format!(
        "pare-bench-gradients-{}.safetensors",
        std::process::id()
    ));
    let t = Instant::now();
    let summary = gradient_pass(
        &runner,
        &calib,
        crate::gradients::DEFAULT_ALPHA,
        &scratch,
        progress,
    );
    let gradient_seconds = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&scratch);
    let summary = summary?;
    Ok(GradientsBench {
        model: model.display().to_string(),
        samples: calib.ids.len(),
        seq_len: calib.seq_len(),
        forward_seconds,
        gradient_seconds,
        ratio_to_forward: gradient_seconds / forward_seconds,
        mean_loss: summary.mean_loss,
        peak_rss_bytes: super::bench::peak_rss_bytes(),
    })
}
