//! MC-MoE's PMQ on tiny-mixtral: the widths are the optimum of the block's integer program
//! (checked against exhaustive search from the report's own measurements), the mixed-precision
//! checkpoint (one config group per width) reads back exactly, and bad budgets, widths and dense
//! models are refused.

mod common;
mod common_compress;

use std::path::{Path, PathBuf};

use common::{compress, model_dir, text};
use pare::compress::mc_moe::ilp::{Program, exhaustive};

fn recipe(dir: &Path, name: &str, step: &str, export: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration");
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "calibration: {{ text: {}, samples: 16, seq_len: 128, seed: 0 }}\nsteps:\n  - {step}\nexport: {{ format: {export} }}\n",
            root.join("tinystories-train-head.txt").display()
        ),
    )
    .expect("recipe");
    p
}

fn ppl(dir: &Path) -> f64 {
    let text = common_compress::root("calibration/tinystories-valid-head.txt");
    common_compress::eval_ppl(dir, &text, 128, 8)
}

#[test]
fn pmq_widths_are_the_programs_optimum_and_read_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let step = "mc-moe: { budget_bits: 2.5, widths: [2, 3, 4], format: int4-g128-asym }";
    let mut ppls = Vec::new();
    for export in ["pack-quantized", "dense"] {
        let out = tmp.path().join(export);
        let o = compress(
            &[],
            &model_dir("tiny-mixtral"),
            &recipe(tmp.path(), export, step, export),
            &out,
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        ppls.push(ppl(&out));
        if export == "dense" {
            continue;
        }
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("report.json")).expect("report"),
        )
        .expect("json");
        let profiles = report["allocation"]["profiles"]
            .as_array()
            .expect("profiles");
        assert_eq!(profiles.len(), 4, "one decision per MoE block");
        let mut widths_by_module = std::collections::BTreeMap::new();
        for p in profiles {
            let b = p["block"].as_u64().expect("block");
            let freq: Vec<f64> = p["frequency"]
                .as_array()
                .expect("f")
                .iter()
                .map(|v| v.as_f64().expect("n"))
                .collect();
            let w: Vec<f64> = p["router_weight"]
                .as_array()
                .expect("w")
                .iter()
                .map(|v| v.as_f64().expect("n"))
                .collect();
            let loss: Vec<Vec<f64>> = p["loss"]
                .as_array()
                .expect("loss")
                .iter()
                .map(|l| {
                    l.as_array()
                        .expect("l")
                        .iter()
                        .map(|v| v.as_f64().expect("n"))
                        .collect()
                })
                .collect();
            let (fs, ws): (f64, f64) = (freq.iter().sum(), w.iter().sum());
            // c = 1000 · φ̂^α · ŵ^β · L^α with α = 1, β = 1.5.
            let cost = (0..8)
                .map(|e| {
                    loss[e]
                        .iter()
                        .map(|l| 1000.0 * (freq[e] / fs) * (w[e] / ws).powf(1.5) * l)
                        .collect()
                })
                .collect();
            let program = Program {
                cost,
                widths: vec![2, 3, 4],
                budget: 20,
            };
            let (best, obj) = exhaustive(&program).expect("feasible");
            let got = p["objective"].as_f64().expect("objective");
            assert!(
                (got - obj).abs() <= 1e-6 * obj.max(1e-12),
                "block {b}: {got} vs exhaustive {obj}"
            );
            let widths: Vec<u64> = p["widths"]
                .as_array()
                .expect("widths")
                .iter()
                .map(|v| v.as_u64().expect("n"))
                .collect();
            assert_eq!(
                program
                    .evaluate(&widths.iter().map(|&x| (x - 2) as usize).collect::<Vec<_>>())
                    .map(|v| (v - obj).abs() <= 1e-6 * obj.max(1e-12)),
                Some(true),
                "block {b}: {widths:?} vs {best:?}"
            );
            assert!(
                widths.iter().sum::<u64>() <= 20 && widths.contains(&4) && widths.contains(&3),
                "{widths:?}"
            );
            assert!(
                p["solver"]
                    .as_str()
                    .expect("solver")
                    .starts_with("microlp optimal")
            );
            for (e, bits) in widths.iter().enumerate() {
                for w in ["w1", "w2", "w3"] {
                    widths_by_module.insert(
                        format!("model.layers.{b}.block_sparse_moe.experts.{e}.{w}"),
                        *bits,
                    );
                }
            }
        }
        // config.json: one group per width; every expert module in the group of its width,
        // attention and routers at 4 bits.
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("config.json")).expect("config"),
        )
        .expect("json");
        let groups = cfg["quantization_config"]["config_groups"]
            .as_object()
            .expect("groups");
        let mut seen = 0;
        for g in groups.values() {
            let bits = g["weights"]["num_bits"].as_u64().expect("bits");
            assert_eq!(g["weights"]["group_size"], 128);
            assert_eq!(g["weights"]["symmetric"], false);
            for t in g["targets"].as_array().expect("targets") {
                let t = t.as_str().expect("target");
                match widths_by_module.get(t) {
                    Some(&want) => {
                        assert_eq!(bits, want, "{t}");
                        seen += 1;
                    }
                    None => assert_eq!(bits, 4, "{t}: attention and routers at format's width"),
                }
            }
        }
        assert_eq!(seen, 4 * 8 * 3, "every expert module listed once");
    }
    assert_eq!(
        ppls[0], ppls[1],
        "pack-quantized reads back with the dense export's perplexity"
    );
}

