//! Tests across the checkpoint layer: encode → write → read round trips, the writer's sharding
//! and cleanup, and byte-exactness against the compressed-tensors fixtures (ALGORITHMS.md §12.3).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::*;
use crate::compress::QuantScheme;
use crate::compress::kit::rtn::quantize_rtn;
use crate::compress::quant::ScaleDtype;
use crate::matrix::Matrix;

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared");

fn tiny() -> PathBuf {
    Path::new(SHARED).join("models/tiny-llama")
}

/// Writes `tensors` as a checkpoint in a fresh temp dir and opens it.
pub(super) fn roundtrip(
    tensors: Vec<(String, OutTensor)>,
    max_shard: u64,
) -> (tempfile::TempDir, TensorStore) {
    let root = tempfile::tempdir().unwrap();
    let input = root.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let out = root.path().join("out");
    let mut w = CheckpointWriter::create(&out, &input, false, max_shard).unwrap();
    for (n, t) in tensors {
        w.add(n, t).unwrap();
    }
    w.finish(&json!({"model_type": "llama"}), &[], &[], BTreeMap::new())
        .unwrap();
    let s = TensorStore::open(&out).unwrap();
    (root, s)
}

pub(super) fn pseudo_random(rows: usize, cols: usize, seed: u32) -> Matrix {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    let data = (0..rows * cols)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    Matrix::from_vec(rows, cols, data)
}

#[test]
fn pack_rows_nibble_order_and_dense_widths() {
    // int4: lowest column in the least-significant nibble.
    let v: Vec<u32> = (0..8).collect();
    assert_eq!(pack_rows(&v, 1, 8, 4), vec![0x7654_3210]);
    // 3 bits spill across words; unpack inverts for every width.
    for bits in 2..=8u32 {
        let v: Vec<u32> = (0..2 * 37)
            .map(|i| (i * 7 + 3) as u32 % (1 << bits))
            .collect();
        let p = pack_rows(&v, 2, 37, bits);
        assert_eq!(p.len(), 2 * (37 * bits as usize).div_ceil(32));
        assert_eq!(unpack_rows(&p, 2, 37, bits), v, "bits {bits}");
    }
}

/// int2/int3/int4 codes pack into the int32 words compressed-tensors' `pack_to_int32` gives
/// (tests/fixtures/ct-pack/pack.json, made by tools/ct_pack/make_fixture.py with
/// compressed-tensors 0.20.1): along dim 1 for weights, and along dim 0 for zero-points.
#[test]
fn pack_rows_matches_compressed_tensors_for_2_3_4_bits() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ct-pack/pack.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (rows, cols) = (3usize, 37usize);
    let mut seen = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let bits = case["bits"].as_u64().unwrap() as u32;
        let offset = 1i64 << (bits - 1);
        let codes: Vec<u32> = case["codes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| (v.as_i64().unwrap() + offset) as u32)
            })
            .collect();
        let ours = pack_rows(&codes, rows, cols, bits);
        let words = (cols * bits as usize).div_ceil(32);
        let want: Vec<u32> = case["packed_dim1"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap() as i32 as u32)
            })
            .collect();
        assert_eq!(ours, want, "{bits} bits along dim 1");
        let dim0 = case["packed_dim0_of_transpose"].as_array().unwrap();
        assert_eq!(dim0.len(), words);
        for (w, row) in dim0.iter().enumerate() {
            for (r, v) in row.as_array().unwrap().iter().enumerate() {
                assert_eq!(
                    ours[r * words + w],
                    v.as_i64().unwrap() as i32 as u32,
                    "{bits} bits dim 0"
                );
            }
        }
        assert_eq!(unpack_rows(&ours, rows, cols, bits), codes);
        seen.push(bits);
    }
    assert_eq!(seen, [2, 3, 4]);
}

