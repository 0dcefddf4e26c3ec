//! Encoders from a compressed linear to the tensors of an export layout — dense, the legacy
//! compressed-tensors `sparse-bitmask` / `sparse-24-bitmask`, and `pack-quantized` — plus the
//! `quantization_config` / `sparsity_config` JSON compressed-tensors writes (ALGORITHMS.md §12.3–4).

use serde_json::{Map, Value, json};

use crate::compress::{QuantScheme, QuantizedWeight};
use crate::error::{PareError, Result};
use crate::matrix::Matrix;
use safetensors::Dtype;

/// One tensor ready to be written: little-endian bytes of `shape` in `dtype`.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Packs unsigned `bits`-bit values `[rows, cols]` row by row into 32-bit words as a bit stream:
/// element `i` of a row at bit offset `i·bits` (lowest column in the least-significant bits),
/// rows padded to whole words: compressed-tensors' `pack_to_int32` (0.19, 0.20) for every width.
pub fn pack_rows(values: &[u32], rows: usize, cols: usize, bits: u32) -> Vec<u32> {
    let words = (cols * bits as usize).div_ceil(32);
    let mask = (1u64 << bits) - 1;
    let mut out = vec![0u32; rows * words];
    for r in 0..rows {
        let dst = &mut out[r * words..(r + 1) * words];
        for (c, &v) in values[r * cols..(r + 1) * cols].iter().enumerate() {
            let bit = c * bits as usize;
            let v = (v as u64 & mask) << (bit % 32);
            dst[bit / 32] |= v as u32;
            if bit % 32 + bits as usize > 32 {
                dst[bit / 32 + 1] |= (v >> 32) as u32;
            }
        }
    }
    out
}

/// Inverse of [`pack_rows`].
pub fn unpack_rows(words: &[u32], rows: usize, cols: usize, bits: u32) -> Vec<u32> {
    let per_row = (cols * bits as usize).div_ceil(32);
    let mask = (1u64 << bits) - 1;
    let mut out = vec![0u32; rows * cols];
    for r in 0..rows {
        let src = &words[r * per_row..(r + 1) * per_row];
        for c in 0..cols {
            let bit = c * bits as usize;
            let lo = src[bit / 32] as u64;
            let hi = src.get(bit / 32 + 1).copied().unwrap_or(0) as u64;
            out[r * cols + c] = ((((hi << 32) | lo) >> (bit % 32)) & mask) as u32;
        }
    }
    out
}

/// f32 values encoded as `dtype` (BF16/F16 round to nearest even). Error for non-float dtypes.
pub fn encode_floats(values: &[f32], dtype: Dtype) -> Result<Vec<u8>> {
    Ok(match dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F64 => values
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect(),
        d => {
            return Err(PareError::Usage(format!(
                "cannot write weights as {d:?}; expected F32, BF16, F16 or F64"
            )));
        }
    })
}