#[test]
fn bad_budgets_widths_and_dense_models_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, model, step, key) in [
        (
            "low",
            "tiny-mixtral",
            "mc-moe: { budget_bits: 1.5, format: int4-g128-asym }",
            "budget_bits",
        ),
        (
            "tight",
            "tiny-mixtral",
            "mc-moe: { budget_bits: 2.2, format: int4-g128-asym }",
            "budget_bits",
        ),
        (
            "width",
            "tiny-mixtral",
            "mc-moe: { budget_bits: 3, widths: [2, 5], format: int4-g128-asym }",
            "widths",
        ),
        (
            "dense",
            "tiny-llama",
            "mc-moe: { budget_bits: 2.5, format: int4-g32-asym }",
            "targets",
        ),
    ] {
        let out = tmp.path().join(name);
        let o = compress(
            &[],
            &model_dir(model),
            &recipe(tmp.path(), name, step, "pack-quantized"),
            &out,
        );
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(&format!("mc-moe.{key}")), "{name}: {err}");
        assert!(!out.exists());
    }
}

fn odp_recipe(dir: &Path, name: &str, odp: &str, model_eval: bool) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration");
    let p = dir.join(format!("{name}.yaml"));
    let eval = if model_eval {
        format!(
            "eval: {{ text: {}, seq_len: 128, max_windows: 16, kld: true }}\n",
            root.join("tinystories-valid-head.txt").display()
        )
    } else {
        String::new()
    };
    std::fs::write(
        &p,
        format!(
            "calibration: {{ text: {}, samples: 16, seq_len: 128, seed: 0 }}\nsteps:\n  - rtn: {{ format: int8-ch-sym }}\n{odp}export: {{ format: pack-quantized }}\n{eval}",
            root.join("tinystories-train-head.txt").display()
        ),
    )
    .expect("recipe");
    p
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report"))
        .expect("json")
}

/// ODP: β per MoE block in config.json's `compression.odp`, read back by `pare eval`, which
/// reports the skipped expert calls (near the target on other text); `skip: 0` and no policy give
/// the same numbers bit for bit; more skipping costs more KLD; a dense model is refused.
#[test]
fn odp_skips_the_target_share_of_expert_calls() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut rows = Vec::new();
    for (name, odp) in [
        ("none", ""),
        ("zero", "odp: { skip: 0 }\n"),
        ("fifth", "odp: { skip: 0.2 }\n"),
    ] {
        let out = tmp.path().join(name);
        let o = compress(
            &[],
            &model_dir("tiny-mixtral"),
            &odp_recipe(tmp.path(), name, odp, true),
            &out,
        );
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o).1);
        let r = report(&out);
        let q = &r["quality"];
        rows.push((
            q["perplexity"]["ppl"].as_f64().expect("ppl"),
            q["kld"]["mean_kld"]["value"].as_f64().expect("kld"),
            q["odp"]["skipped_fraction"].as_f64(),
        ));
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("config.json")).expect("config"),
        )
        .expect("json");
        let beta = cfg.pointer("/compression/odp/beta");
        match name {
            "none" => assert!(beta.is_none()),
            _ => assert_eq!(
                beta.and_then(|b| b.as_array()).map(Vec::len),
                Some(4),
                "{name}"
            ),
        }
    }
    assert_eq!(rows[0].0, rows[1].0, "skip 0 leaves the forward as it was");
    assert_eq!(rows[0].1, rows[1].1);
    assert_eq!(rows[0].2, None);
    assert_eq!(rows[1].2, Some(0.0));
    let skipped = rows[2].2.expect("skipped");
    assert!(
        (skipped - 0.2).abs() < 0.06,
        "skipped {skipped} of the expert calls on the eval text"
    );
    assert!(rows[2].1 > rows[0].1, "skipping costs KLD: {rows:?}");

    // A dense model, and a skip outside [0, 1).
    for (name, model, odp, key) in [
        ("dense", "tiny-llama", "odp: { skip: 0.2 }\n", "odp"),
        ("range", "tiny-mixtral", "odp: { skip: 1.5 }\n", "odp.skip"),
    ] {
        let out = tmp.path().join(name);
        let o = compress(
            &[],
            &model_dir(model),
            &odp_recipe(tmp.path(), name, odp, false),
            &out,
        );
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(key), "{name}: {err}");
    }
}
