//! GGUF export for llama.cpp: pare's files against llama.cpp's own converter
//! (tests/golden/gguf, made by tools/gguf_fixture/make_fixtures.py), exactness of the re-packed
//! GPTQ/RTN codes, and the refusals.

mod common;

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use common::{compress, model_dir, pare, text, write_recipe};
use pare::gguf::{GgmlType, GgufFile, Value, convert_checkpoint, quants};
use serde_json::Value as Json;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn fnv(bytes: &[u8]) -> String {
    let mut h = fnv::FnvHasher::default();
    h.write(bytes);
    format!("{:016x}", h.finish())
}

/// A JSON array as Python's `json.dumps(items, ensure_ascii=False)` writes it.
fn py_json<T: serde::Serialize>(items: &[T]) -> String {
    let parts: Vec<String> = items
        .iter()
        .map(|i| serde_json::to_string(i).expect("json"))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Keys convert_hf_to_gguf writes that pare does not, or writes differently by design (the
/// descriptive names; `add_sep_token` false, llama.cpp's default; SentencePiece scores, where
/// pare writes −merge rank instead of −1000, checked separately).
const DIFFERENT_BY_DESIGN: &[&str] = &[
    "general.name",
    "general.size_label",
    "general.basename",
    "general.finetune",
    "tokenizer.ggml.add_sep_token",
    "tokenizer.ggml.scores",
];

fn check_value(key: &str, want: &Json, got: &Value) {
    let ok = match (want, got) {
        (Json::String(s), Value::Str(g)) => s == g,
        (Json::Bool(b), Value::Bool(g)) => b == g,
        (Json::Number(n), Value::U32(g)) => n.as_u64() == Some(u64::from(*g)),
        (Json::Number(n), Value::I32(g)) => n.as_i64() == Some(i64::from(*g)),
        (Json::Object(o), Value::F32(g)) if o.contains_key("f32") => {
            o["f32"].as_f64().map(|x| x as f32) == Some(*g)
        }
        (Json::Object(o), arr) if o.contains_key("array") => {
            let (len, body) = match arr {
                Value::ArrStr(a) => (a.len(), py_json(a)),
                Value::ArrI32(a) => (a.len(), py_json(a)),
                Value::ArrU32(a) => (a.len(), py_json(a)),
                other => panic!("{key}: unexpected array {other:?}"),
            };
            o["len"].as_u64() == Some(len as u64)
                && o["fnv1a64"].as_str() == Some(&fnv(body.as_bytes()))
        }
        _ => false,
    };
    assert!(
        ok,
        "metadata `{key}`: llama.cpp's converter wrote {want}, pare {got:?}"
    );
}

/// Every tensor (name, type, dims, data bytes) and every metadata value llama.cpp's
/// convert_hf_to_gguf.py writes for the same checkpoint, but the keys listed above.
#[test]
fn matches_llama_cpps_converter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = repo("tests/golden/gguf");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("fixtures") {
        let path = e.expect("entry").path();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("name")
            .to_string();
        let (model, ty) = stem.rsplit_once('-').expect("<model>-<type>");
        let fixture: Json =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        let out = tmp.path().join(format!("{stem}.gguf"));
        let ty = GgmlType::parse(ty).expect("type");
        convert_checkpoint(&model_dir(model), &out, ty, model).expect("convert");
        let g = GgufFile::open(&out).expect("open");
        for (key, want) in fixture["metadata"].as_object().expect("metadata") {
            if DIFFERENT_BY_DESIGN.contains(&key.as_str()) {
                continue;
            }
            let got = g
                .get(key)
                .unwrap_or_else(|| panic!("{stem}: pare wrote no `{key}`"));
            check_value(&format!("{stem}: {key}"), want, got);
        }
        let tensors = fixture["tensors"].as_array().expect("tensors");
        assert_eq!(g.tensors.len(), tensors.len(), "{stem}: tensor count");
        for t in tensors {
            let name = t["name"].as_str().expect("name");
            let info = g
                .tensor(name)
                .unwrap_or_else(|| panic!("{stem}: no tensor {name}"));
            let ggml = GgmlType::from_id(info.ggml_type).expect("type");
            assert_eq!(
                ggml.label(),
                t["type"].as_str().expect("type"),
                "{stem}: {name} type"
            );
            let dims: Vec<u64> = t["dims"]
                .as_array()
                .expect("dims")
                .iter()
                .map(|d| d.as_u64().expect("dim"))
                .collect();
            assert_eq!(info.dims, dims, "{stem}: {name} dims");
            let data = g.data(info).expect("data");
            assert_eq!(
                fnv(data),
                t["fnv1a64"].as_str().expect("hash"),
                "{stem}: {name} bytes"
            );
        }
        assert_eq!(g.data_start % 32, 0, "{stem}: data section aligned");
        n += 1;
    }
    assert_eq!(n, 7, "fixtures");
}

/// SentencePiece-style vocabularies score tokens by merge rank (llama.cpp merges the pair of
/// highest score): the first merge's token scores 0, later ones lower, bytes and specials 0.
#[test]
fn sentencepiece_scores_follow_merge_rank() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("s.gguf");
    convert_checkpoint(&repo("models/stories260k"), &out, GgmlType::F32, "s").expect("convert");
    let g = GgufFile::open(&out).expect("open");
    let (Some(Value::ArrStr(tokens)), Some(Value::ArrF32(scores))) = (
        g.get("tokenizer.ggml.tokens"),
        g.get("tokenizer.ggml.scores"),
    ) else {
        panic!("tokens and scores");
    };
    let score = |t: &str| scores[tokens.iter().position(|x| x == t).expect(t)];
    // tokenizer.json's first merges: ["▁", "t"], ["h", "e"], ["▁", "a"].
    assert_eq!(score("▁t"), 0.0);
    assert_eq!(score("he"), -1.0);
    assert_eq!(score("▁a"), -2.0);
    assert_eq!(score("<0x41>"), 0.0);
    assert!(score("▁the") < score("he"));
}