fn i64_tensor(values: &[i64], shape: Vec<usize>) -> OutTensor {
    OutTensor {
        dtype: Dtype::I64,
        shape,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn i32_tensor(values: &[u32], shape: Vec<usize>) -> OutTensor {
    OutTensor {
        dtype: Dtype::I32,
        shape,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// `{prefix}.weight` in `dtype`.
pub fn encode_dense(prefix: &str, w: &Matrix, dtype: Dtype) -> Result<Vec<(String, OutTensor)>> {
    let bytes = encode_floats(&w.data, dtype)?;
    Ok(vec![(
        format!("{prefix}.weight"),
        OutTensor {
            dtype,
            shape: vec![w.rows, w.cols],
            bytes,
        },
    )])
}

/// The weight rounded to `dtype` (what will be stored), so zero tests see stored values.
fn rounded(w: &Matrix, dtype: Dtype) -> Vec<f32> {
    let dt = crate::compress::quant::ScaleDtype::from(dtype);
    w.data.iter().map(|&v| dt.round(v)).collect()
}

fn bitmask_tensor(mask: &[bool], rows: usize, cols: usize) -> OutTensor {
    let rb = cols.div_ceil(8);
    let mut bytes = vec![0u8; rows * rb];
    for r in 0..rows {
        for c in 0..cols {
            if mask[r * cols + c] {
                bytes[r * rb + c / 8] |= 1 << (c % 8);
            }
        }
    }
    OutTensor {
        dtype: Dtype::U8,
        shape: vec![rows, rb],
        bytes,
    }
}

/// Unstructured `sparse-bitmask`: `{prefix}.compressed` (non-zeros, row-major, 1-D),
/// `.bitmask` (U8 `[rows, ceil(cols/8)]`, little bit order), `.shape` (I64 `[2]`),
/// `.row_offsets` (I64 `[rows]`, exclusive prefix sum of per-row non-zeros).
pub fn encode_sparse_bitmask(
    prefix: &str,
    w: &Matrix,
    dtype: Dtype,
) -> Result<Vec<(String, OutTensor)>> {
    let v = rounded(w, dtype);
    let mask: Vec<bool> = v.iter().map(|&x| x != 0.0).collect();
    let vals: Vec<f32> = v.iter().copied().filter(|&x| x != 0.0).collect();
    let mut offsets = Vec::with_capacity(w.rows);
    let mut acc = 0i64;
    for r in 0..w.rows {
        offsets.push(acc);
        acc += mask[r * w.cols..(r + 1) * w.cols]
            .iter()
            .filter(|&&m| m)
            .count() as i64;
    }
    Ok(vec![
        (
            format!("{prefix}.bitmask"),
            bitmask_tensor(&mask, w.rows, w.cols),
        ),
        (
            format!("{prefix}.compressed"),
            OutTensor {
                dtype,
                shape: vec![vals.len()],
                bytes: encode_floats(&vals, dtype)?,
            },
        ),
        (
            format!("{prefix}.row_offsets"),
            i64_tensor(&offsets, vec![w.rows]),
        ),
        (
            format!("{prefix}.shape"),
            i64_tensor(&[w.rows as i64, w.cols as i64], vec![2]),
        ),
    ])
}

/// 2:4 `sparse-24-bitmask`: `{prefix}.compressed` `[rows, cols/2]`, `.bitmask`, `.shape` (I64
/// `[2,1]`). Exactly 2 of every 4 are kept, as compressed-tensors 0.14.0.1 does (`torch.topk`
/// of |w| on the CPU): the two largest |w|, ties to the *higher* column, so explicit zeros are
/// stored when a group has fewer than two non-zeros; kept values are laid out in column order
/// (checked byte for byte against that release, `tests/fixtures/ct-sparse/`). Error when
/// `cols % 4 != 0` or a group holds more than two non-zeros (the library drops values silently).
pub fn encode_sparse_24_bitmask(
    prefix: &str,
    w: &Matrix,
    dtype: Dtype,
) -> Result<Vec<(String, OutTensor)>> {
    if !w.cols.is_multiple_of(4) {
        return Err(PareError::Usage(format!(
            "2:4 layout needs the input dimension divisible by 4, got {}",
            w.cols
        )));
    }
    let v = rounded(w, dtype);
    let mut mask = vec![false; v.len()];
    let mut vals = Vec::with_capacity(v.len() / 2);
    for (gi, g) in v.chunks(4).enumerate() {
        if g.iter().filter(|&&x| x != 0.0).count() > 2 {
            let (r, c) = (gi * 4 / w.cols, gi * 4 % w.cols);
            return Err(PareError::Usage(format!(
                "row {r}, columns {c}..{}: {} non-zeros in a group of 4, the 2:4 layout keeps 2",
                c + 4,
                g.iter().filter(|&&x| x != 0.0).count()
            )));
        }
        let mut order = [0usize, 1, 2, 3];
        // Descending |w|; equal |w| (−0 and +0 included) → the higher column first.
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()).then(b.cmp(&a)));
        let mut keep = [order[0], order[1]];
        keep.sort_unstable();
        for k in keep {
            mask[gi * 4 + k] = true;
            vals.push(g[k]);
        }
    }
    Ok(vec![
        (
            format!("{prefix}.bitmask"),
            bitmask_tensor(&mask, w.rows, w.cols),
        ),
        (
            format!("{prefix}.compressed"),
            OutTensor {
                dtype,
                shape: vec![w.rows, w.cols / 2],
                bytes: encode_floats(&vals, dtype)?,
            },
        ),
        (
            format!("{prefix}.shape"),
            i64_tensor(&[w.rows as i64, w.cols as i64], vec![2, 1]),
        ),
    ])
}

/// `pack-quantized`: `{prefix}.weight_packed` (I32 `[rows, cols·b/32]`, `q + 2^{b−1}`, lowest
/// column in the least-significant bits), `.weight_scale` (`[rows, n_groups]` in `scale_dtype`;
/// non-float dtypes fall back to BF16), `.weight_shape` (I64 `[2]`) and, when asymmetric,
/// `.weight_zero_point` (I32 packed along dim 0). 2 to 8 bits; 3 bits (and other widths that do
/// not divide 32) use compressed-tensors' dense packing (values split across word boundaries),
/// as its 0.19 and 0.20 write it (`tests/fixtures/ct-pack/`, made by `tools/ct_pack/`).
pub fn encode_pack_quantized(
    prefix: &str,
    q: &QuantizedWeight,
    rows: usize,
    cols: usize,
    scale_dtype: Dtype,
) -> Result<Vec<(String, OutTensor)>> {
    let s = q.scheme;
    let bits = s.bits as u32;
    if !(2..=8).contains(&bits) {
        return Err(PareError::Usage(format!(
            "{prefix}: pack-quantized export supports 2 to 8 bits, not {bits}"
        )));
    }
    let ng = s.n_groups(cols);
    if q.q.len() != rows * cols || q.scales.len() != rows * ng {
        return Err(PareError::Internal(format!(
            "{prefix}: quantised weight holds {} values and {} scales; expected {} and {}",
            q.q.len(),
            q.scales.len(),
            rows * cols,
            rows * ng
        )));
    }
    let offset = 1i32 << (bits - 1);
    let u: Vec<u32> = q.q.iter().map(|&v| (v as i32 + offset) as u32).collect();
    let sdt = if crate::checkpoint::reader::is_float(scale_dtype) {
        scale_dtype
    } else {
        Dtype::BF16
    };
    let mut out = vec![
        (
            format!("{prefix}.weight_packed"),
            i32_tensor(
                &pack_rows(&u, rows, cols, bits),
                vec![rows, (cols * bits as usize).div_ceil(32)],
            ),
        ),
        (
            format!("{prefix}.weight_scale"),
            OutTensor {
                dtype: sdt,
                shape: vec![rows, ng],
                bytes: encode_floats(&q.scales, sdt)?,
            },
        ),
        (
            format!("{prefix}.weight_shape"),
            i64_tensor(&[rows as i64, cols as i64], vec![2]),
        ),
    ];
    if let (false, Some(zp)) = (s.symmetric, &q.zero_points) {
        // Transpose to [n_groups, rows], pack each row, transpose the words back.
        let mut t = vec![0u32; ng * rows];
        for r in 0..rows {
            for g in 0..ng {
                t[g * rows + r] = (zp[r * ng + g] as i32 + offset) as u32;
            }
        }
        let zw = (rows * bits as usize).div_ceil(32);
        let packed = pack_rows(&t, ng, rows, bits);
        let mut back = vec![0u32; zw * ng];
        for g in 0..ng {
            for k in 0..zw {
                back[k * ng + g] = packed[g * zw + k];
            }
        }
        out.push((
            format!("{prefix}.weight_zero_point"),
            i32_tensor(&back, vec![zw, ng]),
        ));
    }
    Ok(out)
}

fn weights_json(s: &QuantScheme) -> Value {
    let mut w = Map::new();
    w.insert("actorder".into(), Value::Null);
    w.insert("block_structure".into(), Value::Null);
    w.insert("dynamic".into(), json!(false));
    w.insert(
        "group_size".into(),
        s.group_size.map_or(Value::Null, |g| json!(g)),
    );
    w.insert("num_bits".into(), json!(s.bits));
    w.insert("observer".into(), json!("memoryless_minmax"));
    w.insert("observer_kwargs".into(), json!({}));
    w.insert("scale_dtype".into(), Value::Null);
    w.insert(
        "strategy".into(),
        json!(if s.group_size.is_some() {
            "group"
        } else {
            "channel"
        }),
    );
    w.insert("symmetric".into(), json!(s.symmetric));
    w.insert("type".into(), json!("int"));
    w.insert(
        "zp_dtype".into(),
        if s.symmetric {
            Value::Null
        } else {
            json!("torch.int8")
        },
    );
    Value::Object(w)
}

/// The `quantization_config` block as compressed-tensors writes it for pack-quantized weights:
/// one `group_i` per distinct scheme, targets `["Linear"]` when a single group covers every
/// quantised linear, else the exact module names.
pub fn quantization_config_json(
    groups: &[(QuantScheme, Vec<String>)],
    ignore: &[String],
    ct_version: &str,
) -> Value {
    let mut cg = Map::new();
    for (i, (scheme, modules)) in groups.iter().enumerate() {
        let targets = if groups.len() == 1 {
            json!(["Linear"])
        } else {
            json!(modules)
        };
        cg.insert(
            format!("group_{i}"),
            json!({
                "format": "pack-quantized",
                "input_activations": null,
                "output_activations": null,
                "targets": targets,
                "weights": weights_json(scheme),
            }),
        );
    }
    json!({
        "config_groups": cg,
        "format": "pack-quantized",
        "global_compression_ratio": null,
        "ignore": ignore,
        "kv_cache_scheme": null,
        "quant_method": "compressed-tensors",
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": ct_version,
    })
}

/// The legacy `sparsity_config` block (`format`: `sparse-bitmask`, `sparse-24-bitmask` or
/// `dense`; `structure`: `2:4` or `unstructured`).
pub fn sparsity_config_json(
    format: &str,
    global_sparsity: f64,
    structure: &str,
    targets: &[String],
    ignore: &[String],
) -> Value {
    json!({
        "format": format,
        "global_sparsity": global_sparsity,
        "ignore": ignore,
        "sparsity_structure": structure,
        "targets": targets,
    })
}
