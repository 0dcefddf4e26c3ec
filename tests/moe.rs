//! MoE compression: no expert is destroyed by a small calibration set, each expert's
//! calibration is reported, and calibrating all experts works as documented.

mod common;

use std::path::{Path, PathBuf};

use common::{compress, model_dir, read_tensor, text};

/// A recipe for tiny-mixtral with one 6-token calibration sample (most experts are routed no
/// token), one step, a dense export and a KLD evaluation.
fn recipe(dir: &Path, name: &str, step: &str, all_experts: bool, calib: (usize, usize)) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration");
    let p = dir.join(format!("{name}.yaml"));
    let y = format!(
        "calibration: {{ text: {}, samples: {}, seq_len: {}, seed: 0, calibrate_all_experts: {all_experts} }}\n\
         steps:\n  - {step}\nexport: {{ format: dense }}\n\
         eval: {{ text: {}, seq_len: 128, max_windows: 16, kld: true }}\n",
        root.join("tinystories-train-head.txt").display(),
        calib.0,
        calib.1,
        root.join("tinystories-valid-head.txt").display(),
    );
    std::fs::write(&p, y).expect("write recipe");
    p
}

/// Compresses tiny-mixtral with `step` calibrated on `calib` = (samples, seq_len); returns the
/// report and the output folder.
fn run(
    dir: &Path,
    name: &str,
    step: &str,
    all_experts: bool,
    calib: (usize, usize),
) -> (serde_json::Value, PathBuf) {
    let out = dir.join(name);
    let r = recipe(dir, name, step, all_experts, calib);
    let o = compress(&[], &model_dir("tiny-mixtral"), &r, &out);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{name}: {se}");
    let report = std::fs::read_to_string(out.join("report.json")).expect("report.json");
    (serde_json::from_str(&report).expect("parse report"), out)
}

fn mean_kld(r: &serde_json::Value) -> f64 {
    r["quality"]["kld"]["mean_kld"]["value"]
        .as_f64()
        .expect("mean_kld")
}

/// The number of experts (of 4 blocks × 8) with a linear that is all zeros in the output.
fn zeroed_experts(out: &Path) -> usize {
    let file = out.join("model.safetensors");
    let mut n = 0;
    for b in 0..4 {
        for e in 0..8 {
            let zero = ["w1", "w2", "w3"].iter().any(|w| {
                let name = format!("model.layers.{b}.block_sparse_moe.experts.{e}.{w}.weight");
                read_tensor(&file, &name).values.iter().all(|v| *v == 0.0)
            });
            n += usize::from(zero);
        }
    }
    n
}

/// The issue's case: one 6-token sample, GPTQ int4, SparseGPT 50%, Wanda 50%. With and without
/// calibrating all experts, the run exits 0 and no expert is written as zeros. Routed-only,
/// exactly the experts the router sent no token fall back to the data-free form, and the
/// report's expert table says so; calibrating all experts, every expert's statistics see all 6
/// tokens and nothing falls back.
#[test]
fn no_expert_is_destroyed_by_a_tiny_calibration_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, step) in [
        "gptq: { format: int4-ch-sym }",
        "sparsegpt: { sparsity: 0.5 }",
        "wanda: { sparsity: 0.5 }",
    ]
    .iter()
    .enumerate()
    {
        for all in [true, false] {
            let name = format!("s{i}-{all}");
            let (r, out) = run(tmp.path(), &name, step, all, (1, 6));
            assert_eq!(
                zeroed_experts(&out),
                0,
                "{step} all={all}: an expert is zero"
            );
            let experts = r["experts"].as_array().expect("expert table");
            assert_eq!(experts.len(), 32, "{step}");
            let mut routed = 0;
            for e in experts {
                let tokens = e["tokens_routed"].as_u64().expect("tokens_routed");
                let stat = e["tokens_for_statistics"].as_u64().expect("tokens");
                let fallbacks = e["fallbacks"].as_array().expect("fallbacks");
                routed += tokens;
                if all {
                    assert_eq!(stat, 6, "{step}: {e}");
                    assert!(fallbacks.is_empty(), "{step}: {e}");
                } else {
                    assert_eq!(stat, tokens, "{step}: {e}");
                    assert_eq!(fallbacks.is_empty(), tokens > 0, "{step}: {e}");
                    if tokens == 0 {
                        let want = if i == 0 {
                            "gptq → rtn"
                        } else {
                            "→ magnitude"
                        };
                        let f = fallbacks[0].as_str().expect("a string");
                        assert!(f.contains(want) && f.ends_with("(gate, up, down)"), "{f}");
                    }
                }
            }
            // Top-2 of 8 experts: each of the 6 tokens is routed twice in each of 4 blocks.
            assert_eq!(routed, 6 * 2 * 4, "{step}");
        }
    }
}

/// On the experts (the part this issue is about), mean KLD against the dense model. With the
/// 6-token sample, calibrating all experts keeps GPTQ and SparseGPT within 1.25× of their
/// data-free forms (the zeroed experts this replaces cost 150×; 6 tokens are too few for any
/// data-driven method to win reliably, on dense models too). With 16 × 128 tokens, GPTQ beats
/// RTN and SparseGPT beats magnitude, with and without calibrating all experts.
#[test]
fn expert_calibration_beats_the_data_free_forms() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = r#"targets: ["blocks.*.moe.experts.*.*"]"#;
    let (gptq, rtn) = (
        format!("gptq: {{ format: int4-ch-sym, {t} }}"),
        format!("rtn: {{ format: int4-ch-sym, {t} }}"),
    );
    let (sparsegpt, magnitude) = (
        format!("sparsegpt: {{ sparsity: 0.5, {t} }}"),
        format!("magnitude: {{ sparsity: 0.5, {t} }}"),
    );
    let mut n = 0;
    let mut kld = |step: &str, all: bool, calib: (usize, usize)| {
        n += 1;
        mean_kld(&run(tmp.path(), &format!("r{n}"), step, all, calib).0)
    };
    let (r, m) = (kld(&rtn, true, (1, 6)), kld(&magnitude, true, (1, 6)));
    let (g, s) = (kld(&gptq, true, (1, 6)), kld(&sparsegpt, true, (1, 6)));
    eprintln!("experts, 6 tokens: gptq {g:.6} rtn {r:.6} sparsegpt {s:.6} magnitude {m:.6}");
    assert!(g <= 1.25 * r, "gptq {g} vs rtn {r}");
    assert!(s <= 1.25 * m, "sparsegpt {s} vs magnitude {m}");
    for all in [true, false] {
        let (g, s) = (kld(&gptq, all, (16, 128)), kld(&sparsegpt, all, (16, 128)));
        eprintln!("experts, 16 × 128, all={all}: gptq {g:.6} sparsegpt {s:.6}");
        assert!(g < r, "all={all}: gptq {g} vs rtn {r}");
        assert!(s < m, "all={all}: sparsegpt {s} vs magnitude {m}");
    }
}
