//! Bad inputs through the `pare` binary: every broken model or text gives exit code 2, one message
//! naming the file and field, and writes nothing; NaN/Inf weights are refused unless
//! `--allow-non-finite`.

mod common;

use std::path::{Path, PathBuf};

use common::{
    assert_fails, copy_model, eval_args, model_dir, pare, read_config, text, write_config,
};

/// A scratch copy of stories260k plus a tiny recipe, in a temp dir.
struct Case {
    tmp: tempfile::TempDir,
    model: PathBuf,
}

impl Case {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let model = tmp.path().join("model");
        copy_model(&model_dir("stories260k"), &model);
        Case { tmp, model }
    }

    fn empty() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let model = tmp.path().join("model");
        std::fs::create_dir(&model).expect("mkdir");
        Case { tmp, model }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn recipe(&self) -> PathBuf {
        let calib =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/tinystories-train-head.txt");
        let p = self.path("recipe.yaml");
        let y = format!(
            "calibration: {{ text: {}, samples: 2, seq_len: 32, seed: 0 }}\n\
             steps:\n  - magnitude: {{ sparsity: 0.5 }}\n\
             export: {{ format: dense }}\n",
            calib.display()
        );
        std::fs::write(&p, y).expect("write recipe");
        p
    }
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(r) => r
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn valid_text() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/calibration/tinystories-valid-head.txt"
    )
    .to_string()
}

/// Runs `eval` and `compress` on the case's model; both must fail with the needles, and
/// compress must leave neither the output folder nor a temporary folder behind, and the model
/// directory as it was.
fn assert_model_rejected(case: &Case, needles: &[&str]) {
    let model = case.model.to_str().expect("utf-8 path");
    let before = listing(&case.model);
    let vt = valid_text();
    assert_fails(&eval_args(model, &vt, &[]), needles);
    let recipe = case.recipe();
    let outs = case.path("outs");
    std::fs::create_dir(&outs).expect("mkdir outs");
    let out = outs.join("compressed");
    assert_fails(
        &[
            "compress",
            "--model",
            model,
            "--recipe",
            recipe.to_str().expect("utf-8"),
            "--out",
            out.to_str().expect("utf-8"),
        ],
        needles,
    );
    assert!(!out.exists(), "{} was written", out.display());
    assert_eq!(
        listing(&outs),
        Vec::<String>::new(),
        "left behind in {}",
        outs.display()
    );
    assert_eq!(listing(&case.model), before, "the input model was modified");
}

#[test]
fn missing_model_directory() {
    let case = Case::empty();
    std::fs::remove_dir(&case.model).expect("rmdir");
    assert_model_rejected(
        &case,
        &[case.model.to_str().expect("utf-8"), "does not exist"],
    );
}

#[test]
fn directory_without_config() {
    let case = Case::new();
    std::fs::remove_file(case.model.join("config.json")).expect("rm config");
    assert_model_rejected(&case, &["config.json"]);
}

