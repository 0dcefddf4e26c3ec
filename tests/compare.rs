//! `pare compare` end to end on tiny-llama: five recipes on one shared calibration and evaluation,
//! the comparison report, the robust quality orderings, and skipping finished runs on re-run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pare::report::{Comparison, ComparisonRow, Report};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared");

/// Writes `<name>.yaml` into `dir`. Only the first recipe's calibration counts in a comparison,
/// so the others get a different (smaller) one to show that it is overridden.
fn recipe(dir: &Path, name: &str, step: &str, export: &str, samples: usize) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "calibration: {{ text: {SHARED}/data/tinystories/tinystories_train_head.txt, samples: {samples}, seq_len: 256, seed: 0 }}\n\
         steps:\n  - {step}\n\
         export: {{ format: {export} }}\n\
         eval: {{ text: {SHARED}/data/tinystories/tinystories_eval.txt, seq_len: 256, max_windows: 40, kld: true }}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn pare_compare(recipes: &[PathBuf], out: &Path, extra: &[&str]) -> Comparison {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pare"));
    cmd.args(["--quiet", "--json", "compare", "--model"])
        .arg(format!("{SHARED}/models/tiny-llama"))
        .arg("--out")
        .arg(out)
        .args(extra);
    for r in recipes {
        cmd.arg("--recipe").arg(r);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "pare compare failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

fn row<'a>(c: &'a Comparison, name: &str) -> &'a ComparisonRow {
    c.runs
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no run {name}"))
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-12 * a.abs().max(b.abs()),
        (None, None) => true,
        _ => false,
    }
}

