//! FineQuant (Kim, Henry, Fahim, Awadalla 2023, arXiv 2308.09723; ALGORITHMS.md §9): data-free
//! RTN weight quantisation whose group size is chosen per matrix.
//!
//! The paper's abstract states only that a weight-only heuristic "adaptively finds the
//! granularity of quantization" to avoid the catastrophic error outliers cause at coarse
//! granularity; its exact test is not public in a form we could check (no code; see §15). Our
//! rule, chosen to catch exactly that failure:
//!
//! 1. Start coarse: one group per output channel (`max_group = 0`) or `max_group` columns.
//! 2. Quantise with RTN (min-max, the same grid as [`crate::compress::rtn`]).
//! 3. Test: cut every row into tiles of `min_group` columns; a row's error is the RMS over its
//!    tiles of the tile's relative error `‖w_t − ŵ_t‖₂ / ‖w_t‖₂`; the matrix passes when the
//!    worst row's error is ≤ `threshold` (default 0.1). An outlier inflates its group's scale so
//!    the rest of the group rounds to few levels or to zero: those tiles' relative error goes to
//!    ≈ 1, which a row- or matrix-wide ratio would hide behind the outlier's own energy.
//! 4. Failing: halve the group (it must stay ≥ `min_group` and divide `d_in`) and repeat. If even
//!    the finest allowed group fails, it is used anyway and a warning says so.
//!
//! For Gaussian-like weights this error is ≈ 0.15 per channel and ≈ 0.1 at group 64–128 in int4
//! (so int4 settles near the paper's tuned block of 64), and ≈ 0.01 in int8 (per channel unless a
//! row has an outlier ≳ 10× its typical magnitude).
//!
//! Recipe: `- finequant: { bits: 4, min_group: 64, threshold: 0.1 }`.

pub mod math;

use serde::{Deserialize, Serialize};

use crate::compress::formats;
use crate::compress::kit::rtn::quantize_rtn;
use crate::compress::quant::ScaleDtype;
use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, LinearInput, LinearOutput, MethodKind, QuantScheme,
};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;
use crate::stats::StatSet;

/// The name recipes use.
pub const NAME: &str = "finequant";

/// FineQuant's finest group when not given.
pub const DEFAULT_MIN_GROUP: usize = 64;
/// FineQuant's acceptance threshold when not given.
pub const DEFAULT_THRESHOLD: f32 = 0.1;

/// `finequant:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Bits per weight; a width from the format table (4 or 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symmetric: Option<bool>,
    /// Coarsest group tried; 0 = one group per output channel (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_group: Option<usize>,
    /// Finest group allowed (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_group: Option<usize>,
    /// Acceptance threshold of the data-free granularity test (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked FineQuant parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    pub bits: u8,
    pub symmetric: bool,
    pub max_group: usize,
    pub min_group: usize,
    pub threshold: f32,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        let supported = formats::supported_bits();
        let bits = match self.bits {
            None => {
                return Err(ctx.err(
                    "bits",
                    format!("required: bits per weight, one of {supported:?}"),
                ));
            }
            Some(b) if !supported.contains(&b) => {
                return Err(ctx.err(
                    "bits",
                    format!("{b} bits is not in the format table; use one of {supported:?}"),
                ));
            }
            Some(b) => b,
        };
        let min_group = self.min_group.unwrap_or(DEFAULT_MIN_GROUP);
        let max_group = self.max_group.unwrap_or(0);
        if min_group == 0 {
            return Err(ctx.err("min_group", "min_group must be at least 1"));
        }
        if max_group != 0 && max_group < min_group {
            return Err(ctx.err(
                "max_group",
                format!("max_group {max_group} is below min_group {min_group} (0 means one group per output channel)"),
            ));
        }
        if max_group != 0 {
            ctx.group_divides("max_group", max_group, "max_group")?;
        }
        let threshold = self.threshold.unwrap_or(f64::from(DEFAULT_THRESHOLD));
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(ctx.err(
                "threshold",
                format!("threshold {threshold} must be a positive number"),
            ));
        }
        Ok(Params {
            bits,
            symmetric: self.symmetric.unwrap_or(true),
            max_group,
            min_group,
            threshold: threshold as f32,
        })
    }
}

impl Compressor for Params {
    fn kind(&self) -> MethodKind {
        MethodKind::Quantize
    }

    fn stats(&self) -> StatSet {
        StatSet::EMPTY
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let (weight, quant, notes) = finequant(input.weight(), self, input.scale_dtype)?;
        Ok(LinearOutput::new(CompressedLinear {
            weight,
            mask: input.current.mask.clone(),
            quant: Some(quant),
        })
        .with_notes(notes))
    }
}

/// FineQuant-quantises `w`; `max_group = 0` starts per channel. Returns the dequantised weight,
/// its integer form (whose scheme holds the chosen group size) and notes.
pub fn finequant(
    w: &Matrix,
    p: &Params,
    dt: ScaleDtype,
) -> Result<(Matrix, crate::compress::QuantizedWeight, Vec<String>)> {
    let start = (p.max_group > 0).then_some(p.max_group);
    let candidates = math::candidate_groups(w.cols, start, p.min_group);
    let mut last = None;
    for group_size in candidates {
        let scheme = QuantScheme {
            bits: p.bits,
            group_size,
            symmetric: p.symmetric,
        };
        let (deq, q) = quantize_rtn(w, scheme, dt)?;
        let err = math::worst_row_tile_error(w, &deq, p.min_group);
        if err <= p.threshold as f64 {
            return Ok((deq, q, vec![]));
        }
        last = Some((deq, q, err));
    }
    match last {
        Some((deq, q, err)) => {
            let g = q
                .scheme
                .group_size
                .map_or("per-channel".to_string(), |g| g.to_string());
            let note = format!(
                "finequant: no group size ≥ {} met the threshold {}; using group {g} (worst row error {err:.3})",
                p.min_group, p.threshold
            );
            Ok((deq, q, vec![note]))
        }
        None => Err(PareError::Internal(
            "finequant found no group size to try".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::tests::rand_vec;

    fn params(bits: u8, min_group: usize, threshold: f32) -> Params {
        Params {
            bits,
            symmetric: true,
            max_group: 0,
            min_group,
            threshold,
        }
    }

    #[test]
    fn outlier_forces_finer_groups_and_clean_matrix_stays_coarse() {
        let (rows, d) = (8, 256);
        let clean = Matrix::from_vec(rows, d, rand_vec(81, rows * d));
        let (_, q, notes) = finequant(&clean, &params(8, 64, 0.1), ScaleDtype::F32).unwrap();
        assert!(notes.is_empty());
        assert_eq!(q.scheme.group_size, None);
        let mut out = clean.clone();
        out.data[3 * d + 5] = 400.0; // a huge outlier in row 3
        let (deq, q, _) = finequant(&out, &params(8, 32, 0.1), ScaleDtype::F32).unwrap();
        let g = q.scheme.group_size;
        assert!(matches!(g, Some(g) if g < d), "{g:?}");
        assert!(math::worst_row_tile_error(&out, &deq, 32) <= 0.1);
    }

    #[test]
    fn notes_when_finest_group_still_fails() {
        let w = Matrix::from_vec(2, 64, rand_vec(82, 128));
        let (_, q, notes) = finequant(&w, &params(2, 32, 0.01), ScaleDtype::F32).unwrap();
        assert_eq!(q.scheme.group_size, Some(32));
        assert!(notes[0].contains("no group size"), "{notes:?}");
    }
}
