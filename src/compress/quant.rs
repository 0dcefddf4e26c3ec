//! The integer quantisation grid, emulating compressed-tensors bit for bit (ALGORITHMS.md §12.3):
//! min-max scale/zero-point of one group, quantise one value, dequantise one value.
//!
//! compressed-tensors does every step in the weight's dtype (`calculate_qparams` on the observed
//! min/max, then `x / scale + zp`, clamp, `torch.round`). Each torch op on BF16/F16 computes in
//! f32 and rounds the result once, which is what [`ScaleDtype::round`] after every f32 op
//! reproduces. RTN and GPTQ both use these functions so their grids agree.

use crate::compress::QuantScheme;

/// The dtype the scales (and the intermediate `w / scale`) live in: the model's float dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScaleDtype {
    F32,
    BF16,
    F16,
    /// f32 arithmetic with every scale rounded to f16: the grid of a GGUF export from an f32 or
    /// bf16 model (GGUF `Q4_0`/`Q8_0` store f16 scales, so the codes then re-pack exactly and
    /// the dequantised weights `q · scale` are the f32 products llama.cpp computes).
    F16Grid,
}

impl From<safetensors::Dtype> for ScaleDtype {
    /// The scale dtype of a tensor dtype: BF16 and F16 as themselves, anything else as F32.
    fn from(d: safetensors::Dtype) -> Self {
        match d {
            safetensors::Dtype::BF16 => ScaleDtype::BF16,
            safetensors::Dtype::F16 => ScaleDtype::F16,
            _ => ScaleDtype::F32,
        }
    }
}

impl ScaleDtype {
    /// Rounds `x` to this dtype (round to nearest, ties to even) and back to f32. Always inlined:
    /// GPTQ's per-column loop calls it twice per weight from a CPU-feature-specialised function.
    #[inline(always)]
    pub fn round(self, x: f32) -> f32 {
        match self {
            ScaleDtype::F32 | ScaleDtype::F16Grid => x,
            ScaleDtype::BF16 => half::bf16::from_f32(x).to_f32(),
            ScaleDtype::F16 => half::f16::from_f32(x).to_f32(),
        }
    }

    /// Rounds a scale: to f16 for [`ScaleDtype::F16Grid`], else as [`ScaleDtype::round`].
    #[inline]
    pub fn round_scale(self, x: f32) -> f32 {
        match self {
            ScaleDtype::F16Grid => half::f16::from_f32(x).to_f32(),
            d => d.round(x),
        }
    }

    /// Machine epsilon of this dtype (`torch.finfo(dtype).eps`): the scale that replaces 0.
    pub fn eps(self) -> f32 {
        match self {
            // 2^-23 is an f16 (subnormal) too.
            ScaleDtype::F32 | ScaleDtype::F16Grid => f32::EPSILON,
            ScaleDtype::BF16 => half::bf16::EPSILON.to_f32(),
            ScaleDtype::F16 => half::f16::EPSILON.to_f32(),
        }
    }
}

/// Quantisation parameters of one group: `w ≈ (q − zero_point) · scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    /// Scale, already representable in the scale dtype.
    pub scale: f32,
    /// Signed zero-point; 0 when symmetric.
    pub zero_point: i32,
}

/// Min-max parameters of one group of values (compressed-tensors `calculate_qparams`).
///
/// The observed min/max are widened to include 0. Symmetric: `scale = amax / ((qmax − qmin)/2)`
/// (int4: `amax / 7.5`). Asymmetric: `scale = (max − min)/(qmax − qmin)`,
/// `zp = round(clamp(qmin − min/scale, qmin, qmax))`. Every op is rounded to `dt`. A zero scale
/// (an all-zero group) is replaced by `dt`'s epsilon, as compressed-tensors ≥ 0.12 does (older
/// versions clamped to f32 epsilon; the two differ only for groups with amax < 1e-6).
pub fn minmax_params(values: &[f32], scheme: &QuantScheme, dt: ScaleDtype) -> GroupParams {
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for &v in values {
        // NaN compares false and is skipped, like torch.amin would not; non-finite weights are
        // rejected upstream.
        if v < lo {
            lo = v;
        }
        if v > hi {
            hi = v;
        }
    }
    let (qmin, qmax) = (scheme.qmin(), scheme.qmax());
    let bit_range = (qmax - qmin) as f32;
    let (scale, zero_point) = if scheme.symmetric {
        let amax = lo.abs().max(hi.abs());
        (dt.round_scale(amax / (bit_range / 2.0)), 0)
    } else {
        let scale = dt.round_scale(dt.round(hi - lo) / bit_range);
        let zp = if scale == 0.0 {
            0
        } else {
            let z = dt.round(qmin as f32 - dt.round(lo / scale));
            z.clamp(qmin as f32, qmax as f32).round_ties_even() as i32
        };
        (scale, zp)
    };
    let scale = if scale == 0.0 { dt.eps() } else { scale };
    GroupParams { scale, zero_point }
}

/// Quantises one value: `round_half_even(clamp(w/scale + zp, qmin, qmax))`, with `w/scale` and
/// the addition rounded to `dt` (clamp before rounding, as compressed-tensors does).
#[inline(always)]
pub fn quantize_value(w: f32, p: GroupParams, scheme: &QuantScheme, dt: ScaleDtype) -> i32 {
    let mut s = dt.round(w / p.scale);
    if p.zero_point != 0 {
        s = dt.round(s + p.zero_point as f32);
    }
    let (qmin, qmax) = (scheme.qmin() as f32, scheme.qmax() as f32);
    if s.is_nan() {
        return 0;
    }
    s.clamp(qmin, qmax).round_ties_even() as i32
}