#[test]
fn compare_five_recipes_on_tiny_llama() {
    let tmp = tempfile::tempdir().unwrap();
    let rdir = tmp.path().join("recipes");
    std::fs::create_dir_all(&rdir).unwrap();
    let recipes = vec![
        recipe(
            &rdir,
            "magnitude-50",
            "magnitude: { sparsity: 0.5 }",
            "sparse-bitmask",
            32,
        ),
        recipe(
            &rdir,
            "wanda-50",
            "wanda: { sparsity: 0.5 }",
            "sparse-bitmask",
            8,
        ),
        recipe(
            &rdir,
            "sparsegpt-50",
            "sparsegpt: { sparsity: 0.5 }",
            "sparse-bitmask",
            8,
        ),
        recipe(
            &rdir,
            "wanda-2of4",
            "wanda: { pattern: \"2:4\" }",
            "sparse-24-bitmask",
            8,
        ),
        recipe(
            &rdir,
            "rtn-int4",
            "rtn: { format: int4-g32-sym }",
            "pack-quantized",
            8,
        ),
    ];
    let out = tmp.path().join("cmp");
    let cmp = pare_compare(&recipes, &out, &[]);

    // Five runs plus the dense reference, and the three comparison files.
    assert_eq!(cmp.runs.len(), 6, "{cmp:#?}");
    for f in ["comparison.json", "comparison.md", "comparison.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let on_disk: Comparison =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, cmp);
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    let html = std::fs::read_to_string(out.join("comparison.html")).unwrap();
    assert!(html.contains("<svg"), "quality-vs-ratio plot");
    for name in [
        "dense",
        "magnitude-50",
        "wanda-50",
        "sparsegpt-50",
        "wanda-2of4",
        "rtn-int4",
    ] {
        assert!(md.contains(&format!("| {name} |")), "{name} in {md}");
        assert!(html.contains(name), "{name} in html");
    }

    // Every run shares the first recipe's calibration and the same evaluation.
    let mut reports = vec![];
    for r in &recipes {
        let stem = r.file_stem().unwrap().to_str().unwrap();
        let text = std::fs::read_to_string(out.join(stem).join("report.json")).unwrap();
        let rep = Report::from_json(&text).unwrap();
        let cal = rep.provenance.calibration.as_ref().unwrap();
        assert_eq!((cal.samples, cal.seq_len), (32, 256), "{stem}");
        let q = rep.quality.as_ref().unwrap();
        assert_eq!(
            (q.perplexity.seq_len, q.perplexity.windows),
            (256, 40),
            "{stem}"
        );
        assert!(q.kld.is_some(), "{stem}: KLD always on");
        let applied = std::fs::read_to_string(out.join(stem).join("recipe.yaml")).unwrap();
        assert!(applied.contains("samples: 32"), "{stem}: {applied}");
        assert!(out.join(stem).join("config.json").is_file());
        reports.push((stem.to_string(), text));
    }

    // The dense reference: base perplexity of the same windows, ratio 1.
    let dense = row(&cmp, "dense");
    let base_ppl = Report::from_json(&reports[0].1)
        .unwrap()
        .quality
        .unwrap()
        .base_perplexity
        .unwrap()
        .ppl;
    assert_eq!(dense.ppl, Some(base_ppl));
    assert_eq!(dense.params_bytes_ratio, Some(1.0));

    let ppl = |n: &str| row(&cmp, n).ppl.unwrap();
    let kld = |n: &str| row(&cmp, n).kld_mean.unwrap();
    let ratio = |n: &str| row(&cmp, n).params_bytes_ratio.unwrap();
    eprintln!("{md}");
    // Compressing costs quality.
    for n in [
        "magnitude-50",
        "wanda-50",
        "sparsegpt-50",
        "wanda-2of4",
        "rtn-int4",
    ] {
        assert!(ppl(n) > ppl("dense"), "{n} ppl not above dense");
        assert!(kld(n) > 0.0, "{n} kld");
        assert!(ratio(n) < 0.6, "{n} ratio {}", ratio(n));
    }
    // SparseGPT is the best of the 50% pruners (PPL and KLD), Wanda beats magnitude on KLD.
    for n in ["wanda-50", "magnitude-50"] {
        assert!(ppl("sparsegpt-50") < ppl(n), "ppl sparsegpt vs {n}");
        assert!(kld("sparsegpt-50") < kld(n), "kld sparsegpt vs {n}");
    }
    assert!(kld("wanda-50") < kld("magnitude-50"));
    // 2:4 is a harder constraint than unstructured 50% for Wanda.
    assert!(ppl("wanda-2of4") > ppl("wanda-50"));
    assert!(kld("wanda-2of4") > kld("wanda-50"));
    // int4 (g32) is smaller and closer to the base than every 50% pruner on KLD, and beats
    // magnitude and Wanda on perplexity (SparseGPT is within noise of it on this model).
    assert!(ratio("rtn-int4") < 0.3);
    for n in ["magnitude-50", "wanda-50", "sparsegpt-50", "wanda-2of4"] {
        assert!(kld("rtn-int4") < kld(n), "kld int4 vs {n}");
    }
    for n in ["magnitude-50", "wanda-50", "wanda-2of4"] {
        assert!(ppl("rtn-int4") < ppl(n), "ppl int4 vs {n}");
    }
    // Sorted by size then perplexity: int4 first, dense last.
    let sorted: Vec<&str> = cmp.sorted().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(sorted.first(), Some(&"rtn-int4"));
    assert_eq!(sorted.last(), Some(&"dense"));

    // Re-running without --force skips every recipe: fast, reports untouched, same comparison.
    let t = Instant::now();
    let again = pare_compare(&recipes, &out, &[]);
    let secs = t.elapsed().as_secs_f64();
    assert!(
        secs < 20.0,
        "re-run took {secs:.1} s: recipes were not skipped"
    );
    for (stem, text) in &reports {
        let now = std::fs::read_to_string(out.join(stem).join("report.json")).unwrap();
        assert_eq!(&now, text, "{stem} report rewritten");
    }
    assert_eq!(again.runs.len(), cmp.runs.len());
    for (a, b) in again.runs.iter().zip(&cmp.runs) {
        // report.json round-trips floats to within an ulp (serde_json's default float parser).
        assert_eq!((&a.name, &a.recipe), (&b.name, &b.recipe));
        assert!(
            close(a.ppl, b.ppl) && close(a.kld_mean, b.kld_mean),
            "{a:?} vs {b:?}"
        );
        assert!(close(a.same_top_p, b.same_top_p));
        assert!(close(a.params_bytes_ratio, b.params_bytes_ratio));
    }
}

#[test]
fn compare_rejects_clashing_stems_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let r1 = recipe(&a, "wanda-50", "wanda: { sparsity: 0.5 }", "dense", 8);
    let r2 = recipe(&b, "wanda-50", "magnitude: { sparsity: 0.5 }", "dense", 8);
    let out = tmp.path().join("cmp");
    let o = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["--quiet", "compare", "--model"])
        .arg(format!("{SHARED}/models/tiny-llama"))
        .arg("--recipe")
        .arg(&r1)
        .arg("--recipe")
        .arg(&r2)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("same file stem `wanda-50`"), "{err}");
    assert!(!out.exists(), "nothing written before the check");
}

