//! Group-wise int4 weights in compressed-tensors' `pack-quantized` layout, and the CPU reference
//! of the dequant-GEMM that the GPU kernel will be tested against.
//!
//! Layout (as compressed-tensors writes it and pare exports it): the signed codes
//! `q[o, i] ∈ [−8, 7]` of a `[rows = out, cols = in]` weight are stored as `q + 8`, eight per
//! little-endian `u32`, column `i` in bits `4·(i mod 8)` of word `i / 8` of row `o`
//! (`weight_packed`, `[out, in / 8]`). Each row has `in / group` scales (`weight_scale`,
//! `[out, in / group]`, here widened to f32) and, for asymmetric schemes, zero points in code
//! units (`weight_zero_point`, unpacked here to one f32 per group; 0 when symmetric). The weight
//! is `w[o, i] = s[o, g] · (q[o, i] − z[o, g])` with `g = i / group`.

use crate::{LayoutError, expect_len};

/// A `[rows, cols]` int4 weight, packed: see the module doc for the layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedInt4 {
    /// Output features (`out`).
    pub rows: usize,
    /// Input features (`in`), a multiple of 8 and of `group`.
    pub cols: usize,
    /// Group size along `in`: a multiple of 8.
    pub group: usize,
    /// `[rows, cols / 8]` words of eight codes each.
    pub packed: Vec<u32>,
    /// `[rows, cols / group]` scales.
    pub scales: Vec<f32>,
    /// `[rows, cols / group]` zero points in code units (all 0 for symmetric schemes).
    pub zeros: Vec<f32>,
}

impl PackedInt4 {
    /// Packs signed codes `codes` (`[rows, cols]`, each in `[−8, 7]`) with their scales and
    /// optional zero points (`[rows, cols / group]` each). Errors name the argument at fault.
    pub fn pack(
        codes: &[i8],
        rows: usize,
        cols: usize,
        group: usize,
        scales: Vec<f32>,
        zeros: Option<Vec<f32>>,
    ) -> Result<Self, LayoutError> {
        if group == 0 || !group.is_multiple_of(8) || !cols.is_multiple_of(group) {
            return Err(LayoutError(format!(
                "group size {group}: expected a multiple of 8 that divides in = {cols}"
            )));
        }
        expect_len("codes", codes.len(), rows * cols)?;
        let ngroups = cols / group;
        expect_len("scales", scales.len(), rows * ngroups)?;
        let zeros = zeros.unwrap_or_else(|| vec![0.0; rows * ngroups]);
        expect_len("zero points", zeros.len(), rows * ngroups)?;
        let mut packed = vec![0u32; rows * cols / 8];
        for (i, &q) in codes.iter().enumerate() {
            if !(-8..=7).contains(&q) {
                return Err(LayoutError(format!(
                    "codes[{i}] = {q}: expected an int4 code in [-8, 7]"
                )));
            }
            packed[i / 8] |= ((q + 8) as u32) << (4 * (i % 8));
        }
        Ok(Self {
            rows,
            cols,
            group,
            packed,
            scales,
            zeros,
        })
    }

    /// The signed code of `(row, col)`.
    pub fn code(&self, row: usize, col: usize) -> i32 {
        let word = self.packed[row * self.cols / 8 + col / 8];
        ((word >> (4 * (col % 8))) & 0xF) as i32 - 8
    }

    /// The dense `[rows, cols]` weight `s · (q − z)` in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        let ngroups = self.cols / self.group;
        let mut w = vec![0f32; self.rows * self.cols];
        for o in 0..self.rows {
            for i in 0..self.cols {
                let g = o * ngroups + i / self.group;
                w[o * self.cols + i] = self.scales[g] * (self.code(o, i) as f32 - self.zeros[g]);
            }
        }
        w
    }
}

