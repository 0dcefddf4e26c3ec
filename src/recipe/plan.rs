//! Stage 2: a parsed [`Recipe`] plus the model's linears → a checked [`Plan`]: defaults filled,
//! every number range-checked, every target glob matched, paths resolved against the recipe's
//! folder, and the export format chosen.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::LinearSlot;
use crate::compress::Step;
use crate::compress::kit::select::tail_note;
use crate::compress::spec::{EarlierStep, ResolveCtx};
use crate::compress::{Method, MethodKind, NofM};
use crate::error::{PareError, Result};
use crate::id::LinearId;
use crate::recipe::schema::{
    CalibrationSpec, EvalSpec, ExpertCalibration, ExportFormatSpec, PropagateSpec, Recipe,
    SequentialSpec,
};
use crate::recipe::targets;

/// Calibration sequences drawn when the recipe gives no `samples`.
pub const DEFAULT_SAMPLES: usize = 128;
/// Tokens per calibration sequence / evaluation window when not given.
pub const DEFAULT_SEQ_LEN: usize = 256;
/// Largest output shard when not given: 5 GB (decimal, as Hugging Face's `max_shard_size`).
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// Everything the pipeline needs, checked against the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    /// The recipe file the plan came from.
    pub recipe_path: PathBuf,
    /// The recipe as written (relative paths unresolved), for provenance.
    pub recipe: Recipe,
    pub calibration: CalibrationPlan,
    pub steps: Vec<PlanStep>,
    pub propagate: Propagate,
    pub sequential: Sequential,
    /// `protect: [super-experts]`: a profile pass finds the super experts and every step leaves
    /// them dense (see [`crate::allocate::super_experts`]).
    pub protect_super_experts: bool,
    /// `odp:`: choose per-block β for this target fraction of skipped expert calls, on this many
    /// calibration tokens per block.
    pub odp: Option<OdpPlan>,
    pub export: ExportPlan,
    pub eval: Option<EvalPlan>,
    /// Remarks for the log and the report (e.g. a legacy export layout was chosen).
    pub notes: Vec<String>,
}

/// A resolved `odp:`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OdpPlan {
    pub skip: f64,
    pub tokens: usize,
}

/// The note a legacy sparse layout gets, naming the readers that still accept it.
pub const LEGACY_SPARSE_NOTE: &str = "export layout `{fmt}` is legacy: compressed-tensors ≥ 0.15 registers no compressor for it and transformers 5 cannot load it; compressed-tensors ≤ 0.14.0.1 (llm-compressor ≤ 0.10) decompresses it, and pare reads it back. Use `dense` for a checkpoint that transformers and vLLM load";

impl Plan {
    /// Replaces the calibration's sample count and sequence length where given (the
    /// `--samples` / `--seq-len` flags of the benches and `pare gradients`).
    pub fn override_calibration(&mut self, samples: Option<usize>, seq_len: Option<usize>) {
        if let Some(s) = samples {
            self.calibration.samples = s;
        }
        if let Some(s) = seq_len {
            self.calibration.seq_len = s;
        }
    }

    /// Checks that the files the plan reads exist: a recipe error naming the recipe and the key
    /// (`calibration.text`, `eval.text`, `eval.tasks[1]`) for the first that does not.
    pub fn check_inputs(&self) -> Result<()> {
        let exists = |key: String, p: &Path, what: &str| {
            if p.is_file() {
                Ok(())
            } else {
                Err(PareError::recipe(
                    &self.recipe_path,
                    key,
                    format!(
                        "{what} {} does not exist (paths are relative to the recipe's folder)",
                        p.display()
                    ),
                ))
            }
        };
        if let CalibSource::Text(p) = &self.calibration.source {
            exists("calibration.text".into(), p, "the calibration text")?;
        }
        if let Some(e) = &self.eval {
            exists("eval.text".into(), &e.text, "the evaluation text")?;
            for (i, t) in e.tasks.iter().enumerate() {
                exists(format!("eval.tasks[{i}]"), t, "the task file")?;
            }
        }
        Ok(())
    }