#[test]
fn compare_without_an_evaluation_text_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("plain.yaml");
    std::fs::write(
        &path,
        format!(
            "calibration: {{ text: {SHARED}/data/tinystories/tinystories_train_head.txt, samples: 4, seq_len: 64 }}\nsteps:\n  - magnitude: {{ sparsity: 0.5 }}\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("cmp");
    let o = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["--quiet", "compare", "--model"])
        .arg(format!("{SHARED}/models/stories260k"))
        .arg("--recipe")
        .arg(&path)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plain.yaml: eval:") && err.contains("--text"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn compare_text_and_tasks_override_on_stories260k() {
    let tmp = tempfile::tempdir().unwrap();
    let cal = format!("{SHARED}/data/tinystories/tinystories_train_head.txt");
    // The first recipe's eval block (valid text, kld off) is shared; --text replaces its text
    // and KLD is always on. The second recipe's eval block is ignored.
    let a = tmp.path().join("mag.yaml");
    std::fs::write(
        &a,
        format!(
            "calibration: {{ text: {cal}, samples: 8, seq_len: 128 }}\nsteps:\n  - magnitude: {{ sparsity: 0.5 }}\neval: {{ text: {SHARED}/data/tinystories/tinystories_valid_head.txt, seq_len: 128, max_windows: 12, kld: false }}\n"
        ),
    )
    .unwrap();
    let b = tmp.path().join("wanda.yaml");
    std::fs::write(
        &b,
        format!(
            "calibration: {{ text: {cal}, samples: 4, seq_len: 64 }}\nsteps:\n  - wanda: {{ sparsity: 0.5 }}\neval: {{ text: {cal}, seq_len: 64, max_windows: 3 }}\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("cmp");
    let req = pare::commands::compare::CompareRequest {
        model: format!("{SHARED}/models/stories260k").into(),
        recipes: vec![a, b],
        out: out.clone(),
        text: Some(format!("{SHARED}/data/tinystories/tinystories_eval.txt").into()),
        tasks: vec![
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/eval/tasks/tinystories-cloze.jsonl"
            )
            .into(),
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/eval/tasks/tinystories-agreement.jsonl"
            )
            .into(),
        ],
        force: false,
    };
    let device = pare::model::parse_device("cpu").unwrap();
    let cmp = pare::commands::compare::run(&req, &device, &pare::pipeline::Silent).unwrap();
    assert_eq!(cmp.runs.len(), 3);
    for stem in ["mag", "wanda"] {
        let rep = Report::from_json(
            &std::fs::read_to_string(out.join(stem).join("report.json")).unwrap(),
        )
        .unwrap();
        let q = rep.quality.as_ref().unwrap();
        assert!(
            q.perplexity.text.ends_with("tinystories_eval.txt"),
            "{stem}: {}",
            q.perplexity.text
        );
        assert_eq!((q.perplexity.seq_len, q.perplexity.windows), (128, 12));
        assert!(q.kld.is_some(), "{stem}: KLD forced on");
        assert_eq!(rep.provenance.calibration.as_ref().unwrap().samples, 8);
        let r = row(&cmp, stem);
        for k in [
            "tinystories-cloze/acc",
            "tinystories-cloze/acc_norm",
            "tinystories-agreement/token_match",
        ] {
            assert!(r.tasks.contains_key(k), "{stem} lacks {k}: {:?}", r.tasks);
        }
    }
    // The dense row: scored on the tasks it can do alone (no agreement with itself).
    let dense = row(&cmp, "dense");
    assert!(dense.tasks.contains_key("tinystories-cloze/acc"));
    assert!(
        !dense
            .tasks
            .contains_key("tinystories-agreement/token_match")
    );
    assert!(out.join("dense").join("report.json").is_file());
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("tinystories-cloze/acc"), "{md}");
}

/// The base is evaluated once for all runs (three forward passes for two recipes, not four),
/// and each run's KLD is what `pare eval --base` gives for its output on its own.
#[test]
fn compare_evaluates_the_base_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cal = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/calibration/tinystories-train-head.txt"
    );
    let valid = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/calibration/tinystories-valid-head.txt"
    );
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/stories260k");
    let mut recipes = Vec::new();
    for (name, s) in [("m3", 0.3), ("m5", 0.5)] {
        let p = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(
            &p,
            format!(
                "calibration: {{ text: {cal}, samples: 4, seq_len: 64 }}\nsteps:\n  - magnitude: {{ sparsity: {s} }}\nexport: {{ format: dense }}\neval: {{ text: {valid}, seq_len: 64, max_windows: 4, kld: true }}\n"
            ),
        )
        .unwrap();
        recipes.push(p);
    }
    let out = tmp.path().join("cmp");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pare"));
    cmd.args(["compare", "--model", model, "--out"]).arg(&out);
    for r in &recipes {
        cmd.arg("--recipe").arg(r);
    }
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    // Each evaluation forward reports "blocks: 5/5" once (stories260k has 5 blocks).
    assert_eq!(err.matches("blocks: 5/5").count(), 3, "{err}");
    let cmp: Comparison =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap())
            .unwrap();
    for name in ["m3", "m5"] {
        let o = Command::new(env!("CARGO_BIN_EXE_pare"))
            .args(["--quiet", "--json", "eval", "--model"])
            .arg(out.join(name))
            .args([
                "--base",
                model,
                "--text",
                valid,
                "--seq-len",
                "64",
                "--max-windows",
                "4",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: Report = serde_json::from_slice(&o.stdout).unwrap();
        let kld = r.quality.and_then(|q| q.kld).map(|k| k.mean_kld.value);
        assert_eq!(row(&cmp, name).kld_mean, kld, "{name}");
    }
}
