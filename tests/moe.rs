//! MoE compression: no expert is destroyed by a small calibration set, each expert's
//! calibration is reported, and calibrating all experts works as documented.

mod common;

use std::path::{Path, PathBuf};

use common::{compress, model_dir, read_tensor, text};

/// A recipe for tiny-mixtral with one 6-token calibration sample (most experts are routed no
/// token), one step, a dense export and a KLD evaluation.
fn recipe(dir: &Path, name: &str, step: &str, all_experts: &str, calib: (usize, usize)) -> PathBuf {
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
    all_experts: &str,
    calib: (usize, usize),
) -> (serde_json::Value, PathBuf) {
    let out = dir.join(name);
    let r = recipe(dir, name, step, all_experts, calib);
    let o = compress(&[], &model_dir("tiny-mixtral"), &r, &out);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{name}: {se}");
    (read_json(&out.join("report.json")), out)
}

/// A JSON file (a report, a config).
fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
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
        for mode in ["true", "false", "auto"] {
            // `auto` with 6 tokens: every expert is routed fewer tokens than its width, so all
            // see every token.
            let all = mode != "false";
            let name = format!("s{i}-{mode}");
            let (r, out) = run(tmp.path(), &name, step, mode, (1, 6));
            assert_eq!(zeroed_experts(&out), 0, "{step} {mode}: an expert is zero");
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
/// RTN and SparseGPT beats magnitude in all three modes (`true`, `false`, `auto`).
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
    let mut kld = |step: &str, all: &str, calib: (usize, usize)| {
        n += 1;
        mean_kld(&run(tmp.path(), &format!("r{n}"), step, all, calib).0)
    };
    let (r, m) = (kld(&rtn, "true", (1, 6)), kld(&magnitude, "true", (1, 6)));
    let (g, s) = (kld(&gptq, "true", (1, 6)), kld(&sparsegpt, "true", (1, 6)));
    eprintln!("experts, 6 tokens: gptq {g:.6} rtn {r:.6} sparsegpt {s:.6} magnitude {m:.6}");
    assert!(g <= 1.25 * r, "gptq {g} vs rtn {r}");
    assert!(s <= 1.25 * m, "sparsegpt {s} vs magnitude {m}");
    for all in ["true", "false", "auto"] {
        let (g, s) = (kld(&gptq, all, (16, 128)), kld(&sparsegpt, all, (16, 128)));
        eprintln!("experts, 16 × 128, all={all}: gptq {g:.6} sparsegpt {s:.6}");
        assert!(g < r, "all={all}: gptq {g} vs rtn {r}");
        assert!(s < m, "all={all}: sparsegpt {s} vs magnitude {m}");
    }
}

/// A recipe with a 32 × 256 calibration of the shipped training text, `steps` (YAML list items)
/// and an evaluation on the shipped validation text (first 50 windows of 256).
fn recipe_with(dir: &Path, name: &str, steps: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration");
    let p = dir.join(format!("{name}.yaml"));
    let y = format!(
        "calibration: {{ text: {}, samples: 32, seq_len: 256, seed: 0 }}\nsteps:\n{steps}\
         export: {{ format: dense }}\n\
         eval: {{ text: {}, seq_len: 256, max_windows: 50, kld: true }}\n",
        root.join("tinystories-train-head.txt").display(),
        root.join("tinystories-valid-head.txt").display(),
    );
    std::fs::write(&p, y).expect("write recipe");
    p
}

