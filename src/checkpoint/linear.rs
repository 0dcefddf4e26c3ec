//! `TensorStore::read_linear`: the dense f32 weight of one linear module whatever its storage —
//! plain `.weight`, compressed-tensors `pack-quantized` (dequantised) or the legacy
//! `sparse-bitmask` / `sparse-24-bitmask` layouts (densified). ALGORITHMS.md §12.3.

use crate::checkpoint::formats::unpack_rows;
use crate::checkpoint::qconfig::QuantizationConfig;
use crate::checkpoint::reader::{TensorStore, bytes_to_f32};
use crate::compress::quant::ScaleDtype;
use crate::error::{PareError, Result};
use crate::matrix::Matrix;

/// A `pack-quantized` linear as stored: signed integer codes and their parameters.
#[derive(Clone, Debug)]
pub struct PackedLinear {
    /// Bits per code (2–8).
    pub bits: u8,
    /// `[rows, cols]` signed codes (`q − 2^(bits−1)` of the stored unsigned value).
    pub codes: Vec<i16>,
    /// `[scale_rows, groups]` scales as f32 (read from `scale_dtype`).
    pub scales: Vec<f32>,
    pub scale_dtype: crate::checkpoint::Dtype,
    /// 1 (one scale per tensor) or the row count.
    pub scale_rows: usize,
    /// Scales per row.
    pub groups: usize,
    /// The group of each column (from `weight_g_idx`, or contiguous groups).
    pub group_of: Vec<usize>,
    /// A `weight_g_idx` tensor is stored (activation order).
    pub has_g_idx: bool,
    /// `[rows, groups]` signed zero-points when asymmetric.
    pub zero_points: Option<Vec<i64>>,
}

impl TensorStore {
    fn shape_error(&self, name: &str, expected: &[usize], found: &[usize]) -> PareError {
        PareError::input(
            self.file_of(name),
            format!("tensor `{name}` has shape {found:?}; expected {expected:?}"),
        )
    }

    fn expect_shape(&self, name: &str, expected: &[usize], found: &[usize]) -> Result<()> {
        if expected == found {
            Ok(())
        } else {
            Err(self.shape_error(name, expected, found))
        }
    }

    /// The dense f32 `[rows, cols]` weight of module `prefix` (e.g.
    /// `model.layers.0.mlp.down_proj`). `qcfg` gives the bit width of packed weights; without it
    /// the width is inferred from the packed shape.
    pub fn read_linear(
        &self,
        prefix: &str,
        rows: usize,
        cols: usize,
        qcfg: Option<&QuantizationConfig>,
    ) -> Result<Matrix> {
        let plain = format!("{prefix}.weight");
        if self.contains(&plain) {
            let (shape, data) = self.read_f32(&plain)?;
            self.expect_shape(&plain, &[rows, cols], &shape)?;
            return Ok(Matrix::from_vec(rows, cols, data));
        }
        if self.contains(&format!("{prefix}.weight_packed")) {
            return self.read_pack_quantized(prefix, rows, cols, qcfg);
        }
        if self.contains(&format!("{prefix}.compressed")) {
            return self.read_bitmask(prefix, rows, cols);
        }
        Err(PareError::input(
            self.dir(),
            format!(
                "no weight for linear `{prefix}`: expected `{prefix}.weight`, `{prefix}.weight_packed` or `{prefix}.compressed`"
            ),
        ))
    }