/// Dequantises one integer: `(q − zp) · scale` in f32 (round the result to the model dtype with
/// [`ScaleDtype::round`] to get what compressed-tensors' fake-quant forward produces).
#[inline]
pub fn dequantize_value(q: i32, p: GroupParams) -> f32 {
    (q - p.zero_point) as f32 * p.scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int4(symmetric: bool) -> QuantScheme {
        QuantScheme {
            bits: 4,
            group_size: Some(4),
            symmetric,
        }
    }

    #[test]
    fn symmetric_int4_uses_amax_over_7_5() {
        let p = minmax_params(&[0.5, -1.5, 0.25, 0.0], &int4(true), ScaleDtype::F32);
        assert_eq!(
            p,
            GroupParams {
                scale: 0.2,
                zero_point: 0
            }
        );
        let s = int4(true);
        // -1.5 / 0.2 = -7.5 → ties to even → -8 (in range [-8, 7]).
        assert_eq!(quantize_value(-1.5, p, &s, ScaleDtype::F32), -8);
        // 1.5/0.2 = 7.5 → clamp to 7 first → 7.
        assert_eq!(quantize_value(1.5, p, &s, ScaleDtype::F32), 7);
        // 0.5/0.2 = 2.5 → 2 (half to even); 0.65/0.2 = 3.25 → 3.
        assert_eq!(quantize_value(0.5, p, &s, ScaleDtype::F32), 2);
        assert_eq!(quantize_value(0.65, p, &s, ScaleDtype::F32), 3);
        assert_eq!(dequantize_value(-8, p), -1.6);
    }

    #[test]
    fn min_max_widened_to_include_zero() {
        // All positive: min becomes 0, so asymmetric zp is qmin and scale = max/15.
        let p = minmax_params(&[1.5, 3.0], &int4(false), ScaleDtype::F32);
        assert_eq!(p.scale, 0.2);
        assert_eq!(p.zero_point, -8);
        let s = int4(false);
        assert_eq!(quantize_value(3.0, p, &s, ScaleDtype::F32), 7);
        assert_eq!(quantize_value(0.0, p, &s, ScaleDtype::F32), -8);
        assert_eq!(dequantize_value(7, p), 15.0 * 0.2f32);
    }

    #[test]
    fn asymmetric_zero_point_and_range() {
        // min -1, max 2: scale = 3/15 = 0.2, zp = round(-8 - (-1/0.2)) = round(-3) = -3.
        let s = int4(false);
        let p = minmax_params(&[-1.0, 2.0, 0.5], &s, ScaleDtype::F32);
        assert_eq!(p.zero_point, -3);
        assert_eq!(quantize_value(-1.0, p, &s, ScaleDtype::F32), -8);
        assert_eq!(quantize_value(2.0, p, &s, ScaleDtype::F32), 7);
        for &w in &[-1.0f32, -0.3, 0.0, 0.7, 2.0] {
            let q = quantize_value(w, p, &s, ScaleDtype::F32);
            assert!((dequantize_value(q, p) - w).abs() <= p.scale / 2.0 + 1e-6);
        }
    }

    #[test]
    fn zero_group_gets_epsilon_scale() {
        let p = minmax_params(&[0.0; 4], &int4(true), ScaleDtype::F32);
        assert_eq!(p.scale, f32::EPSILON);
        assert_eq!(quantize_value(0.0, p, &int4(true), ScaleDtype::F32), 0);
        let p = minmax_params(&[0.0; 4], &int4(false), ScaleDtype::BF16);
        assert_eq!(p.scale, 0.0078125);
        assert_eq!(p.zero_point, 0);
    }

    #[test]
    fn bf16_rounds_scale_and_division() {
        // amax 1.0 → 1/7.5 = 0.13333 → bf16 0.133789.
        let p = minmax_params(&[1.0, -0.5], &int4(true), ScaleDtype::BF16);
        assert_eq!(p.scale, half::bf16::from_f32(1.0 / 7.5).to_f32());
        assert_eq!(p.scale, 0.13378906);
        // 1.0 / 0.13378906 = 7.4744 → bf16 7.46875 → 7.
        assert_eq!(quantize_value(1.0, p, &int4(true), ScaleDtype::BF16), 7);
        // In f32 precision 0.3345/0.13378906 = 2.50015 → 3; bf16 rounds the quotient to 2.5 → 2.
        let w = 0.3345f32;
        assert_eq!(quantize_value(w, p, &int4(true), ScaleDtype::F32), 3);
        assert_eq!(quantize_value(w, p, &int4(true), ScaleDtype::BF16), 2);
        assert_eq!(
            ScaleDtype::F16.round(1.0 / 3.0),
            half::f16::from_f32(1.0 / 3.0).to_f32()
        );
    }

    #[test]
    fn int8_and_int2_ranges() {
        let s8 = QuantScheme {
            bits: 8,
            group_size: None,
            symmetric: true,
        };
        let p = minmax_params(&[-63.75, 1.0], &s8, ScaleDtype::F32);
        assert_eq!(p.scale, 0.5);
        assert_eq!(quantize_value(-63.75, p, &s8, ScaleDtype::F32), -128);
        assert_eq!(quantize_value(63.75, p, &s8, ScaleDtype::F32), 127);
        let s2 = QuantScheme {
            bits: 2,
            group_size: None,
            symmetric: true,
        };
        let p = minmax_params(&[-1.5, 1.0], &s2, ScaleDtype::F32);
        assert_eq!(p.scale, 1.0);
        assert_eq!(quantize_value(-1.5, p, &s2, ScaleDtype::F32), -2);
        assert_eq!(quantize_value(1.0, p, &s2, ScaleDtype::F32), 1);
    }
}
