//! Shared helpers of the `pare compress` integration tests: run the binary, write recipes, read
//! reports and checkpoints back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The shared test data folder.
pub const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared");
/// The crate root.
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub fn shared(rel: &str) -> PathBuf {
    Path::new(SHARED).join(rel)
}

pub fn root(rel: &str) -> PathBuf {
    Path::new(ROOT).join(rel)
}

pub fn stories() -> PathBuf {
    shared("models/stories260k")
}

pub fn tiny_llama() -> PathBuf {
    shared("models/tiny-llama")
}

pub fn train_text() -> PathBuf {
    shared("data/tinystories/tinystories_train_head.txt")
}

pub fn valid_text() -> PathBuf {
    shared("data/tinystories/tinystories_valid_head.txt")
}

/// The `pare` binary with `--quiet`.
pub fn pare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pare"));
    c.arg("--quiet");
    c
}

/// Runs `pare --json compress` and returns its output (success not checked).
pub fn compress_raw(model: &Path, recipe: &Path, out: &Path, extra: &[&str]) -> Output {
    pare()
        .arg("--json")
        .arg("compress")
        .arg("--model")
        .arg(model)
        .arg("--recipe")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("running pare")
}

/// Runs `pare --json compress`, asserts success and returns the printed report.
pub fn compress(model: &Path, recipe: &Path, out: &Path) -> Value {
    let o = compress_raw(model, recipe, out, &[]);
    assert!(
        o.status.success(),
        "pare compress {} failed ({:?}): {}",
        recipe.display(),
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("compress --json prints JSON")
}

/// Runs `pare --json <args>` and returns the parsed stdout, asserting success.
pub fn pare_json(args: &[&std::ffi::OsStr]) -> Value {
    let o = pare()
        .arg("--json")
        .args(args)
        .output()
        .expect("running pare");
    assert!(
        o.status.success(),
        "pare {:?} failed: {}",
        args,
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("--json prints JSON")
}

/// `pare eval --model DIR --text FILE --seq-len N --max-windows K`: the perplexity.
pub fn eval_ppl(model: &Path, text: &Path, seq_len: usize, windows: usize) -> f64 {
    let (s, w) = (seq_len.to_string(), windows.to_string());
    let r = pare_json(&[
        "eval".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--text".as_ref(),
        text.as_os_str(),
        "--seq-len".as_ref(),
        s.as_ref(),
        "--max-windows".as_ref(),
        w.as_ref(),
    ]);
    ppl(&r)
}

/// `pare inspect --json DIR`.
pub fn inspect(dir: &Path) -> Value {
    pare_json(&["inspect".as_ref(), dir.as_os_str()])
}

/// `quality.perplexity.ppl` of a report.
pub fn ppl(report: &Value) -> f64 {
    report["quality"]["perplexity"]["ppl"]
        .as_f64()
        .unwrap_or_else(|| panic!("no quality.perplexity.ppl in {report}"))
}

/// Writes `text` as `name` in `dir` and returns the path.
pub fn write_recipe(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A recipe with text calibration (absolute paths) and the given steps/export/eval lines.
pub fn text_recipe(samples: usize, seq_len: usize, body: &str) -> String {
    format!(
        "calibration: {{ text: {}, samples: {samples}, seq_len: {seq_len}, seed: 0 }}\n{body}\n",
        train_text().display()
    )
}

/// The safetensors files of a checkpoint folder with their bytes, by name.
pub fn safetensors_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// FNV-1a 64 of a file's bytes (enough to see whether a file changed).
pub fn hash_file(p: &Path) -> u64 {
    std::fs::read(p)
        .unwrap()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })
}

/// Names in `dir` that look like pare's temporary folders.
pub fn temp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".pare-tmp") || n.contains(".pare-old"))
        .collect()
}

/// Every linear of a checkpoint as a dense matrix, with its canonical id.
pub fn read_linears(dir: &Path) -> Vec<(String, pare::Matrix)> {
    let cfg = pare::config::HfConfig::load(dir).unwrap();
    let qcfg = cfg.raw.get("quantization_config").and_then(|v| {
        pare::checkpoint::QuantizationConfig::from_config(v, &dir.join("config.json")).unwrap()
    });
    let store = pare::checkpoint::TensorStore::open(dir).unwrap();
    let arch = pare::arch::Architecture::new(cfg);
    arch.all_linears()
        .iter()
        .map(|s| {
            let m = store
                .read_linear(&s.key, s.rows, s.cols, qcfg.as_ref())
                .unwrap();
            (s.id.to_string(), m)
        })
        .collect()
}
