//! Mutation fuzzing of the parsers that read user files: the safetensors header, the shard
//! index, config.json, the recipe (parsed and resolved against stories260k's linears) and task
//! files. Each harness starts from real files (../shared's models, the shipped recipes and
//! tasks), mutates them (bit flips, interesting bytes, inserted, deleted, duplicated and spliced
//! ranges, numbers swapped for extreme ones) and requires every input to return, `Ok` or `Err`,
//! without a panic.
//!
//! Why a mutation loop of our own rather than a crate: coverage-guided fuzzers (cargo-fuzz,
//! libFuzzer, AFL) need nightly or C toolchains these machines lack, `bolero` on stable falls
//! back to random bytes, and `proptest`/`arbitrary` generate values from types, which is the
//! wrong shape for "a real file, slightly damaged" — the inputs users actually produce. The
//! loop is ~100 lines with no dependency.
//!
//! `cargo test --test fuzz` runs a smoke of a few thousand inputs per parser (CI);
//! `benches/fuzz.sh` runs a million per parser (`PARE_FUZZ_INPUTS`). A crash prints the input's
//! path under the target folder; each crash found is kept as a regression case below.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::Instant;

use pare::checkpoint::reader::{parse_index, parse_shard_header};
use pare::config::HfConfig;
use pare::eval::tasks::schema::parse_task;
use pare::recipe::{parse_recipe, resolve};

use common::{Rng, model_dir};

const INTERESTING: &[u8] = b"\0\xff\"{}[],:-+.eE0123456789\n \\/nultrfsaNI";
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "4294967296",
    "18446744073709551616",
    "99999999999999999999999",
    "1e400",
    "-1e400",
    "NaN",
    "Infinity",
    "-0",
    "0.5",
    "1e-45",
    "65536",
    "3",
    "null",
];

/// One mutation of `seed` (with `other`, a second seed, for splices).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let n = v.len();
        match rng.below(8) {
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 => {
                let i = rng.below(n + 1);
                let k = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..k)
                    .map(|_| INTERESTING[rng.below(INTERESTING.len())])
                    .collect();
                v.splice(i..i, bytes);
            }
            3 if n > 0 => {
                let i = rng.below(n);
                let k = 1 + rng.below((n - i).min(64));
                v.drain(i..i + k);
            }
            4 if n > 0 => {
                let i = rng.below(n);
                let k = 1 + rng.below((n - i).min(64));
                let dup = v[i..i + k].to_vec();
                let at = rng.below(n + 1);
                v.splice(at..at, dup);
            }
            5 if !other.is_empty() => {
                let (i, j) = (rng.below(n + 1), rng.below(other.len()));
                let k = rng.below((other.len() - j).min(256));
                v.truncate(i);
                v.extend_from_slice(&other[j..j + k]);
            }
            6 => {
                // A digit run (a number) swapped for an extreme one.
                let starts: Vec<usize> = (0..n)
                    .filter(|&i| v[i].is_ascii_digit() && (i == 0 || !v[i - 1].is_ascii_digit()))
                    .collect();
                if !starts.is_empty() {
                    let i = starts[rng.below(starts.len())];
                    let mut j = i;
                    while j < n && (v[j].is_ascii_digit() || v[j] == b'.') {
                        j += 1;
                    }
                    v.splice(i..j, NUMBERS[rng.below(NUMBERS.len())].bytes());
                }
            }
            _ if n > 0 => {
                // Truncation.
                v.truncate(rng.below(n));
            }
            _ => {}
        }
    }
    v
}

/// Runs `parse` on `inputs` mutations of the seeds; panics (with the crashing input saved)
/// if any call panics. Returns the seconds taken.
fn fuzz(name: &str, seeds: &[Vec<u8>], inputs: usize, parse: &dyn Fn(&[u8])) -> f64 {
    assert!(!seeds.is_empty(), "{name}: no seeds");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
    let t = Instant::now();
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut crash = None;
    for k in 0..inputs {
        let seed = &seeds[k % seeds.len()];
        let other = &seeds[rng.below(seeds.len())];
        let input = if k < seeds.len() {
            seed.clone()
        } else {
            mutate(&mut rng, seed, other)
        };
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            crash = Some(input);
            break;
        }
    }
    std::panic::set_hook(prev);
    if let Some(input) = crash {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join(format!("{name}.bin"));
        let _ = std::fs::write(&p, &input);
        panic!("{name}: a parser panicked; input saved to {}", p.display());
    }
    t.elapsed().as_secs_f64()
}

