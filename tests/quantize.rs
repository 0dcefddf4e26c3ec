//! Quantisation end to end through the CLI: byte-exactness of `pack-quantized` output against
//! llm-compressor's fixtures, 2:4 surviving GPTQ, quantised output read back, and bad input.

mod common_compress;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pare::checkpoint::{CheckpointWriter, Dtype, OutTensor, TensorStore, encode_floats};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared");

fn pare() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pare"))
}

/// A float32 copy of tiny-llama (llm-compressor quantised the float32 upcast of it).
fn tiny_llama_f32(dir: &Path) -> PathBuf {
    let src = PathBuf::from(SHARED).join("models/tiny-llama");
    let out = dir.join("tiny-llama-f32");
    let store = TensorStore::open(&src).unwrap();
    let mut w = CheckpointWriter::create(&out, &src, false, 5_000_000_000).unwrap();
    for name in store.names().map(str::to_string).collect::<Vec<_>>() {
        let (shape, v) = store.read_f32(&name).unwrap();
        let bytes = encode_floats(&v, Dtype::F32).unwrap();
        w.add(
            name,
            OutTensor {
                dtype: Dtype::F32,
                shape,
                bytes,
            },
        )
        .unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["dtype"] = serde_json::json!("float32");
    let files: Vec<PathBuf> = ["tokenizer.json", "tokenizer_config.json"]
        .iter()
        .map(|f| src.join(f))
        .collect();
    w.finish(&cfg, &files, &[], BTreeMap::new()).unwrap();
    out
}

fn write_recipe(dir: &Path, name: &str, steps: &str, export: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let text = format!(
        "calibration: {{ text: {SHARED}/data/tinystories/tinystories_train_head.txt, samples: 4, seq_len: 128 }}\n\
         steps:\n{steps}\nexport: {{ format: {export} }}\n"
    );
    std::fs::write(&p, text).unwrap();
    p
}

fn compress(model: &Path, recipe: &Path, out: &Path) -> std::process::Output {
    pare()
        .args(["--quiet", "compress", "--model"])
        .arg(model)
        .arg("--recipe")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn pack_quantized_matches_llm_compressor_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_llama_f32(tmp.path());
    for (fixture, format) in [("w4g32", "int4-g32-sym"), ("w8ch", "int8-ch-sym")] {
        let recipe = write_recipe(
            tmp.path(),
            fixture,
            &format!("  - rtn: {{ format: {format} }}"),
            "pack-quantized",
        );
        let out = tmp.path().join(format!("out-{fixture}"));
        let o = compress(&model, &recipe, &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let ours = TensorStore::open(&out).unwrap();
        let theirs =
            TensorStore::open(&PathBuf::from(SHARED).join("fixtures/ct-rtn").join(fixture))
                .unwrap();
        let a: Vec<&str> = ours.names().collect();
        let b: Vec<&str> = theirs.names().collect();
        assert_eq!(a, b, "{fixture}: tensor names");
        for name in b {
            let (dt1, s1, x1) = ours.read_raw(name).unwrap();
            let (dt2, s2, x2) = theirs.read_raw(name).unwrap();
            assert_eq!((dt1, &s1), (dt2, &s2), "{fixture}: {name} dtype/shape");
            assert!(x1 == x2, "{fixture}: {name} bytes differ");
        }
        let read = |p: &Path| -> serde_json::Value {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(p.join("config.json")).unwrap())
                    .unwrap();
            v["quantization_config"].clone()
        };
        let mut q1 = read(&out);
        let mut q2 = read(&PathBuf::from(SHARED).join("fixtures/ct-rtn").join(fixture));
        q1["version"] = serde_json::Value::Null;
        q2["version"] = serde_json::Value::Null;
        assert_eq!(q1, q2, "{fixture}: quantization_config");
    }
}

#[test]
fn two_of_four_survives_gptq_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/stories260k");
    let recipe = write_recipe(
        tmp.path(),
        "sgpt24-gptq",
        "  - sparsegpt: { pattern: \"2:4\" }\n  - gptq: { format: int4-ch-sym }",
        "pack-quantized",
    );
    let out = tmp.path().join("out");
    let o = compress(&model, &recipe, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let weights = &cfg["quantization_config"]["config_groups"]["group_0"]["weights"];
    assert_eq!(
        weights["actorder"], "static",
        "GPTQ writes llm-compressor's act-order: {weights}"
    );
    let o = pare()
        .args(["--json", "inspect"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let linears = info["linears"].as_array().unwrap();
    assert_eq!(linears.len(), 35);
    for l in linears {
        assert_eq!(l["format"], "pack-quantized", "{l}");
        assert_eq!(l["is_2of4"], true, "{}: 2:4 lost after GPTQ", l["id"]);
        assert!(l["zeros"].as_f64().unwrap() >= 0.5, "{l}");
        assert!(l["bits_per_weight"].as_f64().unwrap() < 4.7, "{l}");
    }
}

/// Compresses `model` with a one-step recipe that must be refused: exit code 2, an error that
/// contains every `expected` fragment, and no output folder.
fn assert_refused(model: &Path, name: &str, step: &str, expected: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(tmp.path(), name, step, "pack-quantized");
    let out = tmp.path().join("out");
    let o = compress(model, &recipe, &out);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    for e in expected {
        assert!(err.contains(e), "missing `{e}` in: {err}");
    }
    assert!(!out.exists());
}

#[test]
fn group_size_that_does_not_divide_is_an_error_naming_the_layer() {
    let model = PathBuf::from(SHARED).join("models/tiny-llama");
    let step = "  - rtn: { format: int4-g128-sym }";
    assert_refused(
        &model,
        "g128",
        step,
        &["blocks.0.attn.q", "320", "g128.yaml"],
    );
}

#[test]
fn unknown_format_suggests_a_known_one() {
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/stories260k");
    let step = "  - rtn: { format: int5-ch-sym }";
    assert_refused(&model, "bad", step, &["int5-ch-sym", "bad.yaml"]);
}

#[test]
fn input_with_a_quantisation_pare_cannot_run_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/stories260k");
    let dir = tmp.path().join("fp8");
    std::fs::create_dir(&dir).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    cfg["quantization_config"] = serde_json::json!({
        "quant_method": "compressed-tensors", "format": "float-quantized",
        "config_groups": {"group_0": {"targets": ["Linear"], "format": "float-quantized",
            "weights": {"num_bits": 8, "type": "float", "symmetric": true, "strategy": "channel"},
            "input_activations": null, "output_activations": null}},
        "ignore": ["lm_head"], "quantization_status": "compressed"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let o = pare()
        .args(["eval", "--model"])
        .arg(&dir)
        .arg("--text")
        .arg(src.join("../../calibration/tinystories-valid-head.txt"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("config.json") && err.contains("float"),
        "{err}"
    );
}

/// int2 and int3 (symmetric and asymmetric, per channel and in groups) written pack-quantized
/// read back with the perplexity of the same weights written dense; the packed width is
/// `ceil(cols·bits/32)` words (compressed-tensors' dense packing).
#[test]
fn int2_and_int3_pack_quantized_read_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/stories260k");
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/tinystories-valid-head.txt");
    let ppl = |dir: &Path| common_compress::eval_ppl(dir, &text, 128, 4);
    for format in ["int3-ch-asym", "int2-ch-sym", "int3-g32-sym"] {
        let ignore = if format.contains("-g32-") {
            ", ignore: [\"blocks.*.mlp.down\"]"
        } else {
            ""
        };
        let step = format!("  - gptq: {{ format: {format}{ignore} }}");
        let mut got = Vec::new();
        for export in ["dense", "pack-quantized"] {
            let r = write_recipe(tmp.path(), &format!("{format}-{export}"), &step, export);
            let out = tmp.path().join(format!("{format}-{export}"));
            let o = compress(&model, &r, &out);
            assert!(
                o.status.success(),
                "{format}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            got.push(ppl(&out));
            if export == "pack-quantized" {
                let store = TensorStore::open(&out).unwrap();
                let bits: usize = format[3..4].parse().unwrap();
                let info = store
                    .info("model.layers.0.self_attn.q_proj.weight_packed")
                    .unwrap();
                assert_eq!(info.shape, vec![64, (64 * bits).div_ceil(32)], "{format}");
                let cfg: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(out.join("config.json")).unwrap(),
                )
                .unwrap();
                let groups = cfg["quantization_config"]["config_groups"]
                    .as_object()
                    .unwrap();
                assert!(
                    groups.values().any(|g| g["weights"]["num_bits"] == bits),
                    "{format}"
                );
            }
        }
        assert_eq!(got[0], got[1], "{format}: dense vs pack-quantized");
        assert!(got[0].is_finite() && got[0] > 1.0);
    }
}
