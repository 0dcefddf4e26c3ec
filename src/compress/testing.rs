//! Test helpers: a linear with its statistics, as the block loop would hand it to a compressor.

use std::collections::BTreeMap;

use crate::allocate::LinearSettings;
use crate::compress::quant::ScaleDtype;
use crate::compress::{CompressedLinear, Compressor, LinearInput, LinearOutput};
use crate::id::{LinearId, LinearRole};
use crate::matrix::Matrix;
use crate::model::TapPoint;
use crate::stats::{PointStats, Stats};

/// One linear (`blocks.0.attn.q`, input at `AttnIn`) with optional input statistics.
pub struct Fixture {
    pub original: Matrix,
    pub current: CompressedLinear,
    pub stats: Stats,
    pub settings: LinearSettings,
    /// The linear's gradient magnitudes (GBLM), `[out, in]`.
    pub gradients: Option<Vec<f32>>,
    /// A mask learned before the block loop (end-to-end MaskLLM), `true` = pruned.
    pub mask: Option<Vec<bool>>,
}

impl Fixture {
    pub fn input(&self) -> LinearInput<'_> {
        LinearInput {
            id: LinearId::new(0, LinearRole::Q),
            original: &self.original,
            current: &self.current,
            stats: &self.stats,
            point: TapPoint::AttnIn,
            settings: &self.settings,
            scale_dtype: ScaleDtype::F32,
            gradients: self.gradients.as_deref(),
            mask: self.mask.as_deref(),
            factors: None,
        }
    }
}

/// `w` with no statistics (for data-free methods).
pub fn fixture(w: &Matrix) -> Fixture {
    Fixture {
        original: w.clone(),
        current: CompressedLinear::dense(w.clone()),
        stats: Stats::default(),
        settings: LinearSettings::default(),
        gradients: None,
        mask: None,
    }
}

/// `w` with `stats` at its input.
pub fn fixture_with(w: &Matrix, stats: PointStats) -> Fixture {
    Fixture {
        stats: Stats::new(BTreeMap::from([(TapPoint::AttnIn, stats)]), None),
        ..fixture(w)
    }
}

/// Runs `c` on the fixture's linear, panicking on error (tests only).
pub fn run(c: &dyn Compressor, f: &Fixture) -> LinearOutput {
    match c.compress(&f.input()) {
        Ok(o) => o,
        Err(e) => panic!("compress failed: {e}"),
    }
}
