//! `pare compress` end to end: parity with llm-compressor on stories260k, error ordering of the
//! pruning methods, exact N:M and per-row counts, determinism, export round trips, the shipped
//! recipes and `propagate`.

mod common_compress;

use std::path::Path;

use common_compress::*;
use serde_json::Value;

/// The parity recipes and their key in reference.json.
const PARITY: [(&str, &str); 7] = [
    ("magnitude-50", "magnitude-50"),
    ("wanda-50", "wanda-50"),
    ("sparsegpt-50", "sparsegpt-50"),
    ("wanda-2of4", "wanda-2of4"),
    ("sparsegpt-2of4", "sparsegpt-2of4"),
    ("rtn-int4", "rtn-w4ch"),
    ("gptq-int4", "gptq-w4ch"),
];

/// Per-row counts of non-zeros in each aligned group of `m` columns.
fn group_nonzeros(w: &pare::Matrix, m: usize) -> Vec<usize> {
    (0..w.rows)
        .flat_map(|r| {
            w.row(r)
                .chunks(m)
                .map(|g| g.iter().filter(|x| **x != 0.0).count())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks every aligned group of 4 input weights of every linear keeps exactly 2.
fn assert_exact_2of4(dir: &Path, what: &str) {
    for (id, w) in read_linears(dir) {
        assert_eq!(w.cols % 4, 0, "{what} {id}");
        let counts = group_nonzeros(&w, 4);
        let bad: Vec<usize> = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != 2)
            .map(|(i, _)| i)
            .collect();
        assert!(
            bad.is_empty(),
            "{what} {id}: {} of {} groups do not keep exactly 2 (first group {}: {} kept)",
            bad.len(),
            counts.len(),
            bad[0],
            counts[bad[0]]
        );
    }
}

#[test]
fn parity_with_llm_compressor_on_stories260k() {
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(stories().join("reference.json")).unwrap())
            .unwrap();
    let dense = reference["dense_perplexity"].as_f64().unwrap();
    // An independent PyTorch implementation of the reference ordering (tools/orderings/).
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(root("tests/golden/orderings-stories260k.json")).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut got = std::collections::BTreeMap::new();
    for (name, key) in PARITY {
        let recipe = root(&format!("tests/parity/{name}.yaml"));
        let out = tmp.path().join(name);
        let report = compress(&stories(), &recipe, &out);
        let p = ppl(&report);
        let r = reference["perplexity"][key].as_f64().unwrap();
        eprintln!("parity {name}: pare {p:.4}, llm-compressor {r:.4}");
        assert!(
            p.is_finite() && p <= r * 1.01,
            "{name}: ppl {p} > {r} × 1.01"
        );
        // Pruning defaults to `sequential: block`, the reference ordering, reproduced exactly
        // (SparseGPT here prunes exactly floor(n·p) per block, as the golden file does;
        // llm-compressor's `<= thr` prunes one more, hence its 17.80 for sparsegpt-50).
        if let Some(want) = golden["perplexity"]["block"][name].as_f64() {
            assert!(
                (p / want - 1.0).abs() < 1e-4,
                "{name}: {p} vs block ordering {want}"
            );
        }
        // Sanity of the protocol: the base perplexity is the reference's dense perplexity.
        let base = report["quality"]["base_perplexity"]["ppl"]
            .as_f64()
            .unwrap();
        assert!(
            (base / dense - 1.0).abs() < 1e-4,
            "{name}: base ppl {base} vs {dense}"
        );
        // Every linear was compressed and measured, on 1,024 of the 128 × 256 tokens.
        let linears = report["linears"].as_array().unwrap();
        assert_eq!(linears.len(), 35, "{name}");
        assert_eq!(
            report["provenance"]["calibration"]["error_tokens"].as_u64(),
            Some(1024),
            "{name}"
        );
        assert!(linears.iter().all(|l| l["rel_error"].as_f64().is_some()));
        got.insert(name, (p, r));
    }
    // Data-free methods have no freedom: pare matches within 1%. (GPTQ's default is the
    // true-sequential ordering, which beats the reference's; `sequential_block_*` checks the
    // reference ordering itself.)
    for name in ["magnitude-50", "rtn-int4"] {
        let (p, r) = got[name];
        assert!(
            (p / r - 1.0).abs() < 0.01,
            "{name}: ppl {p} vs reference {r}"
        );
    }
    assert!(
        got["gptq-int4"].0 < got["rtn-int4"].0,
        "GPTQ is not better than RTN: {got:?}"
    );

    // Exact counts on the written checkpoints.
    assert_exact_2of4(&tmp.path().join("wanda-2of4"), "wanda-2of4");
    assert_exact_2of4(&tmp.path().join("sparsegpt-2of4"), "sparsegpt-2of4");
    for (id, w) in read_linears(&tmp.path().join("wanda-50")) {
        let want = w.cols / 2;
        for r in 0..w.rows {
            let zeros = w.row(r).iter().filter(|x| **x == 0.0).count();
            assert_eq!(
                zeros, want,
                "wanda-50 {id} row {r}: {zeros} zeros of {}",
                w.cols
            );
        }
    }
    let info = inspect(&tmp.path().join("wanda-2of4"));
    for l in info["linears"].as_array().unwrap() {
        assert_eq!(l["is_2of4"], true, "inspect: {l}");
        assert!(
            (l["zeros"].as_f64().unwrap() - 0.5).abs() < 1e-12,
            "inspect: {l}"
        );
    }
}

#[test]
fn sparsegpt_beats_wanda_beats_magnitude_on_tiny_llama() {
    let tmp = tempfile::tempdir().unwrap();
    let mut errs: Vec<Vec<(String, f64)>> = Vec::new();
    for step in [
        "sparsegpt: { sparsity: 0.5, block_size: 128, dampening: 0.01 }",
        "wanda: { sparsity: 0.5 }",
        "magnitude: { sparsity: 0.5 }",
    ] {
        let name = step.split(':').next().unwrap();
        let recipe = write_recipe(
            tmp.path(),
            &format!("{name}.yaml"),
            &text_recipe(
                32,
                256,
                &format!("steps:\n  - {step}\nexport: {{ format: dense }}"),
            ),
        );
        let report = compress(&tiny_llama(), &recipe, &tmp.path().join(name));
        let rows = report["linears"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["id"].as_str().unwrap().to_string(),
                    l["rel_error"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>();
        assert_eq!(rows.len(), 8 * 7);
        errs.push(rows);
    }
    let (sg, wa, mg) = (&errs[0], &errs[1], &errs[2]);
    let mut wanda_violations = Vec::new();
    for ((a, b), c) in sg.iter().zip(wa).zip(mg) {
        assert!(a.0 == b.0 && b.0 == c.0, "layer order differs");
        assert!(
            a.1 < b.1 && a.1 < c.1,
            "{}: SparseGPT {} Wanda {} magnitude {}",
            a.0,
            a.1,
            b.1,
            c.1
        );
        if b.1 >= c.1 {
            wanda_violations.push(format!("{} (wanda {:.4} ≥ magnitude {:.4})", b.0, b.1, c.1));
        }
    }
    let mean = |v: &[(String, f64)]| v.iter().map(|x| x.1).sum::<f64>() / v.len() as f64;
    eprintln!(
        "mean rel_error: sparsegpt {:.4}, wanda {:.4}, magnitude {:.4}; wanda ≥ magnitude on {:?}",
        mean(sg),
        mean(wa),
        mean(mg),
        wanda_violations
    );
    assert!(mean(wa) < mean(mg));
    // Measured (32 × 256 calibration, both propagate modes): Wanda's per-row error is above
    // magnitude's per-matrix error on 23–24 of the 56 linears, all of them fed by an RMSNorm
    // (attn.q/k/v, mlp.gate/up). Our reading (not proven): there the input column norms vary
    // little, so Wanda is close to per-row magnitude, and magnitude's whole-matrix threshold
    // (keeping more weights in the rows that carry most of ‖WX‖) wins. On attn.o and mlp.down,
    // whose inputs have uneven column norms, Wanda must win on every layer.
    let post_norm = |id: &str| {
        [".q", ".k", ".v", ".gate", ".up"]
            .iter()
            .any(|s| id.ends_with(s))
    };
    for v in &wanda_violations {
        assert!(
            post_norm(v.split(' ').next().unwrap()),
            "Wanda not below magnitude on {v}"
        );
    }
}

#[test]
fn same_recipe_twice_gives_identical_files() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "r.yaml",
        &text_recipe(
            16,
            128,
            "steps:\n  - sparsegpt: { pattern: \"2:4\" }\n  - gptq: { format: int4-ch-sym }\n\
             export: { format: pack-quantized }",
        ),
    );
    let mut files = Vec::new();
    for run in ["a", "b"] {
        let out = tmp.path().join(run);
        let o = compress_raw(&stories(), &recipe, &out, &["--max-shard-size", "100KB"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        files.push(safetensors_files(&out));
    }
    assert!(
        files[0].len() > 1,
        "expected several shards, got {}",
        files[0].len()
    );
    assert_eq!(files[0].len(), files[1].len());
    for (a, b) in files[0].iter().zip(&files[1]) {
        assert_eq!(a.0, b.0);
        assert!(a.1 == b.1, "{} differs between two runs", a.0);
    }
}

/// Reads `quantization_config` from an output's config.json.
fn qconfig(dir: &Path) -> Value {
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    cfg["quantization_config"].clone()
}

#[test]
fn sparse_exports_round_trip_to_the_same_perplexity() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ppls = Vec::new();
    let mut weights = Vec::new();
    for fmt in ["dense", "sparse-bitmask", "sparse-24-bitmask"] {
        let recipe = write_recipe(
            tmp.path(),
            &format!("{fmt}.yaml"),
            &text_recipe(
                32,
                256,
                &format!("steps:\n  - wanda: {{ pattern: \"2:4\" }}\nexport: {{ format: {fmt} }}"),
            ),
        );
        let out = tmp.path().join(fmt);
        compress(&stories(), &recipe, &out);
        let q = qconfig(&out);
        match fmt {
            "dense" => assert!(q.is_null() || q.get("sparsity_config").is_none(), "{q}"),
            _ => {
                let sp = &q["sparsity_config"];
                assert_eq!(sp["format"], fmt, "{q}");
                assert_eq!(q["quant_method"], "compressed-tensors");
                let structure = if fmt == "sparse-24-bitmask" {
                    "2:4"
                } else {
                    "unstructured"
                };
                assert_eq!(sp["sparsity_structure"], structure);
                let g = sp["global_sparsity"].as_f64().unwrap();
                assert!(g > 0.3 && g < 0.6, "global_sparsity {g}");
                assert_eq!(inspect(&out)["linears"][0]["format"], fmt);
            }
        }
        ppls.push(eval_ppl(&out, &valid_text(), 256, 20));
        weights.push(read_linears(&out));
    }
    eprintln!("wanda-2of4 dense / sparse-bitmask / sparse-24-bitmask ppl: {ppls:?}");
    assert!(ppls[0] == ppls[1] && ppls[1] == ppls[2], "{ppls:?}");
    assert!(weights[0] == weights[1] && weights[1] == weights[2]);
}

#[test]
fn pack_quantized_round_trips_and_is_small() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ppls = Vec::new();
    for fmt in ["dense", "pack-quantized"] {
        let recipe = write_recipe(
            tmp.path(),
            &format!("{fmt}.yaml"),
            &text_recipe(
                16,
                128,
                &format!("steps:\n  - rtn: {{ format: int4-ch-sym }}\nexport: {{ format: {fmt} }}"),
            ),
        );
        let out = tmp.path().join(fmt);
        compress(&stories(), &recipe, &out);
        ppls.push(eval_ppl(&out, &valid_text(), 256, 20));
    }
    eprintln!("rtn-int4 dense / pack-quantized ppl: {ppls:?}");
    assert!((ppls[0] / ppls[1] - 1.0).abs() < 1e-6, "{ppls:?}");
    assert_eq!(
        qconfig(&tmp.path().join("pack-quantized"))["format"],
        "pack-quantized"
    );

    // Size on tiny-llama (bf16): int4 with group 32 (its d_in 320 and 864 divide by 32).
    let recipe = write_recipe(
        tmp.path(),
        "g32.yaml",
        &text_recipe(
            8,
            128,
            "steps:\n  - rtn: { format: int4-g32-sym }\nexport: { format: pack-quantized }",
        ),
    );
    let out = tmp.path().join("tiny-g32");
    compress(&tiny_llama(), &recipe, &out);
    let info = inspect(&out);
    let linears = info["linears"].as_array().unwrap();
    assert_eq!(linears.len(), 8 * 7);
    for l in linears {
        let bpw = l["bits_per_weight"].as_f64().unwrap();
        assert_eq!(l["format"], "pack-quantized", "{l}");
        assert!(bpw < 0.3 * 16.0, "{}: {bpw} bits per weight", l["id"]);
    }
}

#[test]
fn every_shipped_recipe_runs_on_stories260k() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = root("recipes");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for path in names {
        let mut r: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let abs = |v: &Value| Value::from(dir.join(v.as_str().unwrap()).display().to_string());
        r["calibration"]["samples"] = 16.into();
        let text = abs(&r["calibration"]["text"]);
        r["calibration"]["text"] = text;
        if r.get("eval").is_some() {
            let text = abs(&r["eval"]["text"]);
            r["eval"]["text"] = text;
            r["eval"]["max_windows"] = 4.into();
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // JSON is YAML: write the modified copy as is.
        let copy = write_recipe(
            tmp.path(),
            &name,
            &serde_json::to_string_pretty(&r).unwrap(),
        );
        let out = tmp.path().join(name.trim_end_matches(".yaml"));
        let report = compress(&root("models/stories260k"), &copy, &out);
        let written: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap())
                .unwrap_or_else(|e| panic!("{name}: report.json: {e}"));
        assert_eq!(written["linears"], report["linears"], "{name}");
        assert!(!report["linears"].as_array().unwrap().is_empty(), "{name}");
        if r.get("eval").is_some() {
            assert!(ppl(&report).is_finite(), "{name}");
        }
        eprintln!("{name}: ok");
    }
}