/// The Q4_0 blocks of a GPTQ int4-g32-sym result dequantise to exactly the weights the
/// checkpoint beside them holds (q/k rows in llama.cpp's RoPE order); f32 stories260k.
#[test]
fn q4_0_holds_gptq_codes_bit_for_bit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("gptq");
    let o = compress(
        &["--quiet"],
        &repo("models/stories260k"),
        &repo("recipes/gptq-q4_0-gguf.yaml"),
        &out,
    );
    assert!(o.status.success(), "{:?}", text(&o));
    let report: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["gguf"]["exact"], 30, "5 blocks × q,k,v,o,gate,up");
    assert_eq!(
        report["gguf"]["requantised"],
        serde_json::json!(["token_embd.weight"])
    );
    check_exact(&out, 30);
}

/// The same for a bf16 model (tiny-llama, RTN int4-g32-sym, every linear): scales are kept in
/// f32 beside the bf16 weights, so nothing is rounded twice.
#[test]
fn q4_0_holds_rtn_codes_of_a_bf16_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = tmp.path().join("r.yaml");
    std::fs::write(
        &recipe,
        "steps:\n  - rtn: { format: int4-g32-sym }\nexport: { format: gguf }\n",
    )
    .expect("recipe");
    let out = tmp.path().join("rtn");
    let o = compress(&["--quiet"], &model_dir("tiny-llama"), &recipe, &out);
    assert!(o.status.success(), "{:?}", text(&o));
    let g = GgufFile::open(&out.join("model.gguf")).expect("gguf");
    // type defaults to q4_0 after an int4-g32-sym step.
    assert_eq!(g.get("general.file_type"), Some(&Value::U32(2)));
    let layers = 8;
    check_exact(&out, 7 * layers);
}