    /// True when some step quantises.
    pub fn quantises(&self) -> bool {
        self.steps.iter().any(PlanStep::quantises)
    }
}

/// Where calibration tokens come from (paths resolved).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CalibSource {
    /// Text to tokenise and sample windows from.
    Text(PathBuf),
    /// Pre-tokenised `input_ids` (int64 `[rows, cols]` safetensors); the first `samples` rows and
    /// first `seq_len` tokens of each are used.
    Ids(PathBuf),
    /// No calibration: every step is data-free (magnitude, RTN, FineQuant).
    None,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CalibrationPlan {
    pub source: CalibSource,
    pub samples: usize,
    pub seq_len: usize,
    pub seed: u64,
    /// MoE: which tokens each expert's statistics see (recipe
    /// `calibration.calibrate_all_experts`, default `auto`).
    pub experts: ExpertCalibration,
}

/// One resolved step.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlanStep {
    /// Method name as written, e.g. `"wanda"`.
    pub name: String,
    /// Key path of the step in the recipe, e.g. `steps[1].wanda` (for messages).
    pub key: String,
    pub method: Method,
    /// The linears this step compresses, in model order.
    pub targets: Vec<LinearId>,
}

impl PlanStep {
    /// True for quantisation methods (RTN, GPTQ, FineQuant).
    pub fn quantises(&self) -> bool {
        self.method.compressor().kind() == MethodKind::Quantize
    }

    /// The N:M pattern of a pruning step, if any.
    pub fn pattern(&self) -> Option<NofM> {
        match self.method.compressor().kind() {
            MethodKind::Prune { pattern } => pattern,
            MethodKind::Quantize => None,
        }
    }
}

/// How a block's linears are calibrated (recipe key `sequential`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sequential {
    /// Every linear of the block is calibrated on one pass of the dense block, then all are
    /// compressed and the compressed block is re-run (llm-compressor, the Wanda and SparseGPT
    /// references without `--true-sequential`). About two block forwards.
    Block,
    /// True-sequential: q/k/v, then o, then gate/up, then down; each group is calibrated on the
    /// inputs produced by the already compressed groups before it (the GPTQ and SparseGPT
    /// scripts' `--true-sequential`). About one block forward.
    Linear,
}