#[test]
fn dense_roundtrip_f32_exact_and_bf16_rounded() {
    let m = pseudo_random(6, 10, 1);
    let mut t = encode_dense("a.q", &m, Dtype::F32).unwrap();
    t.extend(encode_dense("a.k", &m, Dtype::BF16).unwrap());
    let (_d, s) = roundtrip(t, u64::MAX);
    assert_eq!(s.read_linear("a.q", 6, 10, None).unwrap(), m);
    let b = s.read_linear("a.k", 6, 10, None).unwrap();
    for (x, y) in b.data.iter().zip(&m.data) {
        assert_eq!(*x, half::bf16::from_f32(*y).to_f32());
    }
    let e = s.read_linear("a.q", 10, 6, None).unwrap_err().to_string();
    assert!(
        e.contains("`a.q.weight`") && e.contains("[6, 10]") && e.contains("[10, 6]"),
        "{e}"
    );
    assert!(
        s.read_linear("a.v", 6, 10, None)
            .unwrap_err()
            .to_string()
            .contains("no weight for linear `a.v`")
    );
}

#[test]
fn sparse_roundtrips_are_exact() {
    let mut m = pseudo_random(4, 16, 2);
    // 2:4: zero two of every four, and a whole group to force stored explicit zeros.
    for (i, v) in m.data.iter_mut().enumerate() {
        if i % 4 == 1 || i % 4 == 2 || i < 4 {
            *v = 0.0;
        }
    }
    let t24 = encode_sparse_24_bitmask("l.m", &m, Dtype::F32).unwrap();
    let comp = &t24.iter().find(|(n, _)| n == "l.m.compressed").unwrap().1;
    assert_eq!(comp.shape, vec![4, 8]);
    assert_eq!(
        t24.iter().find(|(n, _)| n == "l.m.shape").unwrap().1.shape,
        vec![2, 1]
    );
    let mut u = pseudo_random(5, 13, 3);
    u.data.iter_mut().step_by(3).for_each(|v| *v = 0.0);
    let mut t = t24;
    t.extend(encode_sparse_bitmask("l.u", &u, Dtype::F32).unwrap());
    let (_d, s) = roundtrip(t, u64::MAX);
    assert_eq!(s.read_linear("l.m", 4, 16, None).unwrap(), m);
    assert_eq!(s.read_linear("l.u", 5, 13, None).unwrap(), u);
    let (_, offs) = s.read_int("l.u.row_offsets").unwrap();
    assert_eq!(offs[0], 0);
    assert_eq!(
        offs[1],
        u.row(0).iter().filter(|v| **v != 0.0).count() as i64
    );
    // Three non-zeros in a group is refused, naming the row and columns.
    let bad = Matrix::from_vec(1, 4, vec![1.0, 2.0, 3.0, 0.0]);
    let e = encode_sparse_24_bitmask("x", &bad, Dtype::F32)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 0, columns 0..4"), "{e}");
}

#[test]
fn sparse_24_keeps_two_largest_ties_to_the_higher_column() {
    let m = Matrix::from_vec(1, 8, vec![0.0, 0.0, 0.0, 0.0, 0.0, -2.0, 0.0, 0.0]);
    let t = encode_sparse_24_bitmask("p", &m, Dtype::F32).unwrap();
    let mask = &t.iter().find(|(n, _)| n == "p.bitmask").unwrap().1;
    // Group 0 keeps columns 2 and 3 (all ties); group 1 keeps 5 (|-2|) and 7 (the last tie), as
    // compressed-tensors' torch.topk does on the CPU.
    assert_eq!(mask.bytes, vec![0b1010_1100]);
}

