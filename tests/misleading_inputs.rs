//! Inputs that mislead rather than break: each was rebuilt from a published bug report in this
//! field, and each test is named after the kind of fault (the NaN-weights kind is in
//! engine_errors.rs with the other damaged-checkpoint cases).

mod common;

use std::path::{Path, PathBuf};

use pare::pipeline::ModelRunner;

use common::{
    assert_fails, compress, copy_model, cpu, eval_args, model_dir, pare, read_config, read_tensor,
    text, write_config, write_recipe,
};

fn crate_file(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .display()
        .to_string()
}

fn valid_text() -> String {
    crate_file("calibration/tinystories-valid-head.txt")
}

fn stories_copy(tmp: &Path) -> PathBuf {
    let m = tmp.join("model");
    copy_model(Path::new(&crate_file("models/stories260k")), &m);
    m
}

/// Case 1. Two models with 4,096-token vocabularies but different tokenizers: a comparison is
/// refused (exit 2) naming tokenizer.json; so is one whose merges alone differ; the same
/// tokenizer in two folders is accepted.
#[test]
fn comparing_models_with_different_tokenizers_is_refused() {
    let (mixtral, llama) = (model_dir("tiny-mixtral"), model_dir("tiny-llama"));
    let vt = valid_text();
    let (m, b) = (
        mixtral.to_str().expect("utf-8"),
        llama.to_str().expect("utf-8"),
    );
    assert_fails(
        &eval_args(m, &vt, &["--base", b]),
        &["tokenizer.json", "differ", "vocabularies"],
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = stories_copy(tmp.path());
    let tp = copy.join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tp).expect("read")).expect("json");
    let merges = t["model"]["merges"].as_array_mut().expect("merges");
    merges.swap(0, 1);
    std::fs::write(&tp, serde_json::to_string(&t).expect("ser")).expect("write");
    let base = crate_file("models/stories260k");
    let c = copy.to_str().expect("utf-8");
    assert_fails(
        &eval_args(c, &vt, &["--base", &base]),
        &["tokenizer.json", "merges"],
    );

    let shared = model_dir("stories260k");
    let out = pare(&eval_args(
        &base,
        &vt,
        &["--base", shared.to_str().expect("utf-8")],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
}

/// Case 3. A real sliding window (tiny-llama's weights as `MistralForCausalLM` with
/// `sliding_window: 64`) at 512 tokens matches transformers' eager attention: logits within
/// 1e-4 at positions on both sides of the window, perplexity to 4 significant digits; and it
/// is not the full-causal perplexity (the window binds). Golden made by
/// tools/sliding_window/make_golden.py.
#[test]
fn sliding_window_attention_matches_transformers() {
    let golden =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sliding-window.safetensors");
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("mistral");
    copy_model(&model_dir("tiny-llama"), &dir);
    let mut cfg = read_config(&dir);
    cfg["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    cfg["model_type"] = serde_json::json!("mistral");
    cfg["sliding_window"] = serde_json::json!(64);
    write_config(&dir, &cfg);
    let mut runner = ModelRunner::open(&dir, &cpu()).expect("open");
    assert_eq!(runner.cfg().window_of(0), Some(64));
    let ids: Vec<u32> = read_tensor(&golden, "input_ids")
        .values
        .iter()
        .map(|&v| v as u32)
        .collect();
    assert_eq!(ids.len(), 512);
    let vocab = runner.ends.vocab;
    let logits = runner.logits(&ids).expect("logits");
    let positions = read_tensor(&golden, "positions").values;
    let want = read_tensor(&golden, "logits");
    for (k, &p) in positions.iter().enumerate() {
        let p = p as usize;
        let got = &logits[p * vocab..(p + 1) * vocab];
        let worst = got
            .iter()
            .zip(&want.values[k * vocab..(k + 1) * vocab])
            .map(|(g, w)| (*g as f64 - w).abs())
            .fold(0.0, f64::max);
        assert!(worst <= 1e-4, "position {p}: logits differ by {worst:e}");
    }
    let mut nll = 0.0f64;
    for t in 0..511 {
        let row = &logits[t * vocab..(t + 1) * vocab];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        nll += lse - row[ids[t + 1] as usize] as f64;
    }
    let ppl = (nll / 511.0).exp();
    let want_ppl = read_tensor(&golden, "mean_nll").values[0].exp();
    let full_ppl = read_tensor(&golden, "full_nll").values[0].exp();
    assert!(
        (ppl / want_ppl - 1.0).abs() < 5e-5,
        "perplexity {ppl} vs transformers {want_ppl}"
    );
    // The window binds: pare's figure is not the full-causal one.
    assert!(
        (full_ppl / ppl - 1.0).abs() > 1e-3,
        "the window does not bind: {full_ppl} vs {ppl}"
    );
}

/// Case 4. Calibration windows longer than the model's context warn in compress exactly as
/// evaluation windows do in eval, and the report records it.
#[test]
fn windows_beyond_the_context_warn_the_same_in_compress_and_eval() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(
        tmp.path(),
        "r",
        1,
        600,
        "magnitude: { sparsity: 0.5 }",
        "dense",
    );
    let model = crate_file("models/stories260k");
    let out = tmp.path().join("out");
    let o = compress(&[], Path::new(&model), &recipe, &out);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{se}");
    let want = "calibration windows of 600 tokens exceed config.json max_position_embeddings 512";
    assert!(se.contains(want), "compress does not warn: {se}");
    let report = std::fs::read_to_string(out.join("report.json")).expect("report");
    assert!(report.contains(want), "the report does not record it");
    let vt = valid_text();
    let o = pare(&[
        "eval",
        "--model",
        &model,
        "--text",
        &vt,
        "--seq-len",
        "600",
        "--max-windows",
        "1",
    ]);
    let (_, se) = text(&o);
    assert!(
        se.contains(
            "evaluation windows of 600 tokens exceed config.json max_position_embeddings 512"
        ),
        "eval warns differently: {se}"
    );
}

/// Case 5. Python's bare `NaN`/`Infinity` in config.json: accepted in a field pare does not
/// read (and written back as written), refused naming the field in one it reads.
#[test]
fn python_json_non_finite_tokens_in_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = stories_copy(tmp.path());
    let cp = m.join("config.json");
    let cfg = std::fs::read_to_string(&cp).expect("read");
    assert!(
        cfg.contains("\"initializer_range\": 0.02") && cfg.contains("\n  \"rope_theta\": 10000.0")
    );
    let unused = cfg
        .replace("\"initializer_range\": 0.02", "\"initializer_range\": NaN")
        .replacen('{', "{\n  \"some_limit\": -Infinity,", 1);
    std::fs::write(&cp, &unused).expect("write");
    let vt = valid_text();
    let ms = m.to_str().expect("utf-8");
    let o = pare(&eval_args(ms, &vt, &[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let recipe = write_recipe(
        tmp.path(),
        "r",
        1,
        16,
        "magnitude: { sparsity: 0.5 }",
        "dense",
    );
    let out = tmp.path().join("out");
    let o = compress(&[], &m, &recipe, &out);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
    let written = std::fs::read_to_string(out.join("config.json")).expect("output config");
    assert!(
        written.contains("\"initializer_range\": NaN")
            && written.contains("\"some_limit\": -Infinity"),
        "{written}"
    );
    let used = cfg.replace(
        "\n  \"rope_theta\": 10000.0",
        "\n  \"rope_theta\": Infinity",
    );
    std::fs::write(&cp, &used).expect("write");
    assert_fails(
        &eval_args(ms, &vt, &[]),
        &["config.json", "`rope_theta`", "Infinity"],
    );
}

/// Case 6. An added token whose id is past the embedding table: the error names tokenizer.json,
/// the token and config.json's `vocab_size`.
#[test]
fn token_ids_outside_the_embedding_table_name_both_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = stories_copy(tmp.path());
    let tp = m.join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tp).expect("read")).expect("json");
    t["added_tokens"]
        .as_array_mut()
        .expect("added_tokens")
        .push(serde_json::json!({
            "id": 512, "content": "<|extra|>", "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    std::fs::write(&tp, serde_json::to_string(&t).expect("ser")).expect("write");
    let txt = tmp.path().join("t.txt");
    std::fs::write(
        &txt,
        "Once upon a time <|extra|> there was a dog. ".repeat(20),
    )
    .expect("write");
    let ms = m.to_str().expect("utf-8");
    assert_fails(
        &eval_args(ms, txt.to_str().expect("utf-8"), &[]),
        &[
            "tokenizer.json",
            "<|extra|>",
            "512",
            "config.json",
            "vocab_size",
        ],
    );
}

/// Case 7. `--max-windows 0` names the flag instead of calling the text too short.
#[test]
fn zero_max_windows_names_the_flag() {
    let model = crate_file("models/stories260k");
    let vt = valid_text();
    let args = [
        "eval",
        "--model",
        &model,
        "--text",
        &vt,
        "--max-windows",
        "0",
    ];
    assert_fails(&args, &["--max-windows 0", "at least 1"]);
}

/// Case 8. Every warning names its layer once (tiny-mixtral, one 6-token calibration sample
/// with `calibrate_all_experts: false`: most experts see no token and fall back to RTN, one
/// warning per expert).
#[test]
fn warnings_name_their_layer_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(
        tmp.path(),
        "r",
        1,
        6,
        "gptq: { format: int4-ch-sym }",
        "dense",
    );
    let y = std::fs::read_to_string(&recipe).expect("read recipe");
    let y = y.replacen("seed: 0 }", "seed: 0, calibrate_all_experts: false }", 1);
    std::fs::write(&recipe, y).expect("write recipe");
    let out = tmp.path().join("out");
    let model = model_dir("tiny-mixtral");
    let o = compress(&[], &model, &recipe, &out);
    let (_, se) = text(&o);
    let warned: Vec<&str> = se
        .lines()
        .filter(|l| l.contains("no calibration token"))
        .collect();
    assert!(!warned.is_empty(), "no fallback warning: {se}");
    for l in &warned {
        let id = l
            .trim_start_matches("warning: ")
            .split(':')
            .next()
            .expect("an id");
        assert!(
            id.starts_with("blocks.") && id.contains(".moe.experts."),
            "{l}"
        );
        assert_eq!(
            l.matches(id).count(),
            1,
            "the layer is named more than once: {l}"
        );
        assert_eq!(
            se.lines()
                .filter(|x| x.starts_with(&format!("warning: {id}:")))
                .count(),
            1,
            "expert {id} warned more than once"
        );
    }
}