/// Every Q4_0/Q8_0 linear of `out/model.gguf` equals `out`'s checkpoint bit for bit.
fn check_exact(out: &Path, want: usize) {
    let g = GgufFile::open(&out.join("model.gguf")).expect("gguf");
    let store = pare::checkpoint::TensorStore::open(out).expect("store");
    let cfg = pare::config::HfConfig::load(out).expect("config");
    let qcfg = pare::checkpoint::QuantizationConfig::from_config(
        &cfg.raw["quantization_config"],
        &out.join("config.json"),
    )
    .expect("qcfg");
    let mut checked = 0;
    for b in 0..cfg.num_layers {
        for (gguf, hf, heads) in [
            ("attn_q", "self_attn.q_proj", Some(cfg.num_heads)),
            ("attn_k", "self_attn.k_proj", Some(cfg.num_kv_heads)),
            ("attn_v", "self_attn.v_proj", None),
            ("attn_output", "self_attn.o_proj", None),
            ("ffn_gate", "mlp.gate_proj", None),
            ("ffn_up", "mlp.up_proj", None),
            ("ffn_down", "mlp.down_proj", None),
        ] {
            let info = g.tensor(&format!("blk.{b}.{gguf}.weight")).expect("tensor");
            let ty = GgmlType::from_id(info.ggml_type).expect("type");
            let back = match ty {
                GgmlType::Q4_0 => quants::dequant_q4_0(g.data(info).expect("data")),
                GgmlType::Q8_0 => quants::dequant_q8_0(g.data(info).expect("data")),
                _ => continue,
            };
            let (cols, rows) = (info.dims[0] as usize, info.dims[1] as usize);
            let key = format!("model.layers.{b}.{hf}");
            let m = store
                .read_linear(&key, rows, cols, qcfg.as_ref())
                .expect("linear");
            let d = rows / heads.unwrap_or(1);
            for r in 0..rows {
                // llama.cpp row r of a head holds HF row (r%2)·d/2 + r/2 of that head.
                let src = match heads {
                    Some(_) => (r / d) * d + (r % d % 2) * (d / 2) + (r % d) / 2,
                    None => r,
                };
                for c in 0..cols {
                    assert_eq!(
                        back[r * cols + c].to_bits(),
                        m.data[src * cols + c].to_bits(),
                        "{key} [{src}, {c}]"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, want, "quantised linears checked");
}

/// What GGUF cannot hold exactly is refused with exit 2, naming the file or field, and leaves no
/// output behind.
#[test]
fn refuses_what_gguf_cannot_hold() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stories = repo("models/stories260k");
    // A recipe: int4 per channel is no GGUF block.
    let r = tmp.path().join("ch.yaml");
    std::fs::write(
        &r,
        "steps:\n  - rtn: { format: int4-ch-sym }\nexport: { format: gguf }\n",
    )
    .expect("recipe");
    let out = tmp.path().join("ch");
    let o = compress(&[], &stories, &r, &out);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("export.format") && err.contains("Q4_0") && err.contains("int4-ch-sym"),
        "{err}"
    );
    assert!(!out.exists());
    // `type` without `format: gguf`.
    let r = tmp.path().join("ty.yaml");
    std::fs::write(
        &r,
        "steps:\n  - rtn: { format: int8-ch-sym }\nexport: { format: dense, type: q8_0 }\n",
    )
    .expect("recipe");
    let o = compress(&[], &stories, &r, &tmp.path().join("ty"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("export.type"), "{:?}", text(&o));

    // `pare export` of checkpoints whose codes GGUF cannot hold: asymmetric int4, and f32 scales
    // that are not f16s (a plain pack-quantized export of an f32 model).
    for (name, format, why) in [
        ("asym", "int4-g32-asym", "Q4_1"),
        ("f32scales", "int4-g32-sym", "f16 cannot hold exactly"),
    ] {
        let r = write_recipe(
            tmp.path(),
            name,
            2,
            32,
            &format!("rtn: {{ format: {format}, ignore: [\"blocks.*.mlp.down\"] }}"),
            "pack-quantized",
        );
        let ckpt = tmp.path().join(name);
        let o = compress(&["--quiet"], &stories, &r, &ckpt);
        assert!(o.status.success(), "{:?}", text(&o));
        let gguf = tmp.path().join(format!("{name}.gguf"));
        let o = pare(&[
            "export",
            "--model",
            ckpt.to_str().unwrap(),
            "--to",
            "gguf",
            "--type",
            "q4_0",
            "--out",
            gguf.to_str().unwrap(),
        ]);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(
            err.contains(why) && err.contains("model.layers.0.self_attn.q_proj"),
            "{name}: {err}"
        );
        assert!(!gguf.exists() && !tmp.path().join(format!("{name}.gguf.partial")).exists());
    }
}