/// The CPU reference of the dequant-GEMM: `y = x · Wᵀ` with `x` `[batch, cols]` and the
/// result `[batch, rows]`, each output summed in f64 over the dequantised weight (so it is the
/// exact value the GPU's f32 sums are compared against).
pub fn dequant_gemm_ref(x: &[f32], batch: usize, w: &PackedInt4) -> Result<Vec<f32>, LayoutError> {
    expect_len("x", x.len(), batch * w.cols)?;
    let ngroups = w.cols / w.group;
    let mut y = vec![0f32; batch * w.rows];
    for b in 0..batch {
        let xb = &x[b * w.cols..(b + 1) * w.cols];
        for o in 0..w.rows {
            let mut acc = 0f64;
            for (i, &xi) in xb.iter().enumerate() {
                let g = o * ngroups + i / w.group;
                let wi = w.scales[g] as f64 * (w.code(o, i) as f64 - w.zeros[g] as f64);
                acc += xi as f64 * wi;
            }
            y[b * w.rows + o] = acc as f32;
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(rows: usize, cols: usize, group: usize, asym: bool) -> PackedInt4 {
        let codes: Vec<i8> = (0..rows * cols)
            .map(|i| ((i * 7 + i / 5) % 16) as i8 - 8)
            .collect();
        let ng = cols / group;
        let scales = (0..rows * ng)
            .map(|g| 0.01 + 0.003 * (g % 7) as f32)
            .collect();
        let zeros = asym.then(|| (0..rows * ng).map(|g| (g % 5) as f32 - 2.0).collect());
        PackedInt4::pack(&codes, rows, cols, group, scales, zeros).unwrap()
    }

    #[test]
    fn packing_puts_column_i_in_nibble_i_mod_8_offset_by_8() {
        let mut codes = vec![0i8; 16];
        codes[0] = -8;
        codes[1] = 7;
        codes[9] = -1;
        let w = PackedInt4::pack(&codes, 1, 16, 8, vec![1.0, 1.0], None).unwrap();
        // Nibbles of word 0: 0, 15, then 8 (code 0) six times.
        assert_eq!(w.packed[0], 0x8888_88F0);
        // Word 1: column 9 is code -1 → 7 in its nibble 1.
        assert_eq!(w.packed[1], 0x8888_8878);
        assert_eq!((w.code(0, 0), w.code(0, 1), w.code(0, 9)), (-8, 7, -1));
    }

    #[test]
    fn reference_equals_the_dense_product_of_the_dequantised_weight() {
        for &(asym, batch) in &[(false, 1), (true, 3), (false, 16)] {
            let w = sample(24, 64, 32, asym);
            let x: Vec<f32> = (0..batch * 64)
                .map(|i| ((i * 13) % 17) as f32 * 0.1 - 0.8)
                .collect();
            let dense = w.dequantize();
            let y = dequant_gemm_ref(&x, batch, &w).unwrap();
            for b in 0..batch {
                for o in 0..24 {
                    let want: f64 = (0..64)
                        .map(|i| x[b * 64 + i] as f64 * dense[o * 64 + i] as f64)
                        .sum();
                    let got = y[b * 24 + o] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_layouts_are_refused_with_the_argument_named() {
        let e = PackedInt4::pack(&[0; 16], 1, 16, 6, vec![1.0; 2], None).unwrap_err();
        assert!(e.0.contains("group size 6"), "{e}");
        let e = PackedInt4::pack(&[9; 16], 1, 16, 8, vec![1.0; 2], None).unwrap_err();
        assert!(e.0.contains("codes[0] = 9"), "{e}");
        let e = PackedInt4::pack(&[0; 16], 1, 16, 8, vec![1.0; 3], None).unwrap_err();
        assert!(e.0.starts_with("scales"), "{e}");
        let w = sample(2, 16, 8, false);
        let e = dequant_gemm_ref(&[0.0; 15], 1, &w).unwrap_err();
        assert!(e.0.starts_with("x:"), "{e}");
    }
}
