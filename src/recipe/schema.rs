//! The recipe as written: serde structs mirroring the YAML one to one (`deny_unknown_fields`
//! everywhere), with no checks beyond types. [`crate::recipe::plan`] turns it into a `Plan`.
//!
//! Steps are written as one-key maps, `- wanda: { sparsity: 0.5 }` (no YAML tags, see CRATES.md
//! §b). While deserializing, the containers record where they are in a thread-local key path
//! (`steps[1].wanda`) so that a parse error can name the key, not just the line.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::compress::{METHOD_NAMES, Step};
use crate::recipe::suggest;

/// A whole recipe file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Calibration data: `text` (tokenised and sampled) or `ids` (pre-tokenised).
    /// Absent: only for recipes whose steps need no data (magnitude, RTN, FineQuant).
    #[serde(
        default,
        skip_serializing_if = "CalibrationSpec::is_empty",
        deserialize_with = "de_calibration"
    )]
    pub calibration: CalibrationSpec,
    /// Ordered steps; a method may appear more than once.
    #[serde(deserialize_with = "de_steps")]
    pub steps: Vec<Step>,
    /// Whether block b+1 is calibrated on the outputs of the compressed (default) or the original
    /// block b.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_propagate"
    )]
    pub propagate: Option<PropagateSpec>,
    /// How statistics are gathered inside a block: `block` (every linear calibrated on the dense
    /// block's inputs, then the block compressed at once: the llm-compressor and Wanda reference
    /// ordering) or `linear` (true-sequential: q/k/v, then o, then gate/up, then down, each group
    /// calibrated on the already compressed groups before it). Default: `block` when any step
    /// prunes, `linear` otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_sequential"
    )]
    pub sequential: Option<SequentialSpec>,
    /// What no step may touch: `[super-experts]` keeps the MoE experts that a profile pass
    /// finds to carry the massive activations dense and at full precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protect: Option<Vec<String>>,
    /// MC-MoE's online dynamic expert pruning, a routing policy written to the output
    /// (see [`crate::compress::mc_moe::odp`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odp: Option<OdpSpec>,
    /// Output format and shard size.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_export"
    )]
    pub export: Option<ExportSpec>,
    /// Evaluation after compressing.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_eval"
    )]
    pub eval: Option<EvalSpec>,
}

/// `calibration:`. Exactly one of `text` / `ids`. Paths are relative to the recipe's folder.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSpec {
    /// A UTF-8 text file; samples are random token windows of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A safetensors file holding `input_ids`, int64 `[samples, seq_len]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// MoE models: which tokens an expert's statistics see (the block's output always uses only
    /// the routed experts). `true`: every calibration token (llm-compressor's "calibrate all
    /// experts"); `false`: the tokens routed to it; `auto` (default): the routed tokens when
    /// there are at least as many as the expert's widest input, otherwise every token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrate_all_experts: Option<ExpertCalibration>,
}

impl CalibrationSpec {
    /// True when nothing is given (the block is absent or `{}`).
    pub fn is_empty(&self) -> bool {
        *self == CalibrationSpec::default()
    }
}

/// `calibration.calibrate_all_experts`: `true`, `false` or `auto`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpertCalibration {
    /// Every expert sees every calibration token.
    All,
    /// Every expert sees the tokens routed to it.
    Routed,
    /// Routed tokens for an expert that got at least as many as its widest input (its Hessian
    /// can be full-rank), every token for the others.
    #[default]
    Auto,
}