impl Sequential {
    /// The default for `steps`: `block` when any step prunes (the reference ordering wins for
    /// pruning on stories260k and tiny-llama, see the README's table), `linear` otherwise (it
    /// wins for GPTQ). Expert pruning does not count.
    pub fn default_for(steps: &[PlanStep]) -> Sequential {
        // Expert pruning removes whole experts before a block's other steps: it does not
        // choose their ordering.
        let orders = |s: &&PlanStep| !matches!(s.method, crate::compress::Method::ExpertPrune(_));
        if steps.iter().filter(orders).any(|s| !s.quantises()) {
            Sequential::Block
        } else {
            Sequential::Linear
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Propagate {
    /// Block b+1 is calibrated on the outputs of the compressed block b (the reference codes).
    Compressed,
    /// Block b+1 is calibrated on the outputs of the original block b.
    Original,
}

/// The concrete on-disk format (`compressed-tensors` in a recipe resolves to one of these).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportFormat {
    Dense,
    SparseBitmask,
    #[serde(rename = "sparse-24-bitmask")]
    Sparse24Bitmask,
    PackQuantized,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ExportPlan {
    /// The Hugging Face layout written (and evaluated).
    pub format: ExportFormat,
    pub max_shard_bytes: u64,
    /// `format: gguf`: also write `model.gguf` of this type (see [`crate::gguf`]).
    pub gguf: Option<crate::gguf::GgmlType>,
}

impl ExportPlan {
    /// The quantisation grid: the model's dtype, or with a GGUF export scales on the f16 grid
    /// GGUF stores (f32 arithmetic; an f16 model keeps its own f16 grid), so pare's codes
    /// re-pack exactly.
    pub fn grid(&self, model: crate::checkpoint::Dtype) -> crate::compress::quant::ScaleDtype {
        use crate::compress::quant::ScaleDtype;
        match (self.gguf.is_some(), ScaleDtype::from(model)) {
            (true, ScaleDtype::F16) => ScaleDtype::F16,
            (true, _) => ScaleDtype::F16Grid,
            (false, d) => d,
        }
    }

    /// The dtype the checkpoint stores scales in: the model's, or with a GGUF export f32 for a
    /// bf16 model (bf16 cannot hold the f16 grid's scales).
    pub fn scale_dtype(&self, model: crate::checkpoint::Dtype) -> crate::checkpoint::Dtype {
        use crate::checkpoint::Dtype;
        match (self.gguf.is_some(), model) {
            (true, Dtype::F16) => Dtype::F16,
            (true, _) => Dtype::F32,
            (false, d) => d,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EvalPlan {
    pub text: PathBuf,
    pub seq_len: usize,
    /// Score at most this many windows (all when `None`).
    pub max_windows: Option<usize>,
    /// Also compute KL divergence against the original model.
    pub kld: bool,
    pub tasks: Vec<PathBuf>,
}

/// Resolves `recipe` (read from `recipe_path`) against the model's `linears`.
pub fn resolve(recipe: Recipe, recipe_path: &Path, linears: &[LinearSlot]) -> Result<Plan> {
    let ctx = Ctx {
        path: recipe_path,
        base: recipe_path.parent().unwrap_or(Path::new("")),
        linears,
    };
    let calibration = resolve_calibration(&ctx, &recipe.calibration)?;
    if recipe.steps.is_empty() {
        return Err(ctx.err(
            "steps",
            "no steps: add at least one, e.g. `- wanda: { sparsity: 0.5 }`",
        ));
    }
    let mut steps: Vec<PlanStep> = Vec::with_capacity(recipe.steps.len());
    for (i, s) in recipe.steps.iter().enumerate() {
        let step = resolve_step(&ctx, i, s, &steps)?;
        steps.push(step);
    }
    if calibration.source == CalibSource::None {
        let needs = |s: &PlanStep| {
            !s.method.compressor().stats().is_empty()
                || !s.method.compressor().profilers(0, &s.targets).is_empty()
                || matches!(s.method, Method::ExpertPrune(_))
        };
        if let Some(s) = steps.iter().find(|s| needs(s)) {
            return Err(ctx.err(
                "calibration",
                format!(
                    "no calibration source: `{}` needs calibration data; give `calibration: {{ text: <file> }}` or `{{ ids: <file.safetensors> }}` (only magnitude, RTN and FineQuant run without)",
                    s.key
                ),
            ));
        }
    }
    let propagate = match recipe.propagate {
        Some(PropagateSpec::Original) => Propagate::Original,
        _ => Propagate::Compressed,
    };
    let sequential = match recipe.sequential {
        Some(SequentialSpec::Block) => Sequential::Block,
        Some(SequentialSpec::Linear) => Sequential::Linear,
        None if propagate == Propagate::Original => Sequential::Block,
        None => Sequential::default_for(&steps),
    };
    if sequential == Sequential::Linear && propagate == Propagate::Original {
        return Err(ctx.err(
            "sequential",
            "`sequential: linear` calibrates each linear group on the compressed groups before it, which needs `propagate: compressed`; use `sequential: block` with `propagate: original`",
        ));
    }
    let mut protect_super_experts = false;
    for (i, p) in recipe.protect.iter().flatten().enumerate() {
        match p.as_str() {
            "super-experts" => protect_super_experts = true,
            other => {
                return Err(ctx.err(
                    format!("protect[{i}]"),
                    format!("unknown protection `{other}`; expected `super-experts`"),
                ));
            }
        }
    }
    if protect_super_experts && calibration.source == CalibSource::None {
        return Err(ctx.err(
            "calibration",
            "no calibration source: `protect: [super-experts]` profiles the experts on calibration data; give `calibration: { text: <file> }`",
        ));
    }
    if protect_super_experts && !ctx.has_experts() {
        return Err(ctx.err(
            "protect[0]",
            "`super-experts` protects MoE experts, and this model has none",
        ));
    }
    let odp = match &recipe.odp {
        None => None,
        Some(o) => {
            if !ctx.has_experts() {
                return Err(ctx.err(
                    "odp",
                    "online dynamic pruning skips MoE expert calls, and this model has no experts",
                ));
            }
            let skip = o.skip.unwrap_or(0.0);
            if !(skip.is_finite() && (0.0..1.0).contains(&skip)) {
                return Err(ctx.err(
                    "odp.skip",
                    format!(
                        "{skip}: expected the fraction of expert calls to skip, in [0, 1), e.g. 0.2"
                    ),
                ));
            }
            if calibration.source == CalibSource::None {
                return Err(ctx.err(
                    "calibration",
                    "no calibration source: `odp` chooses each block's β on calibration data; give `calibration: { text: <file> }`",
                ));
            }
            let tokens = o.tokens.unwrap_or(crate::compress::mc_moe::DEFAULT_TOKENS);
            if tokens == 0 {
                return Err(ctx.err("odp.tokens", "must be at least 1"));
            }
            Some(OdpPlan { skip, tokens })
        }
    };
    let export_spec = recipe.export.clone().unwrap_or_default();
    let (format, gguf) = resolve_gguf(&ctx, &export_spec, &steps)?;
    let format = resolve_export_format(&ctx, format, &steps)?;
    let max_shard_bytes = match &export_spec.max_shard_size {
        None => DEFAULT_MAX_SHARD_BYTES,
        Some(s) => parse_size(s).map_err(|m| ctx.err("export.max_shard_size", m))?,
    };
    let eval = recipe
        .eval
        .as_ref()
        .map(|e| resolve_eval(&ctx, e))
        .transpose()?;
    let mut notes = Vec::new();
    match format {
        ExportFormat::SparseBitmask => {
            notes.push(LEGACY_SPARSE_NOTE.replace("{fmt}", "sparse-bitmask"))
        }
        ExportFormat::Sparse24Bitmask => {
            notes.push(LEGACY_SPARSE_NOTE.replace("{fmt}", "sparse-24-bitmask"))
        }
        ExportFormat::Dense | ExportFormat::PackQuantized => {}
    }
    Ok(Plan {
        recipe_path: recipe_path.to_path_buf(),
        recipe,
        calibration,
        steps,
        propagate,
        sequential,
        protect_super_experts,
        odp,
        export: ExportPlan {
            format,
            max_shard_bytes,
            gguf,
        },
        eval,
        notes,
    })
}

pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    base: &'a Path,
    pub(super) linears: &'a [LinearSlot],
}

impl Ctx<'_> {
    /// True when the model has MoE blocks (a router).
    fn has_experts(&self) -> bool {
        self.linears
            .iter()
            .any(|l| l.id.role == crate::id::LinearRole::Router)
    }

    pub(super) fn err(&self, key: impl Into<String>, message: impl Into<String>) -> PareError {
        PareError::recipe(self.path, key, message)
    }

    fn path_of(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn slot(&self, id: LinearId) -> Option<&LinearSlot> {
        self.linears.iter().find(|l| l.id == id)
    }
}

fn resolve_calibration(ctx: &Ctx, c: &CalibrationSpec) -> Result<CalibrationPlan> {
    let seed = c.seed.unwrap_or(0);
    let experts = c.calibrate_all_experts.unwrap_or_default();
    if let Some(0) = c.samples {
        return Err(ctx.err("calibration.samples", "samples must be at least 1"));
    }
    if let Some(n @ (0 | 1)) = c.seq_len {
        return Err(ctx.err(
            "calibration.seq_len",
            format!("seq_len {n} is too short: at least 2 tokens"),
        ));
    }
    match (&c.text, &c.ids) {
        (Some(text), None) => Ok(CalibrationPlan {
            source: CalibSource::Text(ctx.path_of(text)),
            samples: c.samples.unwrap_or(DEFAULT_SAMPLES),
            seq_len: c.seq_len.unwrap_or(DEFAULT_SEQ_LEN),
            seed,
            experts,
        }),
        (None, Some(ids)) => {
            let file = ctx.path_of(ids);
            let (rows, cols) = read_ids_shape(&file)?;
            let samples = c.samples.unwrap_or(rows);
            let seq_len = c.seq_len.unwrap_or(cols);
            if samples > rows {
                return Err(ctx.err(
                    "calibration.samples",
                    format!(
                        "samples {samples} exceeds the {rows} rows of input_ids in {}",
                        file.display()
                    ),
                ));
            }
            if seq_len > cols || seq_len < 2 {
                return Err(ctx.err(
                    "calibration.seq_len",
                    format!("seq_len {seq_len} must be between 2 and the {cols} columns of input_ids in {}", file.display()),
                ));
            }
            Ok(CalibrationPlan {
                source: CalibSource::Ids(file),
                samples,
                seq_len,
                seed,
                experts,
            })
        }
        // Data-free recipes need none; `resolve` checks that no step needs data.
        (None, None) => Ok(CalibrationPlan {
            source: CalibSource::None,
            samples: 0,
            seq_len: 0,
            seed,
            experts,
        }),
        (Some(_), Some(_)) => Err(ctx.err("calibration", "give either `text` or `ids`, not both")),
    }
}

/// Reads the shape of the int64 `input_ids` tensor from a safetensors header.
fn read_ids_shape(file: &Path) -> Result<(usize, usize)> {
    use std::io::Read;
    let mut f = std::fs::File::open(file)
        .map_err(|e| PareError::input(file, format!("cannot open calibration ids: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| PareError::input(file, format!("not a safetensors file: {e}")))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(PareError::input(
            file,
            format!("not a safetensors file: header length {n}"),
        ));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| PareError::input(file, format!("truncated safetensors header: {e}")))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| PareError::input(file, format!("bad safetensors header: {e}")))?;
    let t = json.get("input_ids").ok_or_else(|| {
        PareError::input(
            file,
            "no tensor `input_ids` (expected int64 [samples, seq_len])",
        )
    })?;
    let dtype = t.get("dtype").and_then(|d| d.as_str()).unwrap_or("?");
    let shape: Vec<u64> = t
        .get("shape")
        .and_then(|s| s.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    match (dtype, shape.as_slice()) {
        ("I64", [rows, cols]) if *rows >= 1 && *cols >= 2 => Ok((*rows as usize, *cols as usize)),
        _ => Err(PareError::input(
            file,
            format!("`input_ids` is {dtype} {shape:?}; expected I64 [samples ≥ 1, seq_len ≥ 2]"),
        )),
    }
}

/// `export: { format: gguf, type: T }`: the compressed-tensors layout written beside the GGUF and
/// the GGUF type. Every quantisation step must use a scheme GGUF holds exactly (int4 or int8,
/// symmetric, groups of 32).
fn resolve_gguf(
    ctx: &Ctx,
    spec: &crate::recipe::ExportSpec,
    steps: &[PlanStep],
) -> Result<(Option<ExportFormatSpec>, Option<crate::gguf::GgmlType>)> {
    use crate::gguf::GgmlType;
    if spec.format != Some(ExportFormatSpec::Gguf) {
        if spec.gguf_type.is_some() {
            return Err(ctx.err(
                "export.type",
                "`type` is the GGUF type and needs `format: gguf`",
            ));
        }
        return Ok((spec.format, None));
    }
    let mut default = GgmlType::F16;
    for s in steps.iter().filter(|s| s.quantises()) {
        let scheme = s.method.compressor().scheme();
        match scheme.map(|q| (q.bits, q.group_size, q.symmetric)) {
            Some((4, Some(32), true)) => default = GgmlType::Q4_0,
            Some((8, Some(32), true)) if default != GgmlType::Q4_0 => default = GgmlType::Q8_0,
            Some((8, Some(32), true)) => {}
            _ => {
                return Err(ctx.err(
                    "export.format",
                    format!(
                        "GGUF holds pare's quantised weights exactly only as Q4_0 (int4, symmetric, groups of 32) or Q8_0 (int8, symmetric, groups of 32); step `{}` uses {}. Use format int4-g32-sym or int8-g32-sym, or export `dense` and convert with `pare export --to gguf` (llama.cpp's RTN)",
                        s.key,
                        scheme.map_or("an adaptive scheme".to_string(), |q| {
                            crate::compress::formats::scheme_name(&q).map_or_else(
                                || format!("int{} group {:?} symmetric {}", q.bits, q.group_size, q.symmetric),
                                str::to_string,
                            )
                        }),
                    ),
                ));
            }
        }
    }
    let ty = match &spec.gguf_type {
        None => default,
        Some(t) => GgmlType::parse(t).ok_or_else(|| {
            ctx.err(
                "export.type",
                format!("`{t}`: expected one of f32, f16, bf16, q8_0, q4_0"),
            )
        })?,
    };
    Ok((Some(ExportFormatSpec::CompressedTensors), Some(ty)))
}

fn resolve_export_format(
    ctx: &Ctx,
    spec: Option<ExportFormatSpec>,
    steps: &[PlanStep],
) -> Result<ExportFormat> {
    let quantises = steps.iter().any(PlanStep::quantises);
    let prunes = steps.iter().any(|s| !s.quantises());
    // A linear not exactly 2:4 after the steps (no 2:4 step covers it, or its d_in leaves a
    // tail group), among all the linears any step touches.
    let two_four = Some(NofM { n: 2, m: 4 });
    let not_24 = steps.iter().flat_map(|s| s.targets.iter()).find(|id| {
        let tail = ctx
            .slot(**id)
            .is_some_and(|l| tail_note(l.cols, NofM { n: 2, m: 4 }).is_some());
        tail || !steps
            .iter()
            .any(|s| s.pattern() == two_four && s.targets.contains(id))
    });
    let key = "export.format";
    Ok(match spec.unwrap_or(ExportFormatSpec::CompressedTensors) {
        ExportFormatSpec::Dense => ExportFormat::Dense,
        // Resolved by `resolve_gguf` before this point.
        ExportFormatSpec::Gguf => ExportFormat::Dense,
        ExportFormatSpec::CompressedTensors if quantises => ExportFormat::PackQuantized,
        // Sparse-only: written dense, as llm-compressor 0.14 does (compressed-tensors ≥ 0.15 has
        // no sparse-only layout that transformers or vLLM load).
        ExportFormatSpec::CompressedTensors => ExportFormat::Dense,
        ExportFormatSpec::PackQuantized if quantises => ExportFormat::PackQuantized,
        ExportFormatSpec::PackQuantized => {
            return Err(ctx.err(key, "pack-quantized needs a quantisation step (rtn, gptq or finequant); use `dense` or `sparse-bitmask`"));
        }
        ExportFormatSpec::SparseBitmask | ExportFormatSpec::Sparse24Bitmask if quantises => {
            return Err(ctx.err(key, "quantised weights export as `pack-quantized` (or `dense`), not as a sparse bitmask"));
        }
        ExportFormatSpec::SparseBitmask if prunes => ExportFormat::SparseBitmask,
        ExportFormatSpec::SparseBitmask => {
            return Err(ctx.err(key, "sparse-bitmask needs a pruning step"));
        }
        ExportFormatSpec::Sparse24Bitmask => match not_24 {
            None => ExportFormat::Sparse24Bitmask,
            Some(id) => {
                return Err(ctx.err(
                    key,
                    format!("sparse-24-bitmask needs every targeted linear exactly 2:4 (keep 2 of every 4), but `{id}` is not (no 2:4 step covers it, or its d_in is not a multiple of 4); use `sparse-bitmask` or `dense`"),
                ));
            }
        },
    })
}

fn resolve_eval(ctx: &Ctx, e: &EvalSpec) -> Result<EvalPlan> {
    let seq_len = e.seq_len.unwrap_or(DEFAULT_SEQ_LEN);
    if seq_len < 2 {
        return Err(ctx.err(
            "eval.seq_len",
            format!("seq_len {seq_len} is too short: at least 2 tokens"),
        ));
    }
    if e.max_windows == Some(0) {
        return Err(ctx.err(
            "eval.max_windows",
            "max_windows must be at least 1 (leave it out to score every window)",
        ));
    }
    Ok(EvalPlan {
        text: ctx.path_of(&e.text),
        seq_len,
        max_windows: e.max_windows,
        kld: e.kld.unwrap_or(true),
        tasks: e.tasks.iter().flatten().map(|t| ctx.path_of(t)).collect(),
    })
}

/// Parses a size such as `5GB`, `500 MB`, `2GiB` or `1000000B`. Decimal units KB/MB/GB/TB are
/// powers of 1000, binary KiB/MiB/GiB/TiB powers of 1024; case-insensitive; must be > 0. A bare
/// number is refused (`200` is more likely 200 MB meant than 200 bytes): give the unit, `B`
/// included.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let bad = || {
        format!(
            "cannot read `{text}` as a size: expected a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. \"5GB\""
        )
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => {
            return Err(format!(
                "size `{text}` has no unit: write e.g. \"{text}MB\" or \"{text}GB\" (or \"{text}B\" for bytes)"
            ));
        }
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = (value * mult).round();
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("size `{text}` must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// Stage 2 for one step: its targets matched against the model's linears, then its method's
/// own `resolve` (in the method's folder) range-checks every parameter against those targets.
fn resolve_step(ctx: &Ctx, index: usize, step: &Step, earlier: &[PlanStep]) -> Result<PlanStep> {
    let name = step.name();
    let key = format!("steps[{index}].{name}");
    if matches!(step, Step::ExpertPrune(_)) && !ctx.has_experts() {
        return Err(ctx.err(
            key,
            "expert-prune removes MoE experts, and this model has none (no router)",
        ));
    }
    let (tg, ig) = step.selection();
    let targets = targets::select(tg, ig.unwrap_or(&[]), ctx.linears).map_err(|e| {
        let at = match e.index {
            Some(i) => format!("{key}.{}[{i}]", e.field),
            None => key.clone(),
        };
        ctx.err(at, e.message)
    })?;
    let rctx = ResolveCtx {
        recipe: ctx.path,
        key: key.clone(),
        targets: targets
            .iter()
            .filter_map(|id| ctx.linears.iter().find(|l| l.id == *id))
            .collect(),
        earlier: earlier
            .iter()
            .map(|s| EarlierStep {
                key: &s.key,
                kind: s.method.compressor().kind(),
                masks: !matches!(s.method, Method::ExpertPrune(_)),
                targets: &s.targets,
            })
            .collect(),
    };
    let method = step.resolve(&rctx)?;
    Ok(PlanStep {
        name: name.to_string(),
        key,
        method,
        targets,
    })
}
