//! llm-compressor recipes accepted as written: the recipes behind
//! ../shared/models/stories260k/reference.json and ALGORITHMS.md §12.2 translate into the native
//! pare recipes (tests/parity/) step for step, give the same checkpoint, and what pare cannot
//! express is refused naming the modifier and the field.

mod common;

use std::path::{Path, PathBuf};

use common::{compress, model_dir, shared, text};
use pare::pipeline::ModelRunner;
use pare::recipe::{CalibSource, Plan, parse_recipe, resolve};

/// The reference's recipes as llm-compressor modifiers, with the native recipe each matches.
const RECIPES: [(&str, &str); 6] = [
    (
        "wanda-50",
        "prune_stage:\n  sparsity_modifiers:\n    WandaPruningModifier: { sparsity: 0.5, mask_structure: \"0:0\", targets: [Linear], ignore: [\"re:.*lm_head\"] }\n",
    ),
    (
        "sparsegpt-50",
        "prune_stage:\n  sparsity_modifiers:\n    SparseGPTModifier: { sparsity: 0.5, mask_structure: \"0:0\", block_size: 128, dampening_frac: 0.01, targets: [Linear], ignore: [\"re:.*lm_head\"] }\n",
    ),
    (
        "wanda-2of4",
        "prune_stage:\n  sparsity_modifiers:\n    WandaPruningModifier: { sparsity: 0.5, mask_structure: \"2:4\", targets: [Linear], ignore: [\"re:.*lm_head\"] }\n",
    ),
    (
        "sparsegpt-2of4",
        "prune_stage:\n  sparsity_modifiers:\n    SparseGPTModifier: { sparsity: 0.5, mask_structure: \"2:4\", targets: [Linear], ignore: [\"re:.*lm_head\"] }\n",
    ),
    (
        "rtn-int4",
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: [lm_head]\n      config_groups:\n        group_0: { targets: [Linear], weights: { num_bits: 4, type: int, symmetric: true, strategy: channel } }\n",
    ),
    (
        "gptq-int4",
        "quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      ignore: [lm_head]\n      block_size: 128\n      dampening_frac: 0.01\n      actorder: static\n      config_groups:\n        group_0: { targets: [Linear], weights: { num_bits: 4, type: int, symmetric: true, strategy: channel } }\n",
    ),
];

fn parity(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/parity/{name}.yaml"))
}

/// The native parity recipe's pare keys (calibration, propagate, export, eval) with its relative
/// paths made absolute, then `stages`: an llm-compressor recipe run on the same data.
fn llmc_recipe(dir: &Path, name: &str, stages: &str) -> PathBuf {
    let native = std::fs::read_to_string(parity(name)).expect("parity recipe");
    let shared = format!("{}/", shared("").display());
    let keys: String = native
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("steps:") && !l.starts_with("  - "))
        .map(|l| l.replace("../../../shared/", &shared) + "\n")
        .collect();
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, format!("# llm-compressor layout\n{keys}{stages}")).expect("write");
    p
}

