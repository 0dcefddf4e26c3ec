//! The engine against transformers' golden outputs: logits and log-probs of the golden input,
//! perplexity over the whole TinyStories eval text, and the greedy sample of stories260k.

mod common;

use std::path::Path;
use std::time::Instant;

use pare::eval::lm::LanguageModel;
use pare::eval::tasks::generate;
use pare::eval::text::{score, summary::quality, text_windows};
use pare::pipeline::{ModelRunner, Silent};

use common::{cpu, model_dir, read_tensor, shared, test_device};

const TOL: f64 = 1e-4;
/// Logit tolerance off the CPU (`PARE_TEST_DEVICE`): f32 GPU kernels sum in other orders.
const GPU_TOL: f64 = 1e-3;

fn golden_json(dir: &Path) -> serde_json::Value {
    let p = dir.join("golden/golden.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read golden.json"))
        .expect("parse golden.json")
}

/// Largest absolute difference and its index.
fn max_diff(a: &[f64], b: &[f32]) -> (f64, usize) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let mut worst = (0.0, 0);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let d = (x - *y as f64).abs();
        assert!(
            d.is_finite(),
            "non-finite value at {i}: golden {x}, pare {y}"
        );
        if d > worst.0 {
            worst = (d, i);
        }
    }
    worst
}

/// Rounds `x` to `n` significant digits.
fn sig(x: f64, n: i32) -> f64 {
    let e = x.abs().log10().floor() as i32;
    let f = 10f64.powi(n - 1 - e);
    (x * f).round() / f
}

fn check_model(name: &str) {
    let dir = model_dir(name);
    let golden = dir.join("golden/golden.safetensors");
    let gj = golden_json(&dir);
    let t0 = Instant::now();
    let (device, on_cpu) = test_device();
    let tol = if on_cpu { TOL } else { GPU_TOL };
    let mut runner = ModelRunner::open(&dir, &device).expect("open model");
    let vocab = runner.ends.vocab;

    // Logits and log-probs of the golden input.
    let ids_t = read_tensor(&golden, "input_ids");
    assert_eq!(ids_t.shape, vec![128]);
    let ids: Vec<u32> = ids_t.values.iter().map(|&v| v as u32).collect();
    let logits = runner.logits(&ids).expect("logits");
    assert_eq!(logits.len(), 128 * vocab);

    let last = read_tensor(&golden, "logits_last");
    assert_eq!(last.shape, vec![vocab]);
    let (d, i) = max_diff(&last.values, &logits[127 * vocab..]);
    assert!(
        d <= tol,
        "{name}: logits_last differs by {d:e} at token {i}"
    );

    let head = read_tensor(&golden, "logprobs_head");
    assert_eq!(head.shape, vec![16, vocab]);
    let mut lp = Vec::with_capacity(16 * vocab);
    for row in logits[..16 * vocab].chunks_exact(vocab) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &x| a.max(x as f64));
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        lp.extend(row.iter().map(|&x| (x as f64 - lse) as f32));
    }
    let (d, i) = max_diff(&head.values, &lp);
    assert!(
        d <= tol,
        "{name}: logprobs_head differs by {d:e} at position {}, token {}",
        i / vocab,
        i % vocab
    );

    // The log-probs through the LanguageModel interface agree with the logits above.
    let tlp = runner.token_logprobs(&ids[..16]).expect("token_logprobs");
    for (p, &x) in tlp.iter().enumerate() {
        let want = head.values[p * vocab + ids[p + 1] as usize];
        assert!(
            (want - x as f64).abs() <= tol,
            "{name}: token_logprobs[{p}] = {x}, golden {want}"
        );
    }
    let t_logits = t0.elapsed();

    // Perplexity over the whole eval text, the pruning-paper protocol.
    let ppl = &gj["ppl_tinystories_eval"];
    let seq = ppl["seqlen"].as_u64().expect("seqlen") as usize;
    let text = shared("data/tinystories/tinystories_eval.txt");
    let windows = text_windows(&runner, &text, seq, None).expect("windows");
    assert_eq!(
        windows.len() as u64,
        ppl["nsamples"].as_u64().expect("nsamples")
    );
    assert_eq!(
        windows[0][..128],
        ids[..],
        "{name}: tokenisation differs from the golden input"
    );
    let scores = score(&runner, None, &windows, &Silent).expect("score");
    let q = quality("tinystories_eval", &scores);
    assert_eq!(
        q.perplexity.predicted_tokens,
        ppl["predicted_tokens"].as_u64().expect("predicted_tokens")
    );
    let want = ppl["ppl"].as_f64().expect("ppl");
    let got = q.perplexity.ppl;
    eprintln!(
        "{name}: ppl {got:.6} (golden {want:.6}); logits {:.1} s, total {:.1} s",
        t_logits.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        sig(got, 4),
        sig(want, 4),
        "{name}: perplexity {got} vs golden {want} (4 significant digits)"
    );
    assert!(
        (got - want).abs() / want < 1e-4,
        "{name}: perplexity {got} vs golden {want}"
    );
}