/// The legacy sparse layouts against compressed-tensors 0.14.0.1, the last release that
/// registers their compressors (tests/fixtures/ct-sparse/, made by tools/ct_legacy/): pare's
/// encoding of the fixture's dense weights is byte-identical to the library's, and pare reads
/// the library's file back to the same weights.
#[test]
fn legacy_sparse_layouts_match_compressed_tensors_0_14_byte_for_byte() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ct-sparse");
    let mut checked = 0;
    for dir in [
        "bitmask-bf16",
        "24-bitmask-bf16",
        "bitmask-f32",
        "24-bitmask-f32",
        "bitmask-edge-f32",
        "24-bitmask-edge-f32",
    ] {
        let d = root.join(dir);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("FIXTURE.json")).unwrap())
                .unwrap();
        assert_eq!(meta["versions"]["compressed-tensors"], "0.14.0.1", "{dir}");
        let dense_bytes = std::fs::read(d.join("dense.safetensors")).unwrap();
        let dense = safetensors::SafeTensors::deserialize(&dense_bytes).unwrap();
        let comp_bytes = std::fs::read(d.join("compressed.safetensors")).unwrap();
        let comp = safetensors::SafeTensors::deserialize(&comp_bytes).unwrap();
        // The library's file as a checkpoint pare opens.
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("model.safetensors"), &comp_bytes).unwrap();
        let store = TensorStore::open(tmp.path()).unwrap();
        let mut theirs: Vec<String> = comp.names().into_iter().map(String::from).collect();
        theirs.sort();
        let mut ours_all = Vec::new();
        for (name, view) in dense.tensors() {
            let prefix = name.strip_suffix(".weight").unwrap();
            let (rows, cols) = (view.shape()[0], view.shape()[1]);
            let values =
                crate::checkpoint::reader::bytes_to_f32(view.data(), view.dtype()).unwrap();
            let w = Matrix::from_vec(rows, cols, values);
            let ours = if dir.starts_with("24-") {
                encode_sparse_24_bitmask(prefix, &w, view.dtype()).unwrap()
            } else {
                encode_sparse_bitmask(prefix, &w, view.dtype()).unwrap()
            };
            for (n, t) in &ours {
                let th = comp.tensor(n).unwrap_or_else(|e| panic!("{dir}: {n}: {e}"));
                assert_eq!(
                    (t.dtype, &t.shape[..]),
                    (th.dtype(), th.shape()),
                    "{dir} {n}"
                );
                assert_eq!(&t.bytes[..], th.data(), "{dir} {n}");
                ours_all.push(n.clone());
            }
            assert_eq!(
                store.read_linear(prefix, rows, cols, None).unwrap(),
                w,
                "{dir} {prefix}"
            );
            checked += 1;
        }
        ours_all.sort();
        assert_eq!(ours_all, theirs, "{dir}: tensor names");
    }
    assert_eq!(checked, 7 + 7 + 2 + 2 + 1 + 1);
}

#[test]
fn pack_quantized_roundtrip_symmetric_and_asymmetric() {
    for (bits, gs, sym, dt) in [
        (4u8, Some(8), true, ScaleDtype::F32),
        (8, None, true, ScaleDtype::BF16),
        (4, Some(16), false, ScaleDtype::BF16),
        (2, Some(8), false, ScaleDtype::F32),
        (3, Some(8), true, ScaleDtype::F32),
        (3, None, false, ScaleDtype::BF16),
        (2, Some(16), true, ScaleDtype::F16Grid),
        (8, Some(8), false, ScaleDtype::F16),
    ] {
        let m = pseudo_random(7, 32, bits as u32 + 11);
        let scheme = QuantScheme {
            bits,
            group_size: gs,
            symmetric: sym,
        };
        let (deq, q) = quantize_rtn(&m, scheme, dt).unwrap();
        let sdt = match dt {
            ScaleDtype::BF16 => Dtype::BF16,
            ScaleDtype::F16 => Dtype::F16,
            ScaleDtype::F32 | ScaleDtype::F16Grid => Dtype::F32,
        };
        let t = encode_pack_quantized("b.o", &q, 7, 32, sdt).unwrap();
        assert_eq!(t.iter().any(|(n, _)| n == "b.o.weight_zero_point"), !sym);
        let (_d, s) = roundtrip(t, u64::MAX);
        let qcfg_value = quantization_config_json(&[(scheme, vec!["b.o".into()])], &[], "0.19.0");
        let qcfg = QuantizationConfig::from_config(&qcfg_value, Path::new("config.json")).unwrap();
        assert_eq!(
            s.read_linear("b.o", 7, 32, qcfg.as_ref()).unwrap(),
            deq,
            "{scheme:?}"
        );
        // Without a config the width is inferred from the packed shape.
        assert_eq!(s.read_linear("b.o", 7, 32, None).unwrap(), deq);
        let e = s.read_linear("b.o", 7, 16, None).unwrap_err().to_string();
        assert!(e.contains("weight_shape") && e.contains("[7, 16]"), "{e}");
    }
}