fn plan(runner: &ModelRunner, path: &Path) -> Plan {
    let text = std::fs::read_to_string(path).expect("recipe");
    let recipe = parse_recipe(&text, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    resolve(recipe, path, &runner.arch.all_linears())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each reference recipe resolves to the native recipe's plan: the same methods with the same
/// parameters on the same linears, the same calibration, ordering, export and evaluation.
#[test]
fn reference_recipes_translate_to_the_native_ones() {
    let runner = ModelRunner::open(&model_dir("stories260k"), &common::cpu()).expect("open");
    let tmp = tempfile::tempdir().expect("tempdir");
    for (name, stages) in RECIPES {
        let native = plan(&runner, &parity(name));
        let llmc = plan(&runner, &llmc_recipe(tmp.path(), name, stages));
        assert_eq!(llmc.steps.len(), 1, "{name}");
        assert_eq!(llmc.steps[0].method, native.steps[0].method, "{name}");
        assert_eq!(llmc.steps[0].targets, native.steps[0].targets, "{name}");
        // The same files, spelt by different relative paths.
        let canon = |p: &Path| std::fs::canonicalize(p).expect("canonicalize");
        let (mut a, mut b) = (llmc.calibration.clone(), native.calibration.clone());
        for c in [&mut a, &mut b] {
            if let CalibSource::Ids(p) | CalibSource::Text(p) = &mut c.source {
                *p = canon(p);
            }
        }
        assert_eq!(a, b, "{name}");
        let (mut a, mut b) = (
            llmc.eval.clone().expect("eval"),
            native.eval.clone().expect("eval"),
        );
        a.text = canon(&a.text);
        b.text = canon(&b.text);
        assert_eq!(a, b, "{name}");
        assert_eq!(
            (llmc.propagate, llmc.sequential, &llmc.export),
            (native.propagate, native.sequential, &native.export),
            "{name}"
        );
    }
}

/// ALGORITHMS.md §12.2 (SparseGPT 2:4, then GPTQ W4A16 through `config_groups`) on tiny-mixtral,
/// whose widths take groups of 128: two steps in file order, and `--explain` prints them as
/// pare's recipe without writing anything.
#[test]
fn the_design_docs_recipe_imports_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cal = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration/tinystories-train-head.txt");
    let p = tmp.path().join("llmc.yaml");
    std::fs::write(
        &p,
        format!(
            "calibration: {{ text: {}, samples: 4, seq_len: 64 }}\n\
             prune_stage:\n  sparsity_modifiers:\n    SparseGPTModifier:\n      sparsity: 0.5\n      mask_structure: \"2:4\"\n      block_size: 128\n      dampening_frac: 0.01\n      targets: [\"Linear\"]\n      ignore: [\"re:.*lm_head\"]\n\
             quant_stage:\n  quant_modifiers:\n    GPTQModifier:\n      targets: [\"Linear\"]\n      ignore: [\"lm_head\"]\n      block_size: 128\n      dampening_frac: 0.01\n      actorder: static\n      config_groups:\n        group_0:\n          targets: [\"Linear\"]\n          weights: {{ num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 128 }}\n",
            cal.display()
        ),
    )
    .expect("write");
    let runner = ModelRunner::open(&model_dir("tiny-mixtral"), &common::cpu()).expect("open");
    let plan = plan(&runner, &p);
    let names: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["sparsegpt", "gptq"]);
    let j = serde_json::to_value(&plan.steps[0].method).expect("json");
    assert_eq!(j["pattern"], "2:4");
    let j = serde_json::to_value(&plan.steps[1].method).expect("json");
    assert_eq!(j["scheme"]["format"], "int4-g128-sym");
    let out = tmp.path().join("out");
    let o = common::pare(&[
        "compress",
        "--model",
        model_dir("tiny-mixtral").to_str().expect("utf-8"),
        "--recipe",
        p.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--explain",
    ]);
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{se}");
    assert!(
        so.contains("- sparsegpt:") && so.contains("pattern: \"2:4\""),
        "{so}"
    );
    assert!(
        so.contains("- gptq:") && so.contains("format: int4-g128-sym"),
        "{so}"
    );
    assert!(!out.exists(), "--explain wrote an output");
}

/// An imported recipe writes the same checkpoint and reports the same perplexity as the native
/// one (Wanda 50% on stories260k, a small calibration).
#[test]
fn an_imported_recipe_gives_the_native_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cal = Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration");
    let common = format!(
        "calibration: {{ text: {}, samples: 8, seq_len: 64 }}\neval: {{ text: {}, seq_len: 64, max_windows: 8, kld: true }}\n",
        cal.join("tinystories-train-head.txt").display(),
        cal.join("tinystories-valid-head.txt").display()
    );
    let native = tmp.path().join("native.yaml");
    std::fs::write(
        &native,
        format!("{common}steps:\n  - wanda: {{ sparsity: 0.5 }}\n"),
    )
    .expect("write");
    let llmc = tmp.path().join("llmc.yaml");
    std::fs::write(
        &llmc,
        format!("{common}oneshot_stage:\n  pruning_modifiers:\n    WandaPruningModifier: {{ sparsity: 0.5, ignore: [\"re:.*lm_head\"] }}\n"),
    )
    .expect("write");
    let mut got = Vec::new();
    for r in [&native, &llmc] {
        let out = tmp.path().join(r.file_stem().expect("stem"));
        let o = compress(&[], &model_dir("stories260k"), r, &out);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        let report: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("report.json")).expect("report"),
        )
        .expect("parse");
        got.push((
            std::fs::read(out.join("model.safetensors")).expect("output"),
            report["quality"]["perplexity"]["ppl"]
                .as_f64()
                .expect("ppl"),
        ));
    }
    assert!(got[0].0 == got[1].0, "checkpoints differ");
    assert_eq!(got[0].1, got[1].1);
}