/// 25% expert pruning of tiny-mixtral (8 → 6 per block): the config says 6 experts, the router
/// keeps the kept experts' rows, expert `i` of the output is the kept original expert
/// `kept[i]` byte for byte, and the perplexity pare reports equals transformers' on the same
/// checkpoint (tests/golden/expert-prune-tiny-mixtral.json, tools/transformers_ppl.py).
/// REAP's saliency beats routing frequency and a random choice on mean KLD.
#[test]
fn expert_pruning_writes_a_checkpoint_transformers_loads() {
    let golden = read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/expert-prune-tiny-mixtral.json"),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut kld = Vec::new();
    for saliency in ["reap", "frequency", "random"] {
        let r = recipe_with(
            tmp.path(),
            saliency,
            &format!("  - expert-prune: {{ fraction: 0.25, saliency: {saliency} }}\n"),
        );
        let out = tmp.path().join(format!("out-{saliency}"));
        let o = compress(&[], &model_dir("tiny-mixtral"), &r, &out);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        let report = read_json(&out.join("report.json"));
        kld.push(mean_kld(&report));
        // Sizes: the removed experts count before and not after (bf16: 2 bytes a weight; per
        // block attention 196,608 weights, the router 8 (6) × 256, each expert 3 × 384 × 256).
        let totals = &report["totals"];
        assert_eq!(
            totals["bytes_linear_before"],
            4 * (196_608 + 8 * 256 + 8 * 294_912) * 2
        );
        assert_eq!(
            totals["bytes_linear_after"],
            4 * (196_608 + 6 * 256 + 6 * 294_912) * 2
        );
        let cfg = read_json(&out.join("config.json"));
        assert_eq!(cfg["num_local_experts"], 6);
        let kept: Vec<Vec<usize>> = report["expert_pruning"]
            .as_array()
            .expect("expert_pruning")
            .iter()
            .map(|p| serde_json::from_value(p["kept"].clone()).expect("kept"))
            .collect();
        assert_eq!(kept.len(), 4);
        let (src, dst) = (
            model_dir("tiny-mixtral").join("model.safetensors"),
            out.join("model.safetensors"),
        );
        let bytes = std::fs::read(&dst).expect("output");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("output safetensors");
        for (b, kept) in kept.iter().enumerate() {
            assert_eq!(kept.len(), 6);
            let m = format!("model.layers.{b}.block_sparse_moe");
            assert!(st.tensor(&format!("{m}.experts.6.w1.weight")).is_err());
            let router = read_tensor(&dst, &format!("{m}.gate.weight"));
            let orig = read_tensor(&src, &format!("{m}.gate.weight"));
            assert_eq!(router.shape, vec![6, 256]);
            for (i, &k) in kept.iter().enumerate() {
                assert_eq!(
                    router.values[i * 256..(i + 1) * 256],
                    orig.values[k * 256..(k + 1) * 256]
                );
                for w in ["w1", "w2", "w3"] {
                    let a = read_tensor(&dst, &format!("{m}.experts.{i}.{w}.weight"));
                    let o = read_tensor(&src, &format!("{m}.experts.{k}.{w}.weight"));
                    assert!(a.values == o.values, "block {b} expert {i} ({k}) {w}");
                }
            }
        }
        if saliency == "reap" {
            let want: Vec<Vec<usize>> =
                serde_json::from_value(golden["kept"].clone()).expect("golden kept");
            assert_eq!(kept, want);
            let ppl = report["quality"]["perplexity"]["ppl"]
                .as_f64()
                .expect("ppl");
            let t = golden["transformers_ppl"]
                .as_f64()
                .expect("transformers_ppl");
            assert!((ppl - t).abs() / t < 1e-5, "pare {ppl} vs transformers {t}");
        }
    }
    eprintln!(
        "expert pruning 25%: mean KLD reap {:.5} frequency {:.5} random {:.5}",
        kld[0], kld[1], kld[2]
    );
    assert!(kld[0] < kld[1] && kld[0] < kld[2], "{kld:?}");
}

/// Bad expert-prune recipes are refused naming the key: a dense model, a fraction out of range,
/// too few experts left for top-k, a router left out.
#[test]
fn expert_prune_recipe_errors_name_the_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (model, step, needle)) in [
        (
            "tiny-llama",
            "expert-prune: { fraction: 0.25 }",
            "steps[0].expert-prune: expert-prune removes MoE experts",
        ),
        (
            "tiny-mixtral",
            "expert-prune: { fraction: 1.5 }",
            "steps[0].expert-prune.fraction",
        ),
        (
            "tiny-mixtral",
            "expert-prune: { fraction: 0.9 }",
            "num_experts_per_tok",
        ),
        (
            "tiny-mixtral",
            "expert-prune: { fraction: 0.25, saliency: big }",
            "unknown saliency",
        ),
        (
            "tiny-mixtral",
            r#"expert-prune: { fraction: 0.25, targets: ["blocks.0.moe.router"] }"#,
            "must prune every MoE block",
        ),
    ]
    .iter()
    .enumerate()
    {
        let r = recipe_with(tmp.path(), &format!("e{i}"), &format!("  - {step}\n"));
        let o = compress(
            &[],
            &model_dir(model),
            &r,
            &tmp.path().join(format!("o{i}")),
        );
        let (_, se) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{step}: {se}");
        assert!(se.contains(needle), "{step}: {se}");
        assert!(
            !tmp.path().join(format!("o{i}")).exists(),
            "{step}: output left behind"
        );
    }
}

/// Copies tiny-mixtral into `dst`, multiplying the bf16 tensor `name` by `scale` (0 zeroes it).
fn mixtral_with_scaled(dst: &Path, name: &str, scale: f32) {
    common::copy_model(&model_dir("tiny-mixtral"), dst);
    scale_tensor(&dst.join("model.safetensors"), name, scale);
}

