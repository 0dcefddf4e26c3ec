//! The one `Report` written by `pare compress` and `pare eval` (report.json), and the pieces it is
//! made of. Every struct is plain data with `Default`, so callers fill what they have.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Everything one run of pare produced; rendered to JSON, Markdown and HTML.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub provenance: Provenance,
    /// Perplexity and KLD; `None` when no evaluation was run.
    #[serde(default)]
    pub quality: Option<Quality>,
    /// Task scores (multiple choice, QA, retrieval, agreement).
    #[serde(default)]
    pub tasks: Vec<TaskResult>,
    /// The same task scores as lm-evaluation-harness's `results` subtree:
    /// `{"<task>": {"alias": .., "acc,none": x, "acc_stderr,none": y, ..}}` (`Null` when no tasks).
    #[serde(default)]
    pub lm_eval_results: serde_json::Value,
    /// One row per compressed linear, in model order.
    #[serde(default)]
    pub linears: Vec<LinearReport>,
    /// MoE: one row per (block, expert) whose linears a step compressed: the calibration tokens
    /// routed to it and used for its statistics, and any data-free fallback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experts: Vec<ExpertReport>,
    /// Static expert pruning: per MoE block, the experts kept (original indices) and the
    /// saliencies they were ranked by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expert_pruning: Vec<ExpertPruneReport>,
    /// The GGUF file written beside the checkpoint (`export.format: gguf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gguf: Option<crate::gguf::GgufReport>,
    /// Wall time per decoder block.
    #[serde(default)]
    pub blocks: Vec<BlockTiming>,
    /// Per-linear settings decided before the block loop (overrides, protected linears), when
    /// any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<serde_json::Value>,
    #[serde(default)]
    pub totals: Totals,
    /// Free-form remarks (protocol differences, skipped layers …).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Where the numbers came from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// "pare".
    pub tool: String,
    /// `crate::VERSION`.
    pub version: String,
    /// The model evaluated or written (path or name).
    pub model: String,
    /// The dense reference model, when there is one.
    #[serde(default)]
    pub base_model: Option<String>,
    /// The recipe text as given (YAML), when compressing.
    #[serde(default)]
    pub recipe: Option<String>,
    #[serde(default)]
    pub calibration: Option<CalibrationInfo>,
    /// RFC 3339 timestamp supplied by the caller.
    pub date: String,
    /// Host name, CPU and thread count in one line.
    pub machine: String,
}

/// The calibration set of a compression run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CalibrationInfo {
    /// Text file the samples were drawn from.
    pub source: String,
    pub samples: usize,
    pub seq_len: usize,
    pub seed: u64,
    /// Calibration tokens (the first ones) each linear's `rel_error` is measured on: 1/16 of
    /// all, clamped to 128–1,024. 0 in reports written before it was recorded.
    #[serde(default)]
    pub error_tokens: usize,
}

/// Perplexity of the evaluated model, optionally of the base model, and KLD between them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    pub perplexity: PerplexityStats,
    #[serde(default)]
    pub base_perplexity: Option<PerplexityStats>,
    #[serde(default)]
    pub kld: Option<KldStats>,
    /// MC-MoE online dynamic pruning: the expert calls the evaluated model's routing policy
    /// skipped (absent without a policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odp: Option<OdpStats>,
}

/// Expert calls the ODP routing policy looked at and skipped during one evaluation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OdpStats {
    /// Top-k expert calls the router chose, over every MoE block with a policy.
    pub expert_calls: u64,
    pub skipped: u64,
    pub skipped_fraction: f64,
}

/// Perplexity under the pruning-paper protocol (CRATES.md §2.4).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerplexityStats {
    /// The evaluation text file.
    pub text: String,
    pub seq_len: usize,
    pub windows: usize,
    pub predicted_tokens: u64,
    pub mean_nll: f64,
    pub ppl: f64,
}

/// A value with its uncertainty (standard error of the mean unless stated otherwise).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub unc: f64,
}