#[test]
fn propagate_original_and_compressed_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let mut outs = Vec::new();
    for mode in ["original", "compressed"] {
        let recipe = write_recipe(
            tmp.path(),
            &format!("{mode}.yaml"),
            &text_recipe(
                16,
                128,
                &format!("steps:\n  - sparsegpt: {{ sparsity: 0.5 }}\npropagate: {mode}"),
            ),
        );
        let out = tmp.path().join(mode);
        compress(&stories(), &recipe, &out);
        outs.push(read_linears(&out));
    }
    let mut differ = 0;
    for ((id, a), (_, b)) in outs[0].iter().zip(&outs[1]) {
        if ["blocks.0.attn.q", "blocks.0.attn.k", "blocks.0.attn.v"].contains(&id.as_str()) {
            // These see the embeddings either way.
            assert!(a == b, "{id} differs although it has the same inputs");
        } else if a != b {
            differ += 1;
        }
    }
    assert!(
        differ > 0,
        "propagate: original and compressed gave the same weights"
    );
}

#[test]
fn four_of_eight_with_a_tail_group_runs_and_is_flagged() {
    // stories260k's down_proj has d_in 172 = 21 groups of 8 + a tail of 4, which keeps 2.
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "w48.yaml",
        &text_recipe(
            16,
            128,
            "steps:\n  - wanda: { pattern: \"4:8\" }\nexport: { format: dense }",
        ),
    );
    let out = tmp.path().join("w48");
    let o = compress_raw(&stories(), &recipe, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    for l in report["linears"].as_array().unwrap() {
        let down = l["id"].as_str().unwrap().ends_with("mlp.down");
        assert_eq!(l["pattern"], "4:8", "{l}");
        assert_eq!(l["pattern_exact"], !down, "{l}");
        let warned = l["warnings"]
            .to_string()
            .contains("d_in 172 is not a multiple of 8");
        assert_eq!(warned, down, "{l}");
    }
    // Without --quiet the warning is logged with the layer's name.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["compress", "--force", "--model"])
        .arg(stories())
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("blocks.0.mlp.down: d_in 172 is not a multiple of 8"),
        "no warning naming the layer: {stderr}"
    );
    for (id, w) in read_linears(&out) {
        let whole = w.cols / 8 * 8;
        for r in 0..w.rows {
            let row = w.row(r);
            for g in row[..whole].chunks(8) {
                assert_eq!(g.iter().filter(|v| **v != 0.0).count(), 4, "{id} row {r}");
            }
            let tail = row[whole..].iter().filter(|v| **v != 0.0).count();
            assert_eq!(tail, (w.cols - whole) / 2, "{id} row {r} tail");
        }
    }
    let info = inspect(&out);
    for l in info["linears"].as_array().unwrap() {
        let down = l["id"].as_str().unwrap().ends_with("mlp.down");
        assert_eq!(l["n_of_m"], "4:8", "{l}");
        assert_eq!(
            l["n_of_m_tail"],
            if down { Value::from(4) } else { Value::Null },
            "{l}"
        );
    }
    // The exact-2:4 layout refuses such a layer, naming it (d_in 172 is a multiple of 4, so
    // 2:4 itself is exact here; 4:8 is not 2:4 at all).
    let recipe = write_recipe(
        tmp.path(),
        "w48-24.yaml",
        &text_recipe(
            16,
            128,
            "steps:\n  - wanda: { pattern: \"4:8\" }\nexport: { format: sparse-24-bitmask }",
        ),
    );
    let o = compress_raw(&stories(), &recipe, &tmp.path().join("w48-24"), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("`blocks.0.attn.q` is not"));
}

