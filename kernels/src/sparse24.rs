//! A compressed 2:4 layout and the CPU reference of the 2:4 sparse GEMM that the GPU kernel will be
//! tested against.
//!
//! Layout: a `[rows = out, cols = in]` weight with at most two non-zeros in each group of four
//! consecutive inputs keeps, per group, two values (`values`, `[out, in / 2]`, in column order)
//! and their positions in the group (`meta`, 2 bits each: `p0 | p1 << 2` with `p0 < p1`, eight
//! groups per `u32`, group `k` of a row in bits `4·(k mod 8)` of word `k / 8`; `[out, in / 32]`).
//! This is the positional metadata of NVIDIA's sparse tensor cores (2 bits per kept value); a
//! group with fewer than two non-zeros keeps explicit zeros at its first free positions.

use crate::{LayoutError, expect_len};

/// A `[rows, cols]` 2:4-sparse weight in the compressed layout of the module doc.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse24 {
    /// Output features (`out`).
    pub rows: usize,
    /// Input features (`in`), a multiple of 32.
    pub cols: usize,
    /// `[rows, cols / 2]` kept values.
    pub values: Vec<f32>,
    /// `[rows, cols / 32]` words of eight 4-bit position pairs.
    pub meta: Vec<u32>,
}

impl Sparse24 {
    /// Compresses a dense `[rows, cols]` weight. Errors when `cols` is not a multiple of 32 or a
    /// group of four holds more than two non-zeros (naming the row and the columns).
    pub fn compress(dense: &[f32], rows: usize, cols: usize) -> Result<Self, LayoutError> {
        if !cols.is_multiple_of(32) {
            return Err(LayoutError(format!(
                "in = {cols}: the 2:4 layout needs a multiple of 32 input features"
            )));
        }
        expect_len("weight", dense.len(), rows * cols)?;
        let mut values = Vec::with_capacity(rows * cols / 2);
        let mut meta = vec![0u32; rows * cols / 32];
        for r in 0..rows {
            for k in 0..cols / 4 {
                let c0 = k * 4;
                let group = &dense[r * cols + c0..r * cols + c0 + 4];
                let nz: Vec<usize> = (0..4).filter(|&j| group[j] != 0.0).collect();
                if nz.len() > 2 {
                    return Err(LayoutError(format!(
                        "weight row {r}, columns {c0}..{}: {} non-zeros, expected at most 2 of 4",
                        c0 + 4,
                        nz.len()
                    )));
                }
                let mut pos = nz;
                let mut j = 0;
                while pos.len() < 2 {
                    if !pos.contains(&j) {
                        pos.push(j);
                    }
                    j += 1;
                }
                pos.sort_unstable();
                values.push(group[pos[0]]);
                values.push(group[pos[1]]);
                let bits = (pos[0] | (pos[1] << 2)) as u32;
                meta[r * cols / 32 + k / 8] |= bits << (4 * (k % 8));
            }
        }
        Ok(Self {
            rows,
            cols,
            values,
            meta,
        })
    }

    /// The two positions in group `k` of `row`.
    pub fn positions(&self, row: usize, k: usize) -> (usize, usize) {
        let bits = (self.meta[row * self.cols / 32 + k / 8] >> (4 * (k % 8))) & 0xF;
        ((bits & 3) as usize, (bits >> 2) as usize)
    }

    /// The dense `[rows, cols]` weight.
    pub fn decompress(&self) -> Vec<f32> {
        let mut w = vec![0f32; self.rows * self.cols];
        for r in 0..self.rows {
            for k in 0..self.cols / 4 {
                let (p0, p1) = self.positions(r, k);
                let v = &self.values[r * self.cols / 2 + 2 * k..];
                w[r * self.cols + 4 * k + p0] = v[0];
                w[r * self.cols + 4 * k + p1] = v[1];
            }
        }
        w
    }
}

/// The CPU reference of the 2:4 sparse GEMM: `y = x · Wᵀ`, `x` `[batch, cols]`, the result
/// `[batch, rows]`, each output summed in f64 over the kept values only.
pub fn gemm_ref(x: &[f32], batch: usize, w: &Sparse24) -> Result<Vec<f32>, LayoutError> {
    expect_len("x", x.len(), batch * w.cols)?;
    let mut y = vec![0f32; batch * w.rows];
    for b in 0..batch {
        let xb = &x[b * w.cols..(b + 1) * w.cols];
        for r in 0..w.rows {
            let mut acc = 0f64;
            for k in 0..w.cols / 4 {
                let (p0, p1) = w.positions(r, k);
                let v = &w.values[r * w.cols / 2 + 2 * k..];
                acc += xb[4 * k + p0] as f64 * v[0] as f64 + xb[4 * k + p1] as f64 * v[1] as f64;
            }
            y[b * w.rows + r] = acc as f32;
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2:4 weight: in each group of four, keep positions chosen from the index.
    pub(crate) fn sample(rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let (g, j) = (i / 4, i % 4);
                let (a, b) = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)][g % 6];
                if j == a || j == b {
                    ((i * 7) % 11) as f32 * 0.1 - 0.5
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn compress_round_trips_and_stores_positions_in_order() {
        let dense = sample(5, 64);
        let s = Sparse24::compress(&dense, 5, 64).unwrap();
        assert_eq!(s.values.len(), 5 * 32);
        assert_eq!(s.meta.len(), 5 * 2);
        assert_eq!(s.decompress(), dense);
        // Group 0 keeps (0, 1), group 1 (0, 2), group 5 (2, 3).
        assert_eq!(s.positions(0, 0), (0, 1));
        assert_eq!(s.positions(0, 1), (0, 2));
        assert_eq!(s.positions(0, 5), (2, 3));
        assert_eq!(s.meta[0] & 0xF, 0b0100);
    }

    #[test]
    fn sparser_groups_keep_explicit_zeros() {
        let mut dense = vec![0f32; 32];
        dense[3] = 2.0;
        let s = Sparse24::compress(&dense, 1, 32).unwrap();
        assert_eq!(s.positions(0, 0), (0, 3));
        assert_eq!(&s.values[..2], &[0.0, 2.0]);
        assert_eq!(s.decompress(), dense);
    }

    #[test]
    fn three_of_four_and_bad_widths_are_refused() {
        let mut dense = vec![0f32; 32];
        dense[4..7].fill(1.0);
        let e = Sparse24::compress(&dense, 1, 32).unwrap_err();
        assert!(e.0.contains("row 0, columns 4..8: 3 non-zeros"), "{e}");
        let e = Sparse24::compress(&[0.0; 16], 1, 16).unwrap_err();
        assert!(e.0.contains("multiple of 32"), "{e}");
    }

    #[test]
    fn reference_equals_the_dense_product() {
        let (rows, cols, batch) = (7, 96, 4);
        let dense = sample(rows, cols);
        let s = Sparse24::compress(&dense, rows, cols).unwrap();
        let x: Vec<f32> = (0..batch * cols)
            .map(|i| ((i * 5) % 13) as f32 * 0.2 - 1.0)
            .collect();
        let y = gemm_ref(&x, batch, &s).unwrap();
        for b in 0..batch {
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|i| x[b * cols + i] as f64 * dense[r * cols + i] as f64)
                    .sum();
                assert!((y[b * rows + r] as f64 - want).abs() < 1e-5, "{b} {r}");
            }
        }
    }
}