/// The fixture's quantised modules: prefixes of every `*.weight_packed`.
fn packed_prefixes(s: &TensorStore) -> Vec<String> {
    s.names()
        .filter_map(|n| n.strip_suffix(".weight_packed"))
        .map(str::to_string)
        .collect()
}

fn ulp_diff(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// THE byte-exactness test: tiny-llama (bf16 upcast to f32) through `quantize_rtn` and
/// `encode_pack_quantized` gives the tensors llm-compressor wrote, for every quantised linear.
#[test]
fn rtn_matches_compressed_tensors_fixtures_byte_for_byte() {
    let base = TensorStore::open(&tiny()).unwrap();
    for (dir, scheme) in [
        (
            "w4g32",
            QuantScheme {
                bits: 4,
                group_size: Some(32),
                symmetric: true,
            },
        ),
        (
            "w8ch",
            QuantScheme {
                bits: 8,
                group_size: None,
                symmetric: true,
            },
        ),
    ] {
        let fdir = Path::new(SHARED).join("fixtures/ct-rtn").join(dir);
        let fx = TensorStore::open(&fdir).unwrap();
        let prefixes = packed_prefixes(&fx);
        assert_eq!(prefixes.len(), 8 * 7, "{dir}");
        let (mut packed_diff, mut max_ulp) = (0usize, 0u32);
        for p in &prefixes {
            let (shape, data) = base.read_f32(&format!("{p}.weight")).unwrap();
            let m = Matrix::from_vec(shape[0], shape[1], data);
            let (_, q) = quantize_rtn(&m, scheme, ScaleDtype::F32).unwrap();
            let ours = encode_pack_quantized(p, &q, m.rows, m.cols, Dtype::F32).unwrap();
            let theirs: Vec<&str> = fx
                .names()
                .filter(|n| {
                    n.strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with(".weight"))
                })
                .collect();
            let mut our_names: Vec<&str> = ours.iter().map(|(n, _)| n.as_str()).collect();
            our_names.sort();
            assert_eq!(our_names, theirs, "{dir} {p}");
            for (name, t) in &ours {
                let (dt, sh, bytes) = fx.read_raw(name).unwrap();
                assert_eq!((dt, &sh), (t.dtype, &t.shape), "{dir} {name}");
                if name.ends_with("weight_scale") {
                    for (a, b) in t.bytes.chunks(4).zip(bytes.chunks(4)) {
                        let (a, b) = (
                            f32::from_le_bytes(a.try_into().unwrap()),
                            f32::from_le_bytes(b.try_into().unwrap()),
                        );
                        max_ulp = max_ulp.max(ulp_diff(a, b));
                    }
                } else if name.ends_with("weight_packed") {
                    packed_diff += t
                        .bytes
                        .chunks(4)
                        .zip(bytes.chunks(4))
                        .filter(|(a, b)| a != b)
                        .count();
                } else {
                    assert_eq!(&t.bytes[..], bytes, "{dir} {name}");
                }
            }
        }
        assert_eq!(
            (packed_diff, max_ulp),
            (0, 0),
            "{dir}: differing packed words, max scale ulp difference"
        );
    }
}