fn inputs() -> usize {
    std::env::var("PARE_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

const MODELS: [&str; 3] = ["stories260k", "tiny-llama", "tiny-mixtral"];

/// Real safetensors headers with a little data: each model's header and the first tensor
/// bytes (the parser checks ranges against the file length, so short data exercises those
/// checks), plus a small whole file.
fn safetensors_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for m in MODELS {
        let bytes = read(&model_dir(m).join("model.safetensors"));
        let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
        seeds.push(bytes[..(8 + n + 64).min(bytes.len())].to_vec());
    }
    let data: Vec<u8> = (0..24u8).collect();
    let views = vec![
        (
            "a",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &data[..24])
                .expect("view"),
        ),
        (
            "b",
            safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, vec![4], &data[..8])
                .expect("view"),
        ),
    ];
    seeds.push(safetensors::serialize(views, None).expect("serialize"));
    seeds
}

fn index_seeds() -> Vec<Vec<u8>> {
    let names: Vec<String> = pare::checkpoint::reader::TensorStore::open(&model_dir("stories260k"))
        .expect("open")
        .names()
        .map(str::to_string)
        .collect();
    let map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                n.clone(),
                format!("model-0000{}-of-00002.safetensors", 1 + i % 2).into(),
            )
        })
        .collect();
    let v = serde_json::json!({ "metadata": { "total_size": 1_056_000 }, "weight_map": map });
    vec![
        serde_json::to_vec_pretty(&v).expect("json"),
        br#"{"weight_map": {"a": "x.safetensors", "b": "sub/../y.safetensors"}}"#.to_vec(),
    ]
}

fn config_seeds() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = MODELS
        .iter()
        .chain(&["tiny-qwen3", "tiny-qwen3-moe"])
        .map(|m| model_dir(m).join("config.json"))
        .filter(|p| p.is_file())
        .map(|p| read(&p))
        .collect();
    v.push(br#"{"architectures": ["MistralForCausalLM"], "sliding_window": 64, "rope_theta": 1e4, "layer_types": ["sliding_attention"], "num_hidden_layers": 1, "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2, "vocab_size": 10, "initializer_range": NaN}"#.to_vec());
    v
}

fn recipe_seeds() -> Vec<Vec<u8>> {
    ["recipes", "tests/parity", "benches/tiny-llama"]
        .iter()
        .flat_map(|d| files(d, "yaml"))
        .map(|p| read(&p))
        .collect()
}

/// Task files cut to their header and three items (parsing cost grows with the file).
fn task_seeds() -> Vec<Vec<u8>> {
    files("eval/tasks", "jsonl")
        .iter()
        .map(|p| {
            let t = String::from_utf8(read(p)).expect("utf-8");
            t.lines()
                .take(4)
                .collect::<Vec<_>>()
                .join("\n")
                .into_bytes()
        })
        .collect()
}

fn run_all(n: usize) -> Vec<(String, usize, f64)> {
    let path = Path::new("fuzz");
    let linears = pare::pipeline::ModelRunner::open(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/stories260k")),
        &common::cpu(),
    )
    .expect("open stories260k")
    .arch
    .all_linears();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    let mut record = |name: &str, seeds: Vec<Vec<u8>>, parse: &dyn Fn(&[u8])| {
        let s = fuzz(name, &seeds, n, parse);
        out.push((name.to_string(), n, s));
    };
    record("safetensors-header", safetensors_seeds(), &|b| {
        let _ = parse_shard_header(b, path);
    });
    record("shard-index", index_seeds(), &|b| {
        let _ = parse_index(&text(b), path);
    });
    record("config", config_seeds(), &|b| {
        let _ = HfConfig::parse(&text(b), path);
    });
    record("recipe", recipe_seeds(), &|b| {
        if let Ok(r) = parse_recipe(&text(b), Path::new("recipes/fuzz.yaml")) {
            let _ = resolve(r, Path::new("recipes/fuzz.yaml"), &linears);
        }
    });
    record("task-file", task_seeds(), &|b| {
        let _ = parse_task(path, &text(b));
    });
    out
}

/// CI smoke: a few thousand inputs per parser, no panic.
#[test]
fn parsers_survive_mutated_real_files() {
    for (name, k, s) in run_all(inputs()) {
        eprintln!("{name:<20} {k} inputs, {s:.1} s, 0 crashes");
    }
}

/// Inputs the fuzzer (or a user) found; each must return an error, not panic.
#[test]
fn crash_regressions() {
    let path = Path::new("fuzz");
    // A shape whose element count overflows usize.
    let header = br#"{"a":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#;
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(header);
    file.extend_from_slice(&[0; 8]);
    assert!(parse_shard_header(&file, path).is_err());
    assert!(
        HfConfig::parse(
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_size": 1e400}"#,
            path
        )
        .is_err()
    );
}