/// What pare cannot express exits 2, naming the modifier and the field.
#[test]
fn what_pare_cannot_express_is_refused_naming_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (stages, needles)) in [
        (
            "s_stage:\n  m_modifiers:\n    SmoothQuantModifier: { smoothing_strength: 0.8 }\n",
            &["s_stage.m_modifiers.SmoothQuantModifier", "no pare equivalent"][..],
        ),
        (
            "q_stage:\n  q_modifiers:\n    AWQModifier: {}\n",
            &["AWQModifier"][..],
        ),
        (
            "q_stage:\n  q_modifiers:\n    QuantizationModifier:\n      config_groups:\n        g: { targets: [Linear], weights: { num_bits: 8 }, input_activations: { num_bits: 8 } }\n",
            &["QuantizationModifier.config_groups.g.input_activations", "activation quantisation"][..],
        ),
        (
            "q_stage:\n  q_modifiers:\n    GPTQModifier: { scheme: W4A8 }\n",
            &["GPTQModifier.scheme", "W4A8"][..],
        ),
        (
            "p_stage:\n  p_modifiers:\n    SparseGPTModifier: { sparsity: [0.5, 0.6] }\n",
            &["SparseGPTModifier.sparsity", "per-target"][..],
        ),
        (
            "p_stage:\n  p_modifiers:\n    WandaPruningModifier: { sparsity: 0.5, frobnicate: true }\n",
            &["WandaPruningModifier.frobnicate"][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("r{i}.yaml"));
        std::fs::write(&p, stages).expect("write");
        let out = tmp.path().join(format!("o{i}"));
        let o = compress(&[], &model_dir("stories260k"), &p, &out);
        let (_, se) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{stages}: {se}");
        for n in needles {
            assert!(se.contains(n), "{stages}: {se}");
        }
        assert!(!out.exists());
    }
}

/// A modifier with several `config_groups` becomes one step per group; a module two groups
/// target goes to the more specific target (module name, then `re:`, then `Linear`), as
/// compressed-tensors matches. The checkpoint equals the native two-step recipe's, and its
/// `quantization_config` has both groups.
#[test]
fn several_config_groups_become_one_step_each() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let llmc = tmp.path().join("groups.yaml");
    std::fs::write(
        &llmc,
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: [lm_head]\n      config_groups:\n        \
         group_0: { targets: [Linear], weights: { num_bits: 4, type: int, symmetric: true, strategy: group, group_size: 32 } }\n        \
         group_1: { targets: [\"re:.*mlp.down_proj\"], weights: { num_bits: 8, type: int, symmetric: true, strategy: channel } }\n\
         export: { format: pack-quantized }\n",
    )
    .expect("write");
    let native = tmp.path().join("native.yaml");
    std::fs::write(
        &native,
        "steps:\n  - rtn: { format: int4-g32-sym, ignore: [\"re:.*mlp.down_proj\"] }\n  - rtn: { format: int8-ch-sym, targets: [\"re:.*mlp.down_proj\"] }\nexport: { format: pack-quantized }\n",
    )
    .expect("write");
    let runner = ModelRunner::open(&model_dir("stories260k"), &common::cpu()).expect("open");
    let p = plan(&runner, &llmc);
    let steps: Vec<(String, usize)> = p
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.targets.len()))
        .collect();
    assert_eq!(steps, [("rtn".to_string(), 30), ("rtn".to_string(), 5)]);
    let mut got = Vec::new();
    for r in [&native, &llmc] {
        let out = tmp.path().join(r.file_stem().expect("stem"));
        let o = compress(&[], &model_dir("stories260k"), r, &out);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        got.push(std::fs::read(out.join("model.safetensors")).expect("output"));
        let cfg: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("config.json")).expect("config"),
        )
        .expect("json");
        let groups = cfg["quantization_config"]["config_groups"]
            .as_object()
            .expect("groups");
        assert_eq!(groups.len(), 2, "{groups:?}");
    }
    assert!(got[0] == got[1], "checkpoints differ");
}