#[test]
fn fixture_decodes_within_one_step_of_the_original() {
    let base = TensorStore::open(&tiny()).unwrap();
    for dir in ["w4g32", "w8ch"] {
        let fdir = Path::new(SHARED).join("fixtures/ct-rtn").join(dir);
        let fx = TensorStore::open(&fdir).unwrap();
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(fdir.join("config.json")).unwrap())
                .unwrap();
        let qcfg =
            QuantizationConfig::from_config(&cfg["quantization_config"], &fdir.join("config.json"))
                .unwrap();
        for p in [
            "model.layers.0.mlp.down_proj",
            "model.layers.7.self_attn.k_proj",
        ] {
            let (shape, w) = base.read_f32(&format!("{p}.weight")).unwrap();
            let d = fx
                .read_linear(p, shape[0], shape[1], qcfg.as_ref())
                .unwrap();
            let (_, scales) = fx.read_f32(&format!("{p}.weight_scale")).unwrap();
            let ng = scales.len() / shape[0];
            for r in 0..shape[0] {
                for c in 0..shape[1] {
                    let s = scales[r * ng + c * ng / shape[1]];
                    let (a, b) = (d.get(r, c), w[r * shape[1] + c]);
                    assert!(
                        (a - b).abs() <= s * 0.5001,
                        "{dir} {p} [{r},{c}]: {a} vs {b}, scale {s}"
                    );
                }
            }
        }
        // Non-quantised tensors are the f32 upcast of the bf16 originals.
        assert_eq!(
            fx.read_f32("model.norm.weight").unwrap(),
            base.read_f32("model.norm.weight").unwrap()
        );
    }
}

#[test]
fn quantization_config_json_matches_fixtures() {
    for (dir, scheme) in [
        (
            "w4g32",
            QuantScheme {
                bits: 4,
                group_size: Some(32),
                symmetric: true,
            },
        ),
        (
            "w8ch",
            QuantScheme {
                bits: 8,
                group_size: None,
                symmetric: true,
            },
        ),
    ] {
        let fdir = Path::new(SHARED).join("fixtures/ct-rtn").join(dir);
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(fdir.join("config.json")).unwrap())
                .unwrap();
        let fx = TensorStore::open(&fdir).unwrap();
        let ours = quantization_config_json(
            &[(scheme, packed_prefixes(&fx))],
            &["lm_head".to_string()],
            "0.19.0",
        );
        assert_eq!(ours, cfg["quantization_config"], "{dir}");
    }
    // Two schemes: exact module names as targets, asymmetric zp_dtype.
    let a = QuantScheme {
        bits: 4,
        group_size: Some(128),
        symmetric: false,
    };
    let b = QuantScheme {
        bits: 8,
        group_size: None,
        symmetric: true,
    };
    let v = quantization_config_json(
        &[(a, vec!["m.x".into()]), (b, vec!["m.y".into()])],
        &[],
        "0.19.0",
    );
    assert_eq!(v["config_groups"]["group_0"]["targets"], json!(["m.x"]));
    assert_eq!(
        v["config_groups"]["group_0"]["weights"]["zp_dtype"],
        json!("torch.int8")
    );
    assert_eq!(
        v["config_groups"]["group_1"]["weights"]["strategy"],
        json!("channel")
    );
    let q = QuantizationConfig::from_config(&v, Path::new("c.json"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (q.bits_for("m.x"), q.bits_for("m.y"), q.bits_for("m.z")),
        (Some(4), Some(8), None)
    );
    let sp = sparsity_config_json(
        "sparse-24-bitmask",
        0.5,
        "2:4",
        &["Linear".into()],
        &["lm_head".into()],
    );
    assert_eq!(sp["sparsity_structure"], "2:4");
    assert_eq!(sp.as_object().unwrap().len(), 5);
}