/// Rewrites the safetensors `file` with its bf16 tensor `name` multiplied by `scale`.
fn scale_tensor(file: &Path, name: &str, scale: f32) {
    let bytes = std::fs::read(file).expect("read");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (n, t) in st.tensors() {
        let mut data = t.data().to_vec();
        if n == name {
            assert_eq!(t.dtype(), safetensors::Dtype::BF16);
            for c in data.chunks_exact_mut(2) {
                let v = half::bf16::from_le_bytes([c[0], c[1]]).to_f32() * scale;
                c.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes());
            }
        }
        owned.push((n.to_string(), t.dtype(), t.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    std::fs::write(
        file,
        safetensors::serialize(views, Some(meta)).expect("serialize"),
    )
    .expect("write");
}

/// A planted super expert: tiny-mixtral with block 1 expert 6's (often routed) down_proj scaled 40×, so that
/// its output peaks far above every other expert's. The profile finds exactly that expert;
/// zeroing its down_proj costs far more KLD than zeroing another expert's; and
/// `protect: [super-experts]` keeps its linears byte-identical through a 50% Wanda step that
/// prunes every other expert.
#[test]
fn a_planted_super_expert_is_found_and_protected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let planted = tmp.path().join("planted");
    let down =
        |b: usize, e: usize| format!("model.layers.{b}.block_sparse_moe.experts.{e}.w2.weight");
    mixtral_with_scaled(&planted, &down(1, 6), 40.0);
    let calib =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/tinystories-train-head.txt");
    let p = planted.to_str().expect("utf-8");
    let c = calib.to_str().expect("utf-8");
    let o = common::pare(&[
        "--json",
        "inspect",
        p,
        "--super-experts",
        "--calib",
        c,
        "--samples",
        "16",
        "--seq-len",
        "128",
    ]);
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{se}");
    let profile: serde_json::Value = serde_json::from_str(&so).expect("profile json");
    let found: Vec<(u64, u64)> = profile["super_experts"]
        .as_array()
        .expect("super_experts")
        .iter()
        .map(|e| {
            (
                e["block"].as_u64().expect("block"),
                e["expert"].as_u64().expect("expert"),
            )
        })
        .collect();
    assert_eq!(found, vec![(1, 6)], "{so}");

    // Zeroing the super expert against zeroing an ordinary one, KLD against the planted model.
    let mut kld = Vec::new();
    for (name, e) in [("zero-super", 6), ("zero-other", 4)] {
        let m = tmp.path().join(name);
        mixtral_with_scaled(&m, &down(1, 6), 40.0);
        scale_tensor(&m.join("model.safetensors"), &down(1, e), 0.0);
        let r = eval_json(&m, &["--base", p]);
        kld.push(mean_kld(&r));
    }
    eprintln!(
        "zeroing the planted super expert: mean KLD {:.4}; another expert: {:.4}",
        kld[0], kld[1]
    );
    assert!(kld[0] > 10.0 * kld[1], "{kld:?}");

    // protect: the planted expert passes a 50% Wanda step untouched, the others are pruned.
    let r = recipe_with(tmp.path(), "protect", "  - wanda: { sparsity: 0.5 }\n");
    let y = std::fs::read_to_string(&r).expect("recipe") + "protect: [super-experts]\n";
    std::fs::write(&r, y).expect("recipe");
    let out = tmp.path().join("protected");
    let o = compress(&[], &planted, &r, &out);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{se}");
    assert!(se.contains("blocks.1.moe.experts.6"), "{se}");
    let (src, dst) = (
        planted.join("model.safetensors"),
        out.join("model.safetensors"),
    );
    for w in ["w1", "w2", "w3"] {
        let name = format!("model.layers.1.block_sparse_moe.experts.6.{w}.weight");
        assert!(
            read_tensor(&dst, &name).values == read_tensor(&src, &name).values,
            "{w}"
        );
        let other = format!("model.layers.1.block_sparse_moe.experts.2.{w}.weight");
        let t = read_tensor(&dst, &other);
        let zeros = t.values.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros * 2, t.values.len(), "{other}");
    }
    let report = read_json(&out.join("report.json"));
    let protected = &report["allocation"]["protected"];
    assert!(
        protected["blocks.1.moe.experts.6.down"]
            .as_str()
            .is_some_and(|s| s.contains("super expert")),
        "{protected}"
    );
}

/// Perplexity `pare eval` reads back from `model` on the first 16 windows of 128 of the
/// shipped validation text.
fn eval_ppl(model: &Path) -> f64 {
    eval_json(model, &[])["quality"]["perplexity"]["ppl"]
        .as_f64()
        .expect("ppl")
}