#[test]
fn stories260k_matches_golden() {
    check_model("stories260k");
}

#[test]
fn tiny_llama_matches_golden() {
    check_model("tiny-llama");
}

#[test]
fn tiny_mixtral_matches_golden() {
    check_model("tiny-mixtral");
}

/// Qwen3: per-head q/k RMSNorm before RoPE (untrained; exactness only).
#[test]
fn tiny_qwen3_matches_golden() {
    check_model("tiny-qwen3");
}

/// Qwen3-MoE: 16 experts, top-4 renormalised, block 0 a dense MLP (`mlp_only_layers: [0]`).
#[test]
fn tiny_qwen3_moe_matches_golden() {
    check_model("tiny-qwen3-moe");
}

/// A generated Qwen3-MoE checkpoint (tools/qwen3_moe_layout/make_golden.py) with
/// `decoder_sparse_step: 2`, `mlp_only_layers: [3]`, `norm_topk_prob: false` and the expert count
/// under the transformers-4 key `num_experts`: only block 1 routes, and the logits match
/// transformers'.
#[test]
fn qwen3_moe_layout_matches_transformers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/qwen3-moe-layout");
    let tmp = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).expect("copy");
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(model_dir("tiny-qwen3-moe").join(f), tmp.path().join(f)).expect("copy");
    }
    let mut runner = ModelRunner::open(tmp.path(), &cpu()).expect("open");
    let cfg = runner.cfg().clone();
    assert_eq!(cfg.moe_blocks, vec![false, true, false, false]);
    assert_eq!((cfg.num_experts, cfg.experts_per_token), (6, 2));
    assert!(!cfg.norm_topk_prob);
    let golden = src.join("golden.safetensors");
    let ids: Vec<u32> = read_tensor(&golden, "input_ids")
        .values
        .iter()
        .map(|&v| v as u32)
        .collect();
    let vocab = runner.ends.vocab;
    let logits = runner.logits(&ids).expect("logits");
    let want = read_tensor(&golden, "logits");
    for (k, &p) in read_tensor(&golden, "positions").values.iter().enumerate() {
        let p = p as usize;
        let (d, i) = max_diff(
            &want.values[k * vocab..(k + 1) * vocab],
            &logits[p * vocab..(p + 1) * vocab],
        );
        assert!(
            d <= TOL,
            "position {p}: logits differ by {d:e} at token {i}"
        );
    }
}

#[test]
fn stories260k_greedy_sample_matches_golden() {
    let dir = model_dir("stories260k");
    let gj = golden_json(&dir);
    let g = &gj["greedy_sample"];
    let prompt = g["prompt"].as_str().expect("prompt");
    let max_new = g["max_new_tokens"].as_u64().expect("max_new_tokens") as usize;
    let want = g["text"].as_str().expect("text");
    let mut runner = ModelRunner::open(&dir, &cpu()).expect("open model");
    let cont = generate(&mut runner, prompt, max_new).expect("generate");
    // golden text = the prompt and its continuation decoded together.
    let ids = runner.encode(prompt, true).expect("encode");
    let new = runner
        .greedy(&ids, max_new, &runner.stop_tokens())
        .expect("greedy");
    assert_eq!(new.len(), max_new, "greedy stopped early");
    let mut all = ids.clone();
    all.extend(&new);
    let full = runner.decode(&all).expect("decode");
    assert_eq!(full, want, "greedy sample");
    assert!(
        want.ends_with(cont.trim_start()) || format!("{prompt}{cont}") == want,
        "generate() continuation {cont:?} is not the golden sample's tail"
    );
}