#[test]
fn unknown_architecture() {
    let case = Case::new();
    let mut cfg = read_config(&case.model);
    cfg["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    write_config(&case.model, &cfg);
    assert_model_rejected(&case, &["config.json", "architectures", "GPT2LMHeadModel"]);
}

#[test]
fn truncated_safetensors() {
    let case = Case::new();
    let p = case.model.join("model.safetensors");
    let len = std::fs::metadata(&p).expect("stat").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open");
    f.set_len(len / 2).expect("truncate");
    drop(f);
    assert_model_rejected(&case, &["model.safetensors", "truncated"]);
}

#[test]
fn header_longer_than_file() {
    let case = Case::new();
    let p = case.model.join("model.safetensors");
    let mut bytes = std::fs::read(&p).expect("read");
    let claimed = bytes.len() as u64 + 1000;
    bytes[..8].copy_from_slice(&claimed.to_le_bytes());
    std::fs::write(&p, bytes).expect("write");
    assert_model_rejected(&case, &["model.safetensors", "header", "claims"]);
}

/// Moves the single file to a one-shard layout and writes an index whose entry for the first
/// tensor points at `target`.
fn sharded_with(case: &Case, target: &str) {
    let single = case.model.join("model.safetensors");
    let shard = "model-00001-of-00001.safetensors";
    std::fs::rename(&single, case.model.join(shard)).expect("rename");
    let bytes = std::fs::read(case.model.join(shard)).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let mut names = st.names();
    names.sort();
    let mut map = serde_json::Map::new();
    for (i, n) in names.iter().enumerate() {
        let f = if i == 0 { target } else { shard };
        map.insert(n.to_string(), serde_json::json!(f));
    }
    let index = serde_json::json!({"metadata": {"total_size": bytes.len()}, "weight_map": map});
    std::fs::write(
        case.model.join("model.safetensors.index.json"),
        serde_json::to_string_pretty(&index).expect("json"),
    )
    .expect("write index");
}

#[test]
fn index_pointing_outside_the_directory() {
    let case = Case::new();
    // A real file outside, so only the path check can stop it.
    std::fs::copy(
        model_dir("stories260k").join("model.safetensors"),
        case.path("x.safetensors"),
    )
    .expect("copy outside");
    sharded_with(&case, "../x.safetensors");
    assert_model_rejected(
        &case,
        &[
            "model.safetensors.index.json",
            "weight_map",
            "../x.safetensors",
        ],
    );
}

#[test]
fn index_pointing_at_missing_shard() {
    let case = Case::new();
    sharded_with(&case, "model-00002-of-00002.safetensors");
    assert_model_rejected(
        &case,
        &[
            "model.safetensors.index.json",
            "model-00002-of-00002.safetensors",
            "missing",
        ],
    );
}

#[test]
fn intermediate_size_disagrees_with_weights() {
    let case = Case::new();
    let mut cfg = read_config(&case.model);
    cfg["intermediate_size"] = serde_json::json!(176);
    write_config(&case.model, &cfg);
    assert_model_rejected(&case, &["mlp", "176"]);
}

#[test]
fn hidden_size_disagrees_with_weights() {
    let case = Case::new();
    let mut cfg = read_config(&case.model);
    cfg["hidden_size"] = serde_json::json!(80);
    cfg["head_dim"] = serde_json::json!(10);
    write_config(&case.model, &cfg);
    assert_model_rejected(&case, &["embed_tokens", "80"]);
}

#[test]
fn missing_tokenizer() {
    let case = Case::new();
    std::fs::remove_file(case.model.join("tokenizer.json")).expect("rm tokenizer");
    assert_model_rejected(&case, &["tokenizer.json"]);
}

#[test]
fn empty_and_short_texts() {
    let case = Case::new();
    let model = model_dir("stories260k");
    let model = model.to_str().expect("utf-8");
    let empty = case.path("empty.txt");
    std::fs::write(&empty, "").expect("write");
    let short = case.path("short.txt");
    std::fs::write(&short, "Once upon a time there was a cat.").expect("write");
    for t in [&empty, &short] {
        let ts = t.to_str().expect("utf-8");
        assert_fails(
            &["eval", "--model", model, "--text", ts, "--seq-len", "64"],
            &[ts, "fewer than one window of 64"],
        );
    }
    let missing = case.path("missing.txt");
    let ms = missing.to_str().expect("utf-8");
    assert_fails(&["eval", "--model", model, "--text", ms], &[ms]);
    assert_eq!(
        listing(case.tmp.path()),
        vec!["empty.txt".to_string(), "model".into(), "short.txt".into()]
    );
}

/// Writes `value` over element `k` of F32 tensor `name` in `dir/model.safetensors`.
fn poke(dir: &Path, name: &str, k: usize, value: f32) {
    let p = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&p).expect("read");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
    let info = meta.info(name).expect("tensor present");
    assert_eq!(info.dtype, safetensors::Dtype::F32);
    let at = 8 + n + info.data_offsets.0 + 4 * k;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&p, bytes).expect("write");
}

/// Kind: damaged weights. A NaN in the input weights is refused by eval and compress (exit 2,
/// naming the file and the tensor, nothing written); `--allow-non-finite` goes on, warns per
/// block and says so in the report; inspect counts it.
#[test]
fn non_finite_input_weights_are_refused_unless_allowed() {
    let case = Case::new();
    poke(
        &case.model,
        "model.layers.1.mlp.up_proj.weight",
        17,
        f32::NAN,
    );
    let model = case.model.to_str().expect("utf-8");

    let out = pare(&["inspect", model]);
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "inspect failed: {se}");
    assert!(
        se.contains("NaN") && se.contains("1 NaN/Inf"),
        "inspect does not warn about the NaN: stdout {so}\nstderr {se}"
    );
    let out = pare(&["--json", "inspect", model]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("inspect --json");
    assert_eq!(v["non_finite"], 1);
    let up = v["linears"]
        .as_array()
        .expect("linears")
        .iter()
        .find(|l| l["id"] == "blocks.1.mlp.up")
        .expect("blocks.1.mlp.up listed");
    assert_eq!(up["non_finite"], 1);

    assert_model_rejected(
        &case,
        &[
            "model.safetensors",
            "model.layers.1.mlp.up_proj.weight",
            "NaN/Inf",
            "--allow-non-finite",
        ],
    );

    let vt = valid_text();
    let eval = |extra: &[&str]| pare(&eval_args(model, &vt, extra));
    let out = eval(&["--allow-non-finite"]);
    let (_, se) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "eval --allow-non-finite failed: {se}"
    );
    assert!(
        se.contains("block 1") && se.contains("NaN/Inf"),
        "eval does not warn about the NaN: {se}"
    );
    let out = eval(&["--allow-non-finite", "--json", "--quiet"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eval --json");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("model.layers.1.mlp.up_proj.weight (1)")
            && notes.contains("--allow-non-finite"),
        "the report does not say the weights were damaged: {notes}"
    );
    // The clean model gives no such warning.
    let clean = model_dir("stories260k");
    let out = pare(&[
        "eval",
        "--model",
        clean.to_str().expect("utf-8"),
        "--text",
        &vt,
        "--seq-len",
        "32",
        "--max-windows",
        "1",
    ]);
    let (_, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "clean eval failed: {se}");
    assert!(!se.contains("NaN"), "clean model warns: {se}");
}