#[test]
fn owl_n_of_m_gives_blocks_their_own_n_with_the_mean_pattern() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "owl24.yaml",
        &text_recipe(
            16,
            128,
            "steps:\n  - wanda: { pattern: \"2:4\", profile: { owl: { lambda: 2 } } }\nexport: { format: dense }",
        ),
    );
    let report = compress(&stories(), &recipe, &tmp.path().join("owl24"));
    let blocks = report["allocation"]["profiles"][0]["blocks"]
        .as_array()
        .unwrap()
        .clone();
    let kept: Vec<usize> = blocks
        .iter()
        .map(|b| {
            b["pattern"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(
        kept.iter().sum::<usize>(),
        2 * blocks.len(),
        "mean N is 2: {kept:?}"
    );
    assert!(
        kept.iter().any(|&k| k != 2),
        "λ 2 moves some block off 2:4: {kept:?}"
    );
    let (mut zeros, mut total) = (0.0, 0.0);
    for (id, w) in read_linears(&tmp.path().join("owl24")) {
        let b: usize = id.split('.').nth(1).unwrap().parse().unwrap();
        assert!(
            w.satisfies_n_of_m(kept[b], 4),
            "{id} keeps {} of 4",
            kept[b]
        );
        zeros += w.data.iter().filter(|v| **v == 0.0).count() as f64;
        total += w.data.len() as f64;
    }
    // Every linear's d_in (64, 172) is a multiple of 4: exactly half the weights overall.
    assert_eq!(zeros / total, 0.5);
    // The blocks do not share one N:M, so no 2:4 layout may be asked for.
    let bad = write_recipe(
        tmp.path(),
        "owl24-bitmask.yaml",
        &text_recipe(
            16,
            128,
            "steps:\n  - wanda: { pattern: \"2:4\", profile: { owl: {} } }\nexport: { format: sparse-24-bitmask }",
        ),
    );
    let o = compress_raw(&stories(), &bad, &tmp.path().join("x"), &[]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn owl_allocates_block_sparsities_with_the_target_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "owl.yaml",
        &text_recipe(
            16,
            128,
            "steps:\n  - wanda: { sparsity: 0.7, profile: { owl: { m: 5, lambda: 0.08 } } }\nexport: { format: dense }",
        ),
    );
    let out = tmp.path().join("owl");
    let report = compress(&stories(), &recipe, &out);
    let prof = &report["allocation"]["profiles"][0];
    assert_eq!(prof["profile"], "owl");
    let blocks = prof["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 5);
    let s: Vec<f64> = blocks
        .iter()
        .map(|b| b["sparsity"].as_f64().unwrap())
        .collect();
    let mean = s.iter().sum::<f64>() / 5.0;
    assert!((mean - 0.7).abs() < 1e-6, "{s:?}");
    let (lo, hi) = s
        .iter()
        .fold((1.0f64, 0.0f64), |(a, b), x| (a.min(*x), b.max(*x)));
    assert!((hi - lo - 0.16).abs() < 1e-5, "sparsities span 2λ: {s:?}");
    // Every linear of block b is pruned to block b's sparsity (Wanda: floor per row).
    let mut zeros = 0.0;
    let mut total = 0.0;
    for l in report["linears"].as_array().unwrap() {
        let id = l["id"].as_str().unwrap();
        let b: usize = id.split('.').nth(1).unwrap().parse().unwrap();
        let cols = l["shape"][1].as_f64().unwrap();
        let want = (cols * s[b]).floor() / cols;
        assert!(
            (l["sparsity"].as_f64().unwrap() - want).abs() < 1e-9,
            "{id}"
        );
        let n = l["shape"][0].as_f64().unwrap() * cols;
        zeros += l["sparsity"].as_f64().unwrap() * n;
        total += n;
    }
    assert!(
        (zeros / total - 0.7).abs() < 0.01,
        "overall sparsity {}",
        zeros / total
    );
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["compression"]["allocation"]["profiles"][0]["blocks"],
        prof["blocks"]
    );
    // The report lists every block's outlier ratio and sparsity, and the sparsity reached.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## OWL layer-wise sparsity"), "{md}");
    assert!(
        md.contains(&format!(
            "Target 0.7000; reached over all compressed linears: {:.4}",
            zeros / total
        )),
        "{md}"
    );
    for (b, s) in s.iter().enumerate() {
        assert!(
            md.contains(&format!("| {b} | ")) && md.contains(&format!("{s:.4}")),
            "block {b}"
        );
    }
}
