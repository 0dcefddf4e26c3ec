//! Round-to-nearest (RTN): min-max scales per group, each weight rounded on the grid. Data-free;
//! the baseline every quantiser is measured against (llm-compressor's `QuantizationModifier`,
//! byte for byte).
//!
//! Recipe: `- rtn: { format: int4-g128-sym }` (any quantisation row of `pare formats`).

use serde::{Deserialize, Serialize};

use crate::compress::kit::rtn::quantize_rtn;
use crate::compress::MethodSpec;
use crate::compress::spec::ResolveCtx;
use crate::compress::{
    CompressedLinear, Compressor, LinearInput, LinearOutput, MethodKind, QuantScheme, scheme_fields,
};
use crate::error::Result;
use crate::stats::StatSet;

/// The name recipes use.
pub const NAME: &str = "rtn";

/// `rtn:` as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// A quantisation format from the format table, e.g. `int4-g128-sym`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore: Option<Vec<String>>,
}

/// Checked RTN parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    #[serde(serialize_with = "scheme_fields")]
    pub scheme: QuantScheme,
}

impl MethodSpec for Spec {
    type Params = Params;

    fn selection(&self) -> (Option<&[String]>, Option<&[String]>) {
        (self.targets.as_deref(), self.ignore.as_deref())
    }

    fn resolve(&self, ctx: &ResolveCtx<'_>) -> Result<Params> {
        Ok(Params {
            scheme: ctx.quant_scheme("format", self.format.as_deref())?,
        })
    }
}

impl Compressor for Params {
    fn scheme(&self) -> Option<QuantScheme> {
        Some(self.scheme)
    }
    fn kind(&self) -> MethodKind {
        MethodKind::Quantize
    }

    fn stats(&self) -> StatSet {
        StatSet::EMPTY
    }

    fn compress(&self, input: &LinearInput<'_>) -> Result<LinearOutput> {
        let (weight, q) =
            quantize_rtn(input.weight(), input.scheme(self.scheme), input.scale_dtype)?;
        Ok(LinearOutput::new(CompressedLinear {
            weight,
            mask: input.current.mask.clone(),
            quant: Some(q),
        }))
    }
}
