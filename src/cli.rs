//! Command-line definitions (clap derive) — no logic here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The help heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// pare: post-training compression of large language models.
#[derive(Parser, Debug)]
#[command(name = "pare", version, about, long_about = None)]
pub struct Cli {
    /// Compute device: cpu, vulkan or vulkan:N (vulkan needs a build with `--features vulkan`).
    #[arg(long, global = true, default_value = "cpu", help_heading = GLOBAL)]
    pub device: String,
    /// Worker threads for CPU work (default: all cores).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub threads: Option<usize>,
    /// Only errors on stderr (no progress bars or warnings); on success `compress` and
    /// `compare` print only the output path, `eval --report DIR` only DIR (`--json` still prints
    /// the JSON).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    /// Go on when the input weights hold NaN/Inf (refused by default, exit 2); the report says
    /// which tensors. Methods that build a Hessian (SparseGPT, GPTQ) still stop on them.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub allow_non_finite: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Compress a checkpoint with a YAML recipe.
    Compress(CompressArgs),
    /// Perplexity, KL-divergence against a base model, and task suites.
    Eval(EvalArgs),
    /// Run several recipes on one model and compare them side by side.
    Compare(CompareArgs),
    /// Show a checkpoint's architecture and every linear layer; with `--super-experts`, profile
    /// the MoE experts' down_proj outputs on calibration text and list the super experts.
    Inspect {
        /// Model directory (Hugging Face layout).
        dir: PathBuf,
        /// Run the Super-Experts profile (arXiv 2507.23279) on `--calib` text.
        #[arg(long, requires = "calib")]
        super_experts: bool,
        /// Calibration text for `--super-experts` (random windows of it).
        #[arg(long)]
        calib: Option<PathBuf>,
        /// Calibration windows.
        #[arg(long, default_value_t = 128)]
        samples: usize,
        /// Tokens per calibration window.
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        /// Seed of the window sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// List the sparsity patterns and quantisation formats pare knows.
    Formats,
    /// Convert a checkpoint (one pare wrote, or any supported Hugging Face checkpoint) to
    /// another format; today GGUF for llama.cpp.
    Export(ExportArgs),
    /// The streamed gradient pass (GBLM): per-weight sqrt(Σ_n (α·∂L_n/∂W)²) of the dense model
    /// over a recipe's calibration, written as a reusable artefact (`gblm: { gradients: FILE }`).
    Gradients(GradientsArgs),
    /// Benchmarks that report ratios measured in one run.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Input model directory (Hugging Face layout, dense or pack-quantized).
    #[arg(long)]
    pub model: PathBuf,
    /// Output format: `gguf`.
    #[arg(long, default_value = "gguf")]
    pub to: String,
    /// GGUF type: f32, f16, bf16, q8_0 or q4_0. pare's int4/int8 symmetric group-32 linears are
    /// re-packed as Q4_0/Q8_0 exactly whatever the type; other float matrices are converted, or
    /// quantised with llama.cpp's RTN for q8_0/q4_0.
    #[arg(long = "type", default_value = "f16")]
    pub ty: String,
    /// Output file (default: `<model>/model-<type>.gguf`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct GradientsArgs {
    /// Input model directory (the dense model).
    #[arg(long)]
    pub model: PathBuf,
    /// Recipe whose `calibration:` block the pass runs over.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Output file (safetensors, F32 `[out, in]` per linear); not inside the model folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Gradient scale α (the reference's `--scale`).
    #[arg(long, default_value_t = 100.0)]
    pub alpha: f32,
    /// Override the recipe's calibration sample count.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Override the recipe's calibration sequence length.
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct CompressArgs {
    /// Input model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Recipe YAML file.
    #[arg(long)]
    pub recipe: PathBuf,
    /// Output directory (must not exist unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Largest safetensors shard, e.g. 5GB (decimal) or 500MiB; overrides the recipe.
    #[arg(long)]
    pub max_shard_size: Option<String>,
    /// Print the recipe as pare applies it (an llm-compressor recipe translated into pare's
    /// vocabulary), checked against the model, and stop without compressing.
    #[arg(long)]
    pub explain: bool,
    /// Continue a run that was killed (SIGKILL, power loss, Ctrl-C) from its last finished block,
    /// from the state kept in `.<out>.pare-resume/` beside the output; the output is the same,
    /// byte for byte, as an uninterrupted run's.
    #[arg(long)]
    pub resume: bool,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model directory to evaluate.
    #[arg(long)]
    pub model: PathBuf,
    /// Dense reference model for KL-divergence and agreement.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Text file for perplexity.
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Window length in tokens (default: min(max_position_embeddings, 512)).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// Use at most this many windows.
    #[arg(long)]
    pub max_windows: Option<usize>,
    /// Task files (JSONL, see eval/README.md).
    #[arg(long, num_args = 1..)]
    pub tasks: Vec<PathBuf>,
    /// Write report.{json,md,html} into this directory (an existing report is an error unless
    /// --force).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Replace an existing report in the --report directory.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Input model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Recipes to run. All share the first recipe's calibration and eval blocks.
    #[arg(long = "recipe", required = true)]
    pub recipes: Vec<PathBuf>,
    /// Output directory: one folder per recipe plus comparison.{json,md,html}.
    #[arg(long)]
    pub out: PathBuf,
    /// Evaluation text for every run (default: the first recipe's eval text).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// Task files evaluated on every compressed model.
    #[arg(long, num_args = 1..)]
    pub tasks: Vec<PathBuf>,
    /// Re-run recipes whose output already exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Block-by-block forward throughput vs the GEMM peak of this machine.
    Forward {
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        #[arg(long, default_value_t = 16)]
        sequences: usize,
    },
    /// Compression time of recipes over one plain calibration forward pass.
    Compress {
        #[arg(long)]
        model: PathBuf,
        #[arg(long = "recipe", required = true)]
        recipes: Vec<PathBuf>,
        /// Override the recipes' calibration sample count.
        #[arg(long)]
        samples: Option<usize>,
        /// Override the recipes' calibration sequence length.
        #[arg(long)]
        seq_len: Option<usize>,
    },
    /// The streamed gradient pass's time over one plain forward of the same calibration.
    Gradients {
        #[arg(long)]
        model: PathBuf,
        /// Recipe whose `calibration:` block is used.
        #[arg(long)]
        recipe: PathBuf,
        #[arg(long)]
        samples: Option<usize>,
        #[arg(long)]
        seq_len: Option<usize>,
    },
    /// MC-MoE's bit-allocation integer program on a synthetic block: solve time of good_lp +
    /// microlp and of the exact dynamic program, widths 2/3/4.
    Ilp {
        /// Experts in the block.
        #[arg(long, default_value_t = 128)]
        experts: usize,
        /// Average bits per expert.
        #[arg(long, default_value_t = 2.5)]
        budget_bits: f64,
        /// Instances (different seeds) timed.
        #[arg(long, default_value_t = 5)]
        instances: u64,
    },
}