    fn read_pack_quantized(
        &self,
        prefix: &str,
        rows: usize,
        cols: usize,
        qcfg: Option<&QuantizationConfig>,
    ) -> Result<Matrix> {
        let p = self.read_packed(prefix, rows, cols, qcfg)?;
        let round = ScaleDtype::from(p.scale_dtype);
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            let sr = if p.scale_rows == 1 { 0 } else { r };
            for c in 0..cols {
                let g = p.group_of[c];
                let qv = i64::from(p.codes[r * cols + c]);
                let z = p.zero_points.as_ref().map_or(0, |z| z[r * p.groups + g]);
                out[r * cols + c] = round.round((qv - z) as f32 * p.scales[sr * p.groups + g]);
            }
        }
        Ok(Matrix::from_vec(rows, cols, out))
    }

    /// The integer codes and quantisation parameters of a compressed-tensors `pack-quantized`
    /// linear `prefix` (`[rows, cols]`), without dequantising; `Ok(None)` when the linear is not
    /// stored packed. Exporters that re-pack the codes (GGUF) use this, so nothing is rounded
    /// twice.
    pub fn read_quantized(
        &self,
        prefix: &str,
        rows: usize,
        cols: usize,
        qcfg: Option<&QuantizationConfig>,
    ) -> Result<Option<PackedLinear>> {
        if !self.contains(&format!("{prefix}.weight_packed")) {
            return Ok(None);
        }
        self.read_packed(prefix, rows, cols, qcfg).map(Some)
    }

    fn read_packed(
        &self,
        prefix: &str,
        rows: usize,
        cols: usize,
        qcfg: Option<&QuantizationConfig>,
    ) -> Result<PackedLinear> {
        let packed_name = format!("{prefix}.weight_packed");
        let (pshape, packed) = self.read_int(&packed_name)?;
        let shape_name = format!("{prefix}.weight_shape");
        if self.contains(&shape_name) {
            let (_, ws) = self.read_int(&shape_name)?;
            let ws: Vec<usize> = ws.iter().map(|&v| v.max(0) as usize).collect();
            self.expect_shape(&shape_name, &[rows, cols], &ws)?;
        }
        if pshape.len() != 2 || pshape[0] != rows {
            return Err(self.shape_error(&packed_name, &[rows, cols.div_ceil(8)], &pshape));
        }
        let bits = match qcfg.and_then(|q| q.bits_for(prefix)) {
            Some(b) => b as usize,
            // Infer: the smallest 2–8 whose dense packing gives the stored width.
            None => (2..=8usize)
                .find(|b| (cols * b).div_ceil(32) == pshape[1])
                .unwrap_or(0),
        };
        let words = (cols * bits).div_ceil(32);
        if bits == 0 || pshape[1] != words {
            let want = if bits == 0 { cols.div_ceil(8) } else { words };
            return Err(self.shape_error(&packed_name, &[rows, want], &pshape));
        }
        let words: Vec<u32> = packed.iter().map(|&v| v as u32).collect();
        let offset = 1i64 << (bits - 1);
        let codes: Vec<i16> = unpack_rows(&words, rows, cols, bits as u32)
            .into_iter()
            .map(|v| (i64::from(v) - offset) as i16)
            .collect();

        let scale_name = format!("{prefix}.weight_scale");
        let (sdt, sshape, sbytes) = self.read_raw(&scale_name)?;
        let scales = bytes_to_f32(sbytes, sdt).ok_or_else(|| {
            PareError::input(
                self.file_of(&scale_name),
                format!("tensor `{scale_name}` has dtype {sdt:?}; expected a float"),
            )
        })?;
        self.check_finite(&scale_name, &scales)?;
        // [rows, n_groups], [rows, 1] (channel) or [1] / [] (tensor).
        let (srows, ngroups) = match sshape.as_slice() {
            [] | [1] => (1, 1),
            [r, g] if *r == rows && *g >= 1 => (rows, *g),
            _ => return Err(self.shape_error(&scale_name, &[rows, 1], &sshape)),
        };
        let gidx_name = format!("{prefix}.weight_g_idx");
        let has_g_idx = self.contains(&gidx_name);
        let group_of: Vec<usize> = if has_g_idx {
            let (gshape, g) = self.read_int(&gidx_name)?;
            self.expect_shape(&gidx_name, &[cols], &gshape)?;
            if let Some(bad) = g.iter().find(|&&v| v < 0 || v as usize >= ngroups) {
                return Err(PareError::input(
                    self.file_of(&gidx_name),
                    format!(
                        "tensor `{gidx_name}` holds group {bad}; `{scale_name}` has {ngroups} groups"
                    ),
                ));
            }
            g.iter().map(|&v| v as usize).collect()
        } else {
            if !cols.is_multiple_of(ngroups) {
                return Err(PareError::input(
                    self.file_of(&scale_name),
                    format!(
                        "tensor `{scale_name}` has {ngroups} groups, which does not divide {cols} columns"
                    ),
                ));
            }
            let gs = cols / ngroups;
            (0..cols).map(|c| c / gs).collect()
        };

        let zp_name = format!("{prefix}.weight_zero_point");
        let zps: Option<Vec<i64>> = if self.contains(&zp_name) {
            let (zshape, z) = self.read_int(&zp_name)?;
            let want = [(rows * bits).div_ceil(32), ngroups];
            self.expect_shape(&zp_name, &want, &zshape)?;
            // Packed along dim 0: unpack the transposed [n_groups, rows] matrix.
            let mut t = vec![0u32; ngroups * want[0]];
            for (w, &v) in z.iter().enumerate() {
                let (r, g) = (w / ngroups, w % ngroups);
                t[g * want[0] + r] = v as u32;
            }
            let zt = unpack_rows(&t, ngroups, rows, bits as u32);
            let mut zp = vec![0i64; rows * ngroups];
            for g in 0..ngroups {
                for r in 0..rows {
                    zp[r * ngroups + g] = zt[g * rows + r] as i64 - offset;
                }
            }
            Some(zp)
        } else {
            None
        };

        Ok(PackedLinear {
            bits: bits as u8,
            codes,
            scales,
            scale_dtype: sdt,
            scale_rows: srows,
            groups: ngroups,
            group_of,
            has_g_idx,
            zero_points: zps,
        })
    }

    fn read_bitmask(&self, prefix: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let vals_name = format!("{prefix}.compressed");
        let mask_name = format!("{prefix}.bitmask");
        let shape_name = format!("{prefix}.shape");
        let (_, shape) = self.read_int(&shape_name)?;
        let shape: Vec<usize> = shape.iter().map(|&v| v.max(0) as usize).collect();
        self.expect_shape(&shape_name, &[rows, cols], &shape)?;
        let (vshape, vals) = self.read_f32(&vals_name)?;
        let (mshape, mask) = self.read_int(&mask_name)?;
        let row_bytes = cols.div_ceil(8);
        self.expect_shape(&mask_name, &[rows, row_bytes], &mshape)?;
        let kept = mask
            .iter()
            .map(|&b| (b as u8).count_ones() as usize)
            .sum::<usize>();
        if vals.len() != kept {
            return Err(PareError::input(
                self.file_of(&vals_name),
                format!(
                    "tensor `{vals_name}` has shape {vshape:?} ({} values); `{mask_name}` marks {kept}",
                    vals.len()
                ),
            ));
        }
        let mut out = vec![0f32; rows * cols];
        let mut next = 0;
        for r in 0..rows {
            for c in 0..cols {
                if (mask[r * row_bytes + c / 8] as u8 >> (c % 8)) & 1 == 1 {
                    out[r * cols + c] = vals[next];
                    next += 1;
                }
            }
        }
        Ok(Matrix::from_vec(rows, cols, out))
    }
}
