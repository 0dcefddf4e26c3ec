//! Recipe tests for the method registry and the MoE keys (`calibrate_all_experts`, `protect`,
//! `expert-prune`), resolved against a Mixtral-shaped model where they need experts.

use std::path::Path;

use super::tests::{CAL, parse, path, plan, recipe_err};
use super::*;

#[test]
fn every_registered_method_parses_and_resolves_by_its_name() {
    // The registry is the one list: each name parses to a step of that name and resolves; a
    // name outside it is an error (no silent fallback to another method).
    let params = |name: &str| match name {
        "rtn" | "gptq" => "{ format: int4-ch-sym }",
        "finequant" => "{ bits: 4 }",
        "expert-prune" => "{ fraction: 0.25 }",
        "mc-moe" => "{ budget_bits: 3, format: int4-ch-sym }",
        "dsnot" => "{}",
        "maskllm" => "{ pattern: \"2:4\" }",
        _ => "{ sparsity: 0.5 }",
    };
    // Mask refinements follow a pruning step; the step under test is the last one.
    let before = |name: &str| match name {
        "dsnot" => "  - wanda: { sparsity: 0.5 }\n",
        _ => "",
    };
    // A Mixtral-shaped model (2 blocks, 4 experts, top-1) for the MoE methods.
    let moe = crate::arch::Architecture::new(
        crate::config::HfConfig::parse(
            r#"{"architectures":["MixtralForCausalLM"],"vocab_size":10,"hidden_size":8,
            "intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,
            "num_local_experts":4,"num_experts_per_tok":1}"#,
            Path::new("config.json"),
        )
        .unwrap(),
    )
    .all_linears();
    for name in crate::compress::METHOD_NAMES {
        let text = format!(
            "{CAL}steps:\n{}  - {name}: {}\n",
            before(name),
            params(name)
        );
        let p = match *name {
            "expert-prune" | "mc-moe" => resolve(parse(&text).unwrap(), path(), &moe),
            _ => plan(&text),
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let last = p.steps.last().unwrap();
        assert_eq!(last.name, *name);
        assert_eq!(last.method.name(), *name);
        assert_eq!(parse(&text).unwrap().steps.last().unwrap().name(), *name);
        // The resolved method serialises under its own name.
        let j = serde_json::to_value(&last.method).unwrap();
        assert_eq!(j["method"], *name);
    }
    assert_eq!(crate::compress::METHOD_NAMES.len(), 11);
    let (k, m) = recipe_err(parse(&format!("{CAL}steps:\n  - quip: {{ bits: 2 }}\n")));
    assert_eq!(k, "steps[0].quip");
    assert!(m.contains("unknown method `quip`"), "{m}");
}

#[test]
fn expert_calibration_reads_true_false_and_auto() {
    let with = |v: &str| {
        format!(
            "calibration: {{ text: cal.txt, calibrate_all_experts: {v} }}\nsteps:\n  - wanda: {{ sparsity: 0.5 }}\n"
        )
    };
    for (v, want) in [
        ("true", ExpertCalibration::All),
        ("false", ExpertCalibration::Routed),
        ("auto", ExpertCalibration::Auto),
    ] {
        assert_eq!(plan(&with(v)).unwrap().calibration.experts, want, "{v}");
    }
    assert_eq!(
        plan(&format!("{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\n"))
            .unwrap()
            .calibration
            .experts,
        ExpertCalibration::Auto
    );
    let (k, m) = recipe_err(parse(&with("sometimes")));
    assert!(k.starts_with("calibration"), "{k}");
    assert!(m.contains("true, false or auto"), "{m}");
}

#[test]
fn protect_names_its_entry_and_needs_experts() {
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\nprotect: [super-experts]\n"
    )));
    assert_eq!(k, "protect[0]");
    assert!(m.contains("has none"), "{m}");
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\nprotect: [heroes]\n"
    )));
    assert_eq!(k, "protect[0]");
    assert!(m.contains("unknown protection `heroes`"), "{m}");
}