impl Serialize for ExpertCalibration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpertCalibration::All => s.serialize_bool(true),
            ExpertCalibration::Routed => s.serialize_bool(false),
            ExpertCalibration::Auto => s.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for ExpertCalibration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExpertCalibration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true, false or auto")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<ExpertCalibration, E> {
                Ok(if b {
                    ExpertCalibration::All
                } else {
                    ExpertCalibration::Routed
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpertCalibration, E> {
                match v {
                    "auto" => Ok(ExpertCalibration::Auto),
                    "true" => Ok(ExpertCalibration::All),
                    "false" => Ok(ExpertCalibration::Routed),
                    other => Err(E::custom(format!(
                        "`{other}`: expected true, false or auto"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `propagate:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PropagateSpec {
    Compressed,
    Original,
}

/// `sequential:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SequentialSpec {
    Block,
    Linear,
}

/// `odp:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdpSpec {
    /// Target fraction of expert calls to skip, in [0, 1) (e.g. 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip: Option<f64>,
    /// Calibration tokens per block β is chosen on (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
}

/// `export:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ExportFormatSpec>,
    /// Largest shard, e.g. `"5GB"`, `"500MiB"` or a byte count (default 5GB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shard_size: Option<String>,
    /// `format: gguf` only: the GGUF type, `f32`, `f16`, `bf16`, `q8_0` or `q4_0` (default: `q4_0`
    /// after an int4-g32-sym step, `q8_0` after int8-g32-sym, else `f16`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub gguf_type: Option<String>,
}

/// `export.format`. `compressed-tensors` picks the best compressed-tensors format automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFormatSpec {
    #[serde(rename = "dense")]
    Dense,
    #[serde(rename = "sparse-bitmask")]
    SparseBitmask,
    #[serde(rename = "sparse-24-bitmask")]
    Sparse24Bitmask,
    #[serde(rename = "pack-quantized")]
    PackQuantized,
    #[serde(rename = "compressed-tensors")]
    CompressedTensors,
    /// A llama.cpp GGUF file (`model.gguf`) beside the compressed-tensors checkpoint.
    #[serde(rename = "gguf")]
    Gguf,
}

/// `eval:`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Text scored for perplexity (and KLD against the original model).
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_windows: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kld: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<String>>,
}

// ---- key-path tracking ---------------------------------------------------------------------

thread_local! {
    static KEY_PATH: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Clears the recorded key path (call before each parse).
pub(crate) fn reset_key_path() {
    KEY_PATH.with(|p| p.borrow_mut().clear());
}

/// The key path recorded at the point of failure, as segments (`["steps", "[1]", "wanda"]`).
pub(crate) fn take_key_path() -> Vec<String> {
    KEY_PATH.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// Runs `f` with `segment` appended to the key path; on success the segment is removed again,
/// on failure it stays so the error can name where it happened.
fn tracked<T, E>(segment: impl Into<String>, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    KEY_PATH.with(|p| p.borrow_mut().push(segment.into()));
    let r = f();
    if r.is_ok() {
        KEY_PATH.with(|p| p.borrow_mut().pop());
    }
    r
}

macro_rules! tracked_field {
    ($fn:ident, $key:literal, $ty:ty) => {
        fn $fn<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            tracked($key, || <$ty>::deserialize(d))
        }
    };
}

tracked_field!(de_calibration, "calibration", CalibrationSpec);
tracked_field!(de_propagate, "propagate", Option<PropagateSpec>);
tracked_field!(de_sequential, "sequential", Option<SequentialSpec>);
tracked_field!(de_export, "export", Option<ExportSpec>);
tracked_field!(de_eval, "eval", Option<EvalSpec>);

fn de_steps<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Step>, D::Error> {
    struct StepsVisitor;
    impl<'de> Visitor<'de> for StepsVisitor {
        type Value = Vec<Step>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of steps, e.g. `- wanda: { sparsity: 0.5 }`")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Step>, A::Error> {
            let mut steps = Vec::new();
            loop {
                let i = steps.len();
                match tracked(format!("[{i}]"), || seq.next_element::<Step>())? {
                    Some(s) => steps.push(s),
                    None => return Ok(steps),
                }
            }
        }
    }
    tracked("steps", || d.deserialize_seq(StepsVisitor))
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StepVisitor)
    }
}

struct StepVisitor;

impl<'de> Visitor<'de> for StepVisitor {
    type Value = Step;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "a map with one method name ({}), e.g. `- wanda: {{ sparsity: 0.5 }}`",
            METHOD_NAMES.join(", ")
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Step, E> {
        Err(E::custom(format!(
            "a step is a method name with its parameters: write `- {v}: {{ … }}`, not `- {v}`"
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
        let Some(name) = map.next_key::<String>()? else {
            return Err(de::Error::custom(format!(
                "empty step: name a method ({})",
                METHOD_NAMES.join(", ")
            )));
        };
        let step = tracked(name.clone(), || match Step::read(&name, &mut map)? {
            Some(step) => Ok(step),
            None => Err(de::Error::custom(format!(
                "unknown method `{name}`{} (methods: {})",
                suggest::did_you_mean(&name, METHOD_NAMES),
                METHOD_NAMES.join(", ")
            ))),
        })?;
        if let Some(extra) = map.next_key::<String>()? {
            return Err(de::Error::custom(format!(
                "a step holds exactly one method, but `{name}` is followed by `{extra}`: start a new list item (`- {extra}: …`)"
            )));
        }
        Ok(step)
    }
}
