//! Helpers shared by the engine integration tests: paths into ../shared, safetensors reading,
//! model copies in temp dirs, running the `pare` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use safetensors::{Dtype, SafeTensors};

/// `../shared/<rel>` from the crate root.
/// `PARE_SHARED` overrides the folder (a test binary carried to another machine, as
/// benches/gpu_check.sh does).
pub fn shared(rel: &str) -> PathBuf {
    match std::env::var_os("PARE_SHARED") {
        Some(dir) => PathBuf::from(dir).join(rel),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared")
            .join(rel),
    }
}

/// `../shared/models/<name>`.
pub fn model_dir(name: &str) -> PathBuf {
    shared("models").join(name)
}

/// The CPU device.
pub fn cpu() -> burn::tensor::Device {
    pare::model::parse_device("cpu").expect("cpu device")
}

/// The device the golden tests run on: `PARE_TEST_DEVICE` (a `--device` spec such as
/// `vulkan:0`, for benches/gpu_check.sh on a GPU machine), the CPU when unset.
pub fn test_device() -> (burn::tensor::Device, bool) {
    match std::env::var("PARE_TEST_DEVICE") {
        Ok(s) if !s.is_empty() && s != "cpu" => (
            pare::model::parse_device(&s).unwrap_or_else(|e| panic!("PARE_TEST_DEVICE: {e}")),
            false,
        ),
        _ => (cpu(), true),
    }
}

/// A tensor read from a safetensors file: dtype, shape, values widened to f64.
pub struct HostTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// Reads tensor `name` from the safetensors file at `path` (F32, BF16, F16, I64, I32).
pub fn read_tensor(path: &Path, name: &str) -> HostTensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("{}: tensor {name}: {e}", path.display()));
    let d = t.data();
    let values: Vec<f64> = match t.dtype() {
        Dtype::F32 => d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Dtype::BF16 => d
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::F16 => d
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::I64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f64)
            .collect(),
        Dtype::I32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        other => panic!(
            "{}: tensor {name}: unsupported dtype {other:?}",
            path.display()
        ),
    };
    HostTensor {
        dtype: t.dtype(),
        shape: t.shape().to_vec(),
        values,
    }
}

/// Recursively copies the files of `src` (one level of subfolders is enough for models) into
/// `dst`, skipping `golden/`.
pub fn copy_model(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("create copy dir");
    for e in std::fs::read_dir(src).expect("read model dir") {
        let e = e.expect("dir entry");
        let p = e.path();
        if p.is_file() {
            std::fs::copy(&p, dst.join(e.file_name())).expect("copy file");
        }
    }
}

/// Reads `dir/config.json` as JSON.
pub fn read_config(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("read config.json");
    serde_json::from_str(&text).expect("parse config.json")
}

/// Writes `value` as `dir/config.json`.
pub fn write_config(dir: &Path, value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).expect("serialise config");
    std::fs::write(dir.join("config.json"), text).expect("write config.json");
}

/// Runs the `pare` binary with `args` (plus `--quiet` is NOT added: warnings must show).
pub fn pare(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(args)
        .env_remove("PARE_LOG")
        .output()
        .expect("run pare")
}

/// stdout and stderr of `out` as one string (for messages).
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `pare <args>` fails with exit code 2 and one `error:` line containing every needle.
pub fn assert_fails(args: &[&str], needles: &[&str]) {
    let out = pare(args);
    let (so, se) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "pare {args:?}: expected exit 2\nstdout: {so}\nstderr: {se}"
    );
    let err = se
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("pare {args:?}: no `error:` line in stderr: {se}"));
    eprintln!("pare {}: {err}", args[0]);
    for n in needles {
        assert!(
            err.contains(n),
            "pare {args:?}: error line lacks {n:?}: {err}"
        );
    }
    assert!(!se.contains("panicked"), "pare {args:?} panicked: {se}");
}

/// Writes a one-step recipe `dir/name.yaml` calibrating on the shipped training text with
/// `samples` × `seq_len` tokens (seed 0), exporting `export`; returns its path.
pub fn write_recipe(
    dir: &Path,
    name: &str,
    samples: usize,
    seq_len: usize,
    step: &str,
    export: &str,
) -> PathBuf {
    let calib =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/tinystories-train-head.txt");
    let p = dir.join(format!("{name}.yaml"));
    let y = format!(
        "calibration: {{ text: {}, samples: {samples}, seq_len: {seq_len}, seed: 0 }}\n\
         steps:\n  - {step}\nexport: {{ format: {export} }}\n",
        calib.display()
    );
    std::fs::write(&p, y).expect("write recipe");
    p
}

/// Runs `pare [global...] compress --model model --recipe recipe --out out`.
pub fn compress(global: &[&str], model: &Path, recipe: &Path, out: &Path) -> Output {
    let mut args: Vec<&str> = global.to_vec();
    args.extend([
        "compress",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--recipe",
        recipe.to_str().expect("utf-8 path"),
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    pare(&args)
}

/// `eval --model model --text text --seq-len 32 --max-windows 1` plus `extra`.
pub fn eval_args<'a>(model: &'a str, text: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "eval",
        "--model",
        model,
        "--text",
        text,
        "--seq-len",
        "32",
        "--max-windows",
        "1",
    ];
    a.extend_from_slice(extra);
    a
}

/// xorshift64*: deterministic and fast (random weights, fuzz mutations).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