/// KL-divergence and token-probability statistics of the evaluated model (Q) against the base,
/// with the fields of llama.cpp's `llama-perplexity --kl-divergence` (CRATES.md §2.2).
///
/// Probabilities, Δp and the correlation are stored as fractions (llama.cpp prints them as %).
/// Key → llama.cpp label:
///
/// | key | llama.cpp |
/// |---|---|
/// | `mean_ppl_q` | Mean PPL(Q) |
/// | `mean_ppl_base` | Mean PPL(base) |
/// | `cor_ln_ppl` | Cor(ln(PPL(Q)), ln(PPL(base))) |
/// | `mean_ln_ppl_ratio` | Mean ln(PPL(Q)/PPL(base)) |
/// | `mean_ppl_ratio` | Mean PPL(Q)/PPL(base) |
/// | `mean_ppl_diff` | Mean PPL(Q)-PPL(base) |
/// | `mean_kld` | Mean KLD |
/// | `max_kld`, `kld_p99_9`, `kld_p99`, `kld_p95`, `kld_p90`, `median_kld`, `kld_p10`, `kld_p5`, `kld_p1`, `kld_p0_1`, `min_kld` | Maximum KLD, 99.9% KLD, 99.0% KLD, 95.0% KLD, 90.0% KLD, Median KLD, 10.0% KLD, 5.0% KLD, 1.0% KLD, 0.1% KLD, Minimum KLD |
/// | `mean_delta_p` | Mean Δp |
/// | `max_delta_p`, `delta_p_p99_9`, `delta_p_p99`, `delta_p_p95`, `delta_p_p90`, `delta_p_p75`, `median_delta_p`, `delta_p_p25`, `delta_p_p10`, `delta_p_p5`, `delta_p_p1`, `delta_p_p0_1`, `min_delta_p` | Maximum Δp, 99.9% Δp, 99.0% Δp, 95.0% Δp, 90.0% Δp, 75.0% Δp, Median Δp, 25.0% Δp, 10.0% Δp, 5.0% Δp, 1.0% Δp, 0.1% Δp, Minimum Δp |
/// | `rms_delta_p` | RMS Δp |
/// | `same_top_p` | Same top p |
///
/// `tokens` (the number of scored positions) has no llama.cpp line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KldStats {
    pub tokens: u64,
    pub mean_ppl_q: Estimate,
    pub mean_ppl_base: Estimate,
    pub cor_ln_ppl: f64,
    pub mean_ln_ppl_ratio: Estimate,
    pub mean_ppl_ratio: Estimate,
    pub mean_ppl_diff: Estimate,
    pub mean_kld: Estimate,
    pub max_kld: f64,
    pub kld_p99_9: f64,
    pub kld_p99: f64,
    pub kld_p95: f64,
    pub kld_p90: f64,
    pub median_kld: f64,
    pub kld_p10: f64,
    pub kld_p5: f64,
    pub kld_p1: f64,
    pub kld_p0_1: f64,
    pub min_kld: f64,
    pub mean_delta_p: Estimate,
    pub max_delta_p: f64,
    pub delta_p_p99_9: f64,
    pub delta_p_p99: f64,
    pub delta_p_p95: f64,
    pub delta_p_p90: f64,
    pub delta_p_p75: f64,
    pub median_delta_p: f64,
    pub delta_p_p25: f64,
    pub delta_p_p10: f64,
    pub delta_p_p5: f64,
    pub delta_p_p1: f64,
    pub delta_p_p0_1: f64,
    pub min_delta_p: f64,
    pub rms_delta_p: Estimate,
    pub same_top_p: Estimate,
}