/// `pare --json eval` of `model` on the first 16 windows of 128 of the shipped validation text,
/// plus `extra` arguments; the report.
fn eval_json(model: &Path, extra: &[&str]) -> serde_json::Value {
    let valid =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/tinystories-valid-head.txt");
    let mut args = vec![
        "--json",
        "eval",
        "--model",
        model.to_str().expect("utf-8"),
        "--text",
        valid.to_str().expect("utf-8"),
        "--seq-len",
        "128",
        "--max-windows",
        "16",
    ];
    args.extend_from_slice(extra);
    let o = common::pare(&args);
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{se}");
    serde_json::from_str(&so).expect("eval json")
}

/// MoE exports round-trip: Wanda 50% written dense and as the (legacy) sparse bitmask, GPTQ
/// int4 written dense and pack-quantized, read back by `pare eval` with identical perplexity,
/// for Mixtral and Qwen3-MoE (whose block 0 is a dense MLP).
#[test]
fn moe_exports_read_back_with_identical_perplexity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration");
    for model in ["tiny-mixtral", "tiny-qwen3-moe"] {
        for (step, formats) in [
            ("wanda: { sparsity: 0.5 }", ["dense", "sparse-bitmask"]),
            (
                "gptq: { format: int4-g32-sym }",
                ["dense", "pack-quantized"],
            ),
        ] {
            let mut ppl = Vec::new();
            for format in formats {
                let name = format!("{model}-{}-{format}", &step[..4]);
                let r = tmp.path().join(format!("{name}.yaml"));
                std::fs::write(
                    &r,
                    format!(
                        "calibration: {{ text: {}, samples: 8, seq_len: 128, seed: 0 }}\nsteps:\n  - {step}\nexport: {{ format: {format} }}\n",
                        root.join("tinystories-train-head.txt").display()
                    ),
                )
                .expect("recipe");
                let out = tmp.path().join(&name);
                let o = compress(&[], &model_dir(model), &r, &out);
                assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o).1);
                ppl.push(eval_ppl(&out));
            }
            eprintln!("{model} {step}: {formats:?} ppl {ppl:?}");
            assert_eq!(ppl[0], ppl[1], "{model} {step}: {formats:?}");
        }
    }
}

/// `calibrate_all_experts: auto` (the default): an expert routed at least as many tokens as its
/// widest input (384, the down projection's d_in) is calibrated on those; the others on all
/// 16 × 128 tokens.
#[test]
fn auto_calibrates_well_fed_experts_on_their_routed_tokens() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(
        tmp.path(),
        "auto",
        "gptq: { format: int4-ch-sym }",
        "auto",
        (16, 128),
    );
    let (mut routed, mut all) = (0, 0);
    for e in r["experts"].as_array().expect("expert table") {
        let tokens = e["tokens_routed"].as_u64().expect("tokens_routed");
        let stat = e["tokens_for_statistics"].as_u64().expect("tokens");
        if tokens >= 384 {
            assert_eq!(stat, tokens, "{e}");
            routed += 1;
        } else {
            assert_eq!(stat, 16 * 128, "{e}");
            all += 1;
        }
    }
    assert!(
        routed > 0 && all > 0,
        "routed-only {routed}, all tokens {all}"
    );
}

/// MaskLLM end to end on an MoE model (its blocks differentiated on burn's autodiff device):
/// the distillation loss falls, and every expert and attention linear is exactly 2:4.
#[test]
fn maskllm_end_to_end_learns_exact_masks_on_an_moe_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (r, _) = run(
        tmp.path(),
        "e2e",
        "maskllm: { pattern: \"2:4\", mode: end-to-end, iterations: 6, batch: 2 }",
        "false",
        (4, 64),
    );
    let t = r["allocation"]["profiles"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["profile"] == "maskllm-end-to-end"))
        .expect("the training's profile");
    let (first, last) = (
        t["loss_first"].as_f64().unwrap(),
        t["loss_last"].as_f64().unwrap(),
    );
    assert!(last < first, "distillation loss {first} → {last}");
    let linears = r["linears"].as_array().expect("linears");
    // 4 blocks × (q, k, v, o and 8 experts × gate, up, down); routers are not targeted.
    assert_eq!(linears.len(), 4 * (4 + 8 * 3));
    for l in linears {
        assert_eq!(l["pattern"], "2:4", "{l}");
        assert_eq!(l["pattern_exact"], true, "{l}");
        assert_eq!(l["sparsity"].as_f64(), Some(0.5), "{l}");
    }
}
