//! Round-to-nearest (RTN) weight quantisation of a whole matrix: min-max parameters per group,
//! then each weight rounded on the grid of [`crate::compress::quant`]. Shared by the `rtn` and
//! `finequant` methods (and GPTQ's scheme check). Reproduces llm-compressor's
//! `QuantizationModifier` output byte for byte (see the fixture test in `checkpoint::formats`).

use rayon::prelude::*;

use crate::compress::quant::{ScaleDtype, dequantize_value, minmax_params, quantize_value};
use crate::compress::{QuantScheme, QuantizedWeight};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// Checks that `scheme` can quantise a `[rows, cols]` weight: 2–8 bits and a group size that
/// divides `cols`. The message names the dimension; the caller adds the layer name.
pub fn check_scheme(scheme: &QuantScheme, cols: usize) -> Result<()> {
    if !(2..=8).contains(&scheme.bits) {
        return Err(PareError::Usage(format!(
            "{} bits is not supported (integer quantisation takes 2 to 8 bits)",
            scheme.bits
        )));
    }
    if let Some(g) = scheme.group_size
        && (g == 0 || !cols.is_multiple_of(g))
    {
        return Err(PareError::Usage(format!(
            "group size {g} does not divide the input dimension {cols}"
        )));
    }
    Ok(())
}

/// Quantises `w` with round-to-nearest: one scale (and zero-point when asymmetric) per row and
/// group of `group_size` input columns (per row when `group_size` is `None`). The returned
/// matrix holds the dequantised values rounded to `dt` (what the model computes with). Exact
/// zeros stay exact zeros (their code is the zero-point).
pub fn quantize_rtn(
    w: &Matrix,
    scheme: QuantScheme,
    dt: ScaleDtype,
) -> Result<(Matrix, QuantizedWeight)> {
    check_scheme(&scheme, w.cols)?;
    let cols = w.cols;
    let gc = scheme.group_cols(cols);
    let ng = scheme.n_groups(cols);
    let mut q = vec![0i8; w.rows * cols];
    let mut scales = vec![0f32; w.rows * ng];
    let mut zps = vec![0i8; w.rows * ng];
    let mut deq = vec![0f32; w.rows * cols];
    if cols > 0 {
        q.par_chunks_mut(cols)
            .zip(deq.par_chunks_mut(cols))
            .zip(scales.par_chunks_mut(ng).zip(zps.par_chunks_mut(ng)))
            .enumerate()
            .for_each(|(r, ((qr, dr), (sr, zr)))| {
                let row = w.row(r);
                for g in 0..ng {
                    let span = g * gc..((g + 1) * gc).min(cols);
                    let p = minmax_params(&row[span.clone()], &scheme, dt);
                    sr[g] = p.scale;
                    zr[g] = p.zero_point as i8;
                    for c in span {
                        let qi = quantize_value(row[c], p, &scheme, dt);
                        qr[c] = qi as i8;
                        dr[c] = dt.round(dequantize_value(qi, p));
                    }
                }
            });
    }
    Ok((
        Matrix::from_vec(w.rows, cols, deq),
        QuantizedWeight {
            scheme,
            q,
            scales,
            zero_points: (!scheme.symmetric).then_some(zps),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_four_hand_checked() {
        // Row 0: group [1.5, -0.75, 0, 0.3] amax 1.5 → scale 0.2; group [0,0,0,0] → eps.
        let w = Matrix::from_vec(1, 8, vec![1.5, -0.75, 0.0, 0.3, 0.0, 0.0, 0.0, 0.0]);
        let s = QuantScheme {
            bits: 4,
            group_size: Some(4),
            symmetric: true,
        };
        let (deq, qw) = quantize_rtn(&w, s, ScaleDtype::F32).unwrap();
        // 1.5/0.2 = 7.5 → clamp 7; -0.75/0.2 = -3.75 → -4; 0.3/0.2 = 1.5 → 2 (half to even).
        assert_eq!(qw.q, vec![7, -4, 0, 2, 0, 0, 0, 0]);
        assert_eq!(qw.scales, vec![0.2, f32::EPSILON]);
        assert!(qw.zero_points.is_none());
        assert_eq!(deq.data[0], 7.0 * 0.2f32);
        assert_eq!(deq.data[1], -0.8);
    }

    #[test]
    fn per_channel_asymmetric_int8() {
        let w = Matrix::from_vec(2, 3, vec![0.0, 1.0, 2.55, -1.0, -2.0, 0.5]);
        let s = QuantScheme {
            bits: 8,
            group_size: None,
            symmetric: false,
        };
        let (deq, qw) = quantize_rtn(&w, s, ScaleDtype::F32).unwrap();
        assert_eq!(qw.scales.len(), 2);
        assert_eq!(qw.zero_points.as_ref().unwrap()[0], -128);
        assert_eq!(deq.data[0], 0.0, "an exact zero stays zero");
        for (a, b) in deq.data.iter().zip(&w.data) {
            assert!((a - b).abs() <= 2.55 / 255.0 / 2.0 + 1e-6);
        }
    }

    #[test]
    fn bad_group_size_and_bits() {
        let w = Matrix::zeros(2, 48);
        let s = QuantScheme {
            bits: 4,
            group_size: Some(32),
            symmetric: true,
        };
        let e = quantize_rtn(&w, s, ScaleDtype::F32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("group size 32") && e.contains("48"), "{e}");
        let s = QuantScheme {
            bits: 9,
            group_size: None,
            symmetric: true,
        };
        assert!(quantize_rtn(&w, s, ScaleDtype::F32).is_err());
    }
}