impl KldStats {
    /// The KLD percentile lines in llama.cpp order: (label, value).
    pub fn kld_lines(&self) -> [(&'static str, f64); 11] {
        [
            ("Maximum KLD", self.max_kld),
            ("99.9% KLD", self.kld_p99_9),
            ("99.0% KLD", self.kld_p99),
            ("95.0% KLD", self.kld_p95),
            ("90.0% KLD", self.kld_p90),
            ("Median KLD", self.median_kld),
            ("10.0% KLD", self.kld_p10),
            ("5.0% KLD", self.kld_p5),
            ("1.0% KLD", self.kld_p1),
            ("0.1% KLD", self.kld_p0_1),
            ("Minimum KLD", self.min_kld),
        ]
    }

    /// The Δp percentile lines in llama.cpp order: (label, value as a fraction).
    pub fn delta_p_lines(&self) -> [(&'static str, f64); 13] {
        [
            ("Maximum Δp", self.max_delta_p),
            ("99.9% Δp", self.delta_p_p99_9),
            ("99.0% Δp", self.delta_p_p99),
            ("95.0% Δp", self.delta_p_p95),
            ("90.0% Δp", self.delta_p_p90),
            ("75.0% Δp", self.delta_p_p75),
            ("Median Δp", self.median_delta_p),
            ("25.0% Δp", self.delta_p_p25),
            ("10.0% Δp", self.delta_p_p10),
            ("5.0% Δp", self.delta_p_p5),
            ("1.0% Δp", self.delta_p_p1),
            ("0.1% Δp", self.delta_p_p0_1),
            ("Minimum Δp", self.min_delta_p),
        ]
    }
}

/// A metric value and its standard error (`None` when it cannot be estimated, e.g. n < 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    pub value: f64,
    #[serde(default)]
    pub stderr: Option<f64>,
}

/// Scores of one task file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Task name (from the file header).
    pub name: String,
    /// `multiple_choice`, `qa`, `retrieval` or `agreement`.
    pub kind: String,
    /// Number of items scored.
    pub n: usize,
    /// Metric name (`acc`, `acc_norm`, `em`, `f1` …) → value.
    pub metrics: BTreeMap<String, MetricValue>,
    /// The same metrics of the base model, when one was given (agreement tasks have none: they
    /// already compare with the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_metrics: Option<BTreeMap<String, MetricValue>>,
}

/// One compressed linear layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LinearReport {
    /// Canonical id, e.g. `blocks.3.mlp.down`.
    pub id: String,
    /// `[rows, cols]` = `[out, in]`.
    pub shape: [usize; 2],
    /// Method(s) applied, e.g. `wanda 2:4 + gptq int4-g128-sym`.
    pub method: String,
    /// Fraction of exact zeros in the effective weight.
    pub sparsity: f64,
    /// Bits per weight when quantised.
    #[serde(default)]
    pub bits: Option<f32>,
    /// The N:M pattern a pruning step applied (`"2:4"`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// False when d_in is not a multiple of M, so the last group of each row is a shorter tail
    /// group and the layer is not exactly N:M.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern_exact: Option<bool>,
    /// ‖WX − W′X‖ / ‖WX‖ on the calibration inputs, when measured.
    #[serde(default)]
    pub rel_error: Option<f64>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The experts one MoE block kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpertPruneReport {
    pub block: usize,
    /// `reap`, `frequency` or `random`.
    pub saliency: String,
    /// Original indices of the kept experts; kept expert `i` of the output is `kept[i]`.
    pub kept: Vec<usize>,
    /// Per original expert: its saliency, and the calibration tokens routed to it.
    pub scores: Vec<f64>,
    pub tokens_routed: Vec<u64>,
}

/// How one MoE expert was calibrated.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpertReport {
    pub block: usize,
    pub expert: usize,
    /// Calibration tokens the router sent to this expert (top-k membership).
    pub tokens_routed: u64,
    /// Tokens its statistics were gathered on (all calibration tokens when calibrating all
    /// experts; 0 for a data-free step alone).
    pub tokens_for_statistics: u64,
    /// Steps that fell back to their data-free form for lack of tokens, e.g.
    /// `gptq → rtn (up, gate, down)`.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// Wall time of one decoder block.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockTiming {
    pub block: usize,
    pub seconds: f64,
}

/// Whole-run totals.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub seconds: f64,
    /// Time spent in model forwards, when measured.
    #[serde(default)]
    pub forward_seconds: Option<f64>,
    /// Parameter count of the model.
    pub params: u64,
    /// Bytes of all compressible linears, dense (as stored before compression).
    pub bytes_linear_before: u64,
    /// Bytes of the same linears as written.
    pub bytes_linear_after: u64,
    /// Bytes of the same linears in the most compact compressed-tensors layout for the result
    /// (pack-quantized when quantised, else the smaller of dense, sparse-bitmask and
    /// sparse-24-bitmask): what a deployment stores, whatever `export` wrote.
    #[serde(default)]
    pub bytes_linear_compact: Option<u64>,
}

impl Totals {
    /// Compact (else written) linear bytes over dense ones, or `None` when nothing was counted.
    pub fn size_ratio(&self) -> Option<f64> {
        let after = self.bytes_linear_compact.unwrap_or(self.bytes_linear_after);
        (self.bytes_linear_before > 0).then(|| after as f64 / self.bytes_linear_before as f64)
    }
}
