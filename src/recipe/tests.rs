//! Tests of recipe parsing (stage 1), resolution (stage 2) and the shipped recipes.

use std::path::{Path, PathBuf};

use super::*;
use crate::arch::LinearSlot;
use crate::compress::{Method, NofM, QuantScheme, gptq, sparsegpt, wanda};

/// Linears shaped like stories260k: 5 blocks, hidden 64, 4 KV heads of 8, intermediate 172.
fn stories260k() -> Vec<LinearSlot> {
    let mut v = Vec::new();
    for b in 0..5 {
        for (role, key, rows, cols) in [
            ("attn.q", "self_attn.q_proj", 64, 64),
            ("attn.k", "self_attn.k_proj", 32, 64),
            ("attn.v", "self_attn.v_proj", 32, 64),
            ("attn.o", "self_attn.o_proj", 64, 64),
            ("mlp.gate", "mlp.gate_proj", 172, 64),
            ("mlp.up", "mlp.up_proj", 172, 64),
            ("mlp.down", "mlp.down_proj", 64, 172),
        ] {
            v.push(LinearSlot {
                id: format!("blocks.{b}.{role}").parse().unwrap(),
                key: format!("model.layers.{b}.{key}"),
                rows,
                cols,
            });
        }
    }
    v
}

pub(super) const CAL: &str = "calibration: { text: cal.txt, samples: 8, seq_len: 32, seed: 3 }\n";

pub(super) fn path() -> &'static Path {
    Path::new("/r/recipes/test.yaml")
}

pub(super) fn parse(text: &str) -> Result<Recipe> {
    parse_recipe(text, path())
}

pub(super) fn plan(text: &str) -> Result<Plan> {
    resolve(parse(text)?, path(), &stories260k())
}

/// Unwraps a recipe error into (key, message).
pub(super) fn recipe_err<T: std::fmt::Debug>(r: Result<T>) -> (String, String) {
    match r {
        Err(PareError::Recipe {
            key,
            message,
            path: p,
        }) => {
            assert_eq!(p, path());
            (key, message)
        }
        other => panic!("expected a recipe error, got {other:?}"),
    }
}

use crate::error::{PareError, Result};

#[test]
fn parses_full_recipe() {
    let text = format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5, pattern: \"2:4\", targets: [\"blocks.*.attn.*\"], ignore: [] }}\n  - magnitude:\n      sparsity: 0.3\n  - gptq: {{ format: int4-ch-sym, actorder: none }}\npropagate: original\nexport: {{ format: dense, max_shard_size: 2GiB }}\neval: {{ text: /abs/valid.txt, tasks: [t/a.jsonl] }}\n"
    );
    let r = parse(&text).unwrap();
    assert_eq!(r.calibration.text.as_deref(), Some("cal.txt"));
    assert_eq!(r.steps.len(), 3);
    assert_eq!(
        r.steps[0],
        Step::Wanda(wanda::Spec {
            sparsity: Some(0.5),
            pattern: Some("2:4".into()),
            profile: None,
            targets: Some(vec!["blocks.*.attn.*".into()]),
            ignore: Some(vec![]),
        })
    );
    assert_eq!(r.steps[1].name(), "magnitude");
    assert_eq!(r.propagate, Some(PropagateSpec::Original));
    // Round trip through YAML is exact.
    let again = parse(&to_yaml(&r).unwrap()).unwrap();
    assert_eq!(again, r);
}

#[test]
fn resolves_defaults_and_paths() {
    let text = format!(
        "{CAL}steps:\n  - sparsegpt: {{ sparsity: 0.5 }}\n  - gptq: {{ format: int8-ch-sym }}\neval: {{ text: ../v.txt, tasks: [t.jsonl, /x/y.jsonl] }}\n"
    );
    let p = plan(&text).unwrap();
    assert_eq!(
        p.calibration,
        CalibrationPlan {
            source: CalibSource::Text(PathBuf::from("/r/recipes/cal.txt")),
            samples: 8,
            seq_len: 32,
            seed: 3,
            experts: ExpertCalibration::Auto
        }
    );
    assert_eq!(
        p.recipe.calibration.text.as_deref(),
        Some("cal.txt"),
        "written form kept"
    );
    assert_eq!(
        p.steps[0].method,
        Method::SparseGpt(sparsegpt::Params {
            sparsity: 0.5,
            pattern: None,
            owl: None,
            block_size: 128,
            dampening: 0.01
        })
    );
    assert_eq!(p.steps[0].key, "steps[0].sparsegpt");
    assert_eq!(
        p.steps[1].method,
        Method::Gptq(gptq::Params {
            scheme: QuantScheme {
                bits: 8,
                group_size: None,
                symmetric: true
            },
            block_size: 128,
            dampening: 0.01,
            actorder: true
        })
    );
    // Default targets: every linear, in model order.
    assert_eq!(p.steps[0].targets.len(), 35);
    assert_eq!(
        p.steps[0].targets[..2]
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>(),
        ["blocks.0.attn.q", "blocks.0.attn.k"]
    );
    assert_eq!(p.propagate, Propagate::Compressed);
    assert_eq!(
        p.export,
        ExportPlan {
            format: ExportFormat::PackQuantized,
            max_shard_bytes: 5_000_000_000,
            gguf: None,
        }
    );
    let e = p.eval.unwrap();
    assert_eq!(e.text, PathBuf::from("/r/recipes/../v.txt"));
    assert_eq!(
        e.tasks,
        vec![
            PathBuf::from("/r/recipes/t.jsonl"),
            PathBuf::from("/x/y.jsonl")
        ]
    );
    assert_eq!((e.seq_len, e.max_windows, e.kld), (256, None, true));
}

#[test]
fn plan_serialises_to_json() {
    let p = plan(&format!(
        "{CAL}steps:\n  - wanda: {{ pattern: \"2:4\" }}\n  - rtn: {{ format: int4-ch-asym }}\n"
    ))
    .unwrap();
    let j = serde_json::to_value(&p).unwrap();
    assert_eq!(j["steps"][0]["method"]["method"], "wanda");
    assert_eq!(j["steps"][0]["method"]["pattern"], "2:4");
    assert_eq!(j["steps"][1]["method"]["scheme"]["format"], "int4-ch-asym");
    assert_eq!(j["export"]["format"], "pack-quantized");
    assert_eq!(j["calibration"]["source"]["text"], "/r/recipes/cal.txt");
}

#[test]
fn nm_sparsity_is_implied_and_checked() {
    let p = plan(&format!(
        "{CAL}steps:\n  - wanda: {{ pattern: \"2:4\", sparsity: 0.5 }}\n"
    ))
    .unwrap();
    assert_eq!(
        p.steps[0].method,
        Method::Wanda(wanda::Params {
            sparsity: 0.5,
            pattern: Some(NofM { n: 2, m: 4 }),
            owl: None,
        })
    );
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ pattern: \"2:4\", sparsity: 0.6 }}\n"
    )));
    assert_eq!(k, "steps[0].wanda.sparsity");
    assert!(m.contains("keeps 2 of every 4") && m.contains("0.6"), "{m}");
}

// ---- stage 1 errors ---------------------------------------------------------------------------

#[test]
fn unknown_key_suggests_nearest() {
    let (k, m) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\n  - magnitude:\n      sparsty: 0.3\n"
    )));
    assert_eq!(k, "steps[1].magnitude.sparsty");
    assert!(
        m.contains("unknown key `sparsty`; did you mean `sparsity`?"),
        "{m}"
    );
    assert!(m.contains("(line 5, column 7)"), "{m}");

    let (k, m) = recipe_err(parse(&format!("{CAL}steps: []\npropagat: original\n")));
    assert_eq!(k, "propagat");
    assert!(m.contains("did you mean `propagate`?"), "{m}");

    let (k, m) = recipe_err(parse("calibration: { txt: a.txt }\nsteps: []\n"));
    assert_eq!(k, "calibration.txt");
    assert!(m.contains("did you mean `text`?"), "{m}");
}

#[test]
fn unknown_method_suggests_nearest() {
    let (k, m) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\n  - sparsgpt: {{ sparsity: 0.5 }}\n"
    )));
    assert_eq!(k, "steps[1].sparsgpt");
    assert!(
        m.contains("unknown method `sparsgpt`; did you mean `sparsegpt`?"),
        "{m}"
    );
    assert!(m.contains("line 4"), "{m}");
}

#[test]
fn type_errors_name_the_leaf_key() {
    let (k, m) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - wanda:\n      sparsity: high\n"
    )));
    assert_eq!(k, "steps[0].wanda.sparsity");
    assert!(m.contains("not a number") && m.contains("line 4"), "{m}");

    let (k, _) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5, targets: {{ a: 1 }} }}\n"
    )));
    assert_eq!(k, "steps[0].wanda.targets");

    let (k, m) = recipe_err(parse(
        "calibration: { text: a.txt, samples: -1 }\nsteps: []\n",
    ));
    assert_eq!(k, "calibration.samples");
    assert!(m.contains("whole number"), "{m}");

    let (k, m) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - magnitude: {{ sparsity: 0.5, sparsity: 0.3 }}\n"
    )));
    assert_eq!(k, "steps[0].magnitude.sparsity");
    assert!(m.contains("given twice"), "{m}");
}

#[test]
fn bad_enum_values_suggest() {
    let (k, m) = recipe_err(parse(&format!("{CAL}steps: []\npropagate: orignal\n")));
    assert_eq!(k, "propagate");
    assert!(m.contains("did you mean `original`?"), "{m}");
    let (k, m) = recipe_err(parse(&format!(
        "{CAL}steps: []\nexport: {{ format: sparse-bitmsk }}\n"
    )));
    assert_eq!(k, "export.format");
    assert!(m.contains("did you mean `sparse-bitmask`?"), "{m}");
}

#[test]
fn malformed_steps() {
    let (k, m) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\n    rtn: {{ format: int8-ch-sym }}\n"
    )));
    assert_eq!(k, "steps[0]");
    assert!(m.contains("exactly one method"), "{m}");
    let (k, m) = recipe_err(parse(&format!("{CAL}steps:\n  - wanda\n")));
    assert_eq!(k, "steps[0]");
    assert!(m.contains("`- wanda: { … }`"), "{m}");
    let (k, _) = recipe_err(parse(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5\n"
    )));
    assert!(k.starts_with("steps"), "{k}");
}

#[test]
fn missing_calibration_source() {
    let (k, m) = recipe_err(parse("calibration: { samples: 8 }\nsteps: []\n"));
    assert_eq!(k, "calibration");
    assert!(m.contains("no calibration source"), "{m}");
    let (k, _) = recipe_err(parse("calibration: { text: a, ids: b }\nsteps: []\n"));
    assert_eq!(k, "calibration");
    // No calibration block: fine for data-free steps, an error naming the step otherwise.
    let p = plan("steps:\n  - rtn: { format: int8-ch-sym }\n  - magnitude: { sparsity: 0.5 }\n")
        .unwrap();
    assert_eq!(p.calibration.source, CalibSource::None);
    let (k, m) = recipe_err(plan(
        "steps:\n  - rtn: { format: int8-ch-sym }\n  - wanda: { sparsity: 0.5 }\n",
    ));
    assert_eq!(k, "calibration");
    assert!(m.contains("`steps[1].wanda` needs calibration data"), "{m}");
    let owl = "steps:\n  - magnitude: { sparsity: 0.5, profile: { owl: {} } }\n";
    let (k, m) = recipe_err(plan(owl));
    assert_eq!(k, "calibration");
    assert!(m.contains("steps[0].magnitude"), "{m}");
}

// ---- stage 2 errors ---------------------------------------------------------------------------

#[test]
fn pattern_matching_nothing() {
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5, targets: [\"blocks.*.mlp.*\", \"blocks.*.mlp.dwn\"] }}\n"
    )));
    assert_eq!(k, "steps[0].wanda.targets[1]");
    assert!(
        m.contains("`blocks.*.mlp.dwn` matches no linear; did you mean `blocks.*.mlp.down`?"),
        "{m}"
    );
    let (k, _) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - rtn: {{ format: int8-ch-sym, ignore: [\"blocks.7.*\"] }}\n"
    )));
    assert_eq!(k, "steps[0].rtn.ignore[0]");
}

#[test]
fn sparsity_outside_range() {
    for s in ["1.0", "1.5", "-0.1"] {
        let (k, m) = recipe_err(plan(&format!(
            "{CAL}steps:\n  - magnitude: {{ sparsity: {s} }}\n"
        )));
        assert_eq!(k, "steps[0].magnitude.sparsity");
        assert!(m.contains("outside [0, 1)"), "{m}");
    }
    assert!(
        plan(&format!(
            "{CAL}steps:\n  - magnitude: {{ sparsity: 0.0 }}\n"
        ))
        .is_ok()
    );
    let (k, m) = recipe_err(plan(&format!("{CAL}steps:\n  - wanda: {{ }}\n")));
    assert_eq!(k, "steps[0].wanda.sparsity");
    assert!(m.contains("required for unstructured"), "{m}");
}

#[test]
fn n_not_below_m() {
    for p in ["4:4", "5:4", "0:4"] {
        let (k, m) = recipe_err(plan(&format!(
            "{CAL}steps:\n  - wanda: {{ pattern: \"{p}\" }}\n"
        )));
        assert_eq!(k, "steps[0].wanda.pattern");
        assert!(m.contains("1 ≤ N < M"), "{m}");
    }
    let (_, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ pattern: unstructurd, sparsity: 0.5 }}\n"
    )));
    assert!(m.contains("did you mean `unstructured`?"), "{m}");
}

#[test]
fn m_not_dividing_d_in_leaves_a_tail_group() {
    // stories260k's down_proj has d_in 172 = 21 groups of 8 + 4: 4:8 resolves (the tail group
    // keeps its share, and the layer is flagged), and compressed-tensors then picks the generic
    // bitmask.
    let p = plan(&format!(
        "{CAL}steps:\n  - sparsegpt: {{ pattern: \"4:8\" }}\n"
    ))
    .unwrap();
    assert_eq!(p.steps[0].targets.len(), 35);
    assert_eq!(p.steps[0].pattern(), Some(NofM { n: 4, m: 8 }));
    let (k, _) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - sparsegpt: {{ pattern: \"2:4\", block_size: 6 }}\n"
    )));
    assert_eq!(k, "steps[0].sparsegpt.block_size");
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ pattern: \"2:128\" }}\n"
    )));
    assert_eq!(k, "steps[0].wanda.pattern");
    assert!(m.contains("at most 64"), "{m}");
}

#[test]
fn sparse_24_export_refuses_a_layer_with_a_tail_group() {
    // A down projection with d_in 170 (not a multiple of 4) cannot be exactly 2:4.
    let mut linears = stories260k();
    for l in linears
        .iter_mut()
        .filter(|l| l.id.to_string().ends_with("mlp.down"))
    {
        l.cols = 170;
    }
    let text = format!(
        "{CAL}steps:\n  - wanda: {{ pattern: \"2:4\" }}\nexport: {{ format: sparse-24-bitmask }}\n"
    );
    let (k, m) = recipe_err(resolve(parse(&text).unwrap(), path(), &linears));
    assert_eq!(k, "export.format");
    assert!(
        m.contains("`blocks.0.mlp.down`") && m.contains("multiple of 4"),
        "{m}"
    );
    // With stories260k's own shapes (d_in 64 and 172, multiples of 4) it is accepted.
    assert_eq!(
        plan(&text).unwrap().export.format,
        ExportFormat::Sparse24Bitmask
    );
}

#[test]
fn group_not_dividing_d_in() {
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - rtn: {{ format: int4-g32-sym }}\n"
    )));
    assert_eq!(k, "steps[0].rtn.format");
    assert!(
        m.contains("`blocks.0.mlp.down` has d_in = 172, not a multiple of 32"),
        "{m}"
    );
    let (_, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - gptq: {{ format: int4-g128-sym }}\n"
    )));
    assert!(m.contains("`blocks.0.attn.q` has d_in = 64"), "{m}");
    assert!(
        plan(&format!(
            "{CAL}steps:\n  - rtn: {{ format: int4-g32-sym, ignore: [\"*.down\"] }}\n"
        ))
        .is_ok()
    );
}

#[test]
fn bad_format_name() {
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - rtn: {{ format: int4-g128-symm }}\n"
    )));
    assert_eq!(k, "steps[0].rtn.format");
    assert!(
        m.contains("unknown format `int4-g128-symm`; did you mean `int4-g128-sym`?"),
        "{m}"
    );
    let (_, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - gptq: {{ format: \"2:4\" }}\n"
    )));
    assert!(m.contains("sparsity pattern"), "{m}");
    let (k, _) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - gptq: {{ block_size: 64 }}\n"
    )));
    assert_eq!(k, "steps[0].gptq.format");
    let (k, _) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - finequant: {{ bits: 5 }}\n"
    )));
    assert_eq!(k, "steps[0].finequant.bits");
}

#[test]
fn bad_max_shard_size() {
    let (k, m) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - rtn: {{ format: int8-ch-sym }}\nexport: {{ max_shard_size: 5 gigs }}\n"
    )));
    assert_eq!(k, "export.max_shard_size");
    assert!(m.contains("cannot read `5 gigs` as a size"), "{m}");
    assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
    assert_eq!(parse_size("500 MB"), Ok(500_000_000));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("1.5kb"), Ok(1500));
    assert_eq!(parse_size("1234B"), Ok(1234));
    // A bare number is ambiguous (200 bytes would write one shard per tensor): refused.
    let e = parse_size("200").unwrap_err();
    assert!(e.contains("no unit") && e.contains("200MB"), "{e}");
    assert!(parse_size("0GB").is_err());
    assert!(parse_size("GB").is_err());
}

#[test]
fn other_ranges() {
    let cases = [
        (
            "calibration: { text: a, samples: 0 }\nsteps: [{ magnitude: { sparsity: 0.5 } }]\n",
            "calibration.samples",
        ),
        (
            "calibration: { text: a, seq_len: 1 }\nsteps: [{ magnitude: { sparsity: 0.5 } }]\n",
            "calibration.seq_len",
        ),
        ("calibration: { text: a }\nsteps: []\n", "steps"),
        (
            "calibration: { text: a }\nsteps: [{ sparsegpt: { sparsity: 0.5, block_size: 0 } }]\n",
            "steps[0].sparsegpt.block_size",
        ),
        (
            "calibration: { text: a }\nsteps: [{ gptq: { format: int8-ch-sym, dampening: -1 } }]\n",
            "steps[0].gptq.dampening",
        ),
        (
            "calibration: { text: a }\nsteps: [{ finequant: { bits: 4, min_group: 64, max_group: 32 } }]\n",
            "steps[0].finequant.max_group",
        ),
        (
            "calibration: { text: a }\nsteps: [{ finequant: { bits: 4, max_group: 128 } }]\n",
            "steps[0].finequant.max_group",
        ),
        (
            "calibration: { text: a }\nsteps: [{ rtn: { format: int8-ch-sym } }]\neval: { text: v, max_windows: 0 }\n",
            "eval.max_windows",
        ),
        (
            "calibration: { text: a }\nsteps: [{ rtn: { format: int8-ch-sym } }]\neval: { text: v, seq_len: 1 }\n",
            "eval.seq_len",
        ),
        (
            "calibration: { text: a }\nsteps: [{ wanda: { sparsity: 0.5, targets: [blocks.0.attn.q], ignore: [blocks.0.attn.q] } }]\n",
            "steps[0].wanda",
        ),
    ];
    for (text, key) in cases {
        let (k, m) = recipe_err(plan(text));
        assert_eq!(k, key, "{text}: {m}");
    }
}

#[test]
fn export_format_choice_and_validity() {
    let fmt = |steps: &str, export: &str| {
        plan(&format!("{CAL}steps:\n{steps}{export}")).map(|p| p.export.format)
    };
    let w24 = "  - wanda: { pattern: \"2:4\" }\n";
    let w50 = "  - wanda: { sparsity: 0.5 }\n";
    let rtn = "  - rtn: { format: int8-ch-sym }\n";
    // Sparse-only recipes are written dense unless a legacy layout is named (llm-compressor 0.14
    // does the same; compressed-tensors ≥ 0.15 cannot read its sparse layouts).
    assert_eq!(fmt(w24, "").unwrap(), ExportFormat::Dense);
    assert_eq!(fmt(w50, "").unwrap(), ExportFormat::Dense);
    assert_eq!(
        fmt(w24, "export: { format: compressed-tensors }\n").unwrap(),
        ExportFormat::Dense
    );
    assert_eq!(
        fmt(w24, "export: { format: sparse-24-bitmask }\n").unwrap(),
        ExportFormat::Sparse24Bitmask
    );
    let legacy = plan(&format!(
        "{CAL}steps:\n{w50}export: {{ format: sparse-bitmask }}\n"
    ))
    .unwrap();
    assert!(
        legacy.notes[0].contains("`sparse-bitmask` is legacy"),
        "{:?}",
        legacy.notes
    );
    assert!(
        plan(&format!("{CAL}steps:\n{w50}"))
            .unwrap()
            .notes
            .is_empty()
    );
    assert_eq!(
        fmt(&format!("{w24}{rtn}"), "").unwrap(),
        ExportFormat::PackQuantized
    );
    assert_eq!(
        fmt(w50, "export: { format: dense }\n").unwrap(),
        ExportFormat::Dense
    );
    // 2:4 on attention only, then unstructured on everything: not every target is 2:4.
    let partial = "  - wanda: { pattern: \"2:4\", targets: [\"blocks.*.attn.*\"] }\n  - magnitude: { sparsity: 0.1 }\n";
    assert_eq!(
        fmt(partial, "export: { format: sparse-bitmask }\n").unwrap(),
        ExportFormat::SparseBitmask
    );
    let (k, m) = recipe_err(fmt(partial, "export: { format: sparse-24-bitmask }\n"));
    assert_eq!(k, "export.format");
    assert!(m.contains("`blocks.0.mlp.gate` is not"), "{m}");
    let (_, m) = recipe_err(fmt(w50, "export: { format: pack-quantized }\n"));
    assert!(m.contains("needs a quantisation step"), "{m}");
    let (_, m) = recipe_err(fmt(rtn, "export: { format: sparse-bitmask }\n"));
    assert!(m.contains("pack-quantized"), "{m}");
}

#[test]
fn ids_calibration_reads_shape_from_file() {
    let dir = tempfile::tempdir().unwrap();
    let header = br#"{"input_ids":{"dtype":"I64","shape":[4,16],"data_offsets":[0,512]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend(std::iter::repeat_n(0u8, 512));
    std::fs::write(dir.path().join("ids.safetensors"), bytes).unwrap();
    let rpath = dir.path().join("r.yaml");
    let go = |cal: &str| {
        let text = format!("calibration: {cal}\nsteps: [{{ magnitude: {{ sparsity: 0.5 }} }}]\n");
        resolve(parse_recipe(&text, &rpath)?, &rpath, &stories260k()).map(|p| p.calibration)
    };
    let c = go("{ ids: ids.safetensors }").unwrap();
    assert_eq!((c.samples, c.seq_len), (4, 16));
    assert_eq!(
        c.source,
        CalibSource::Ids(dir.path().join("ids.safetensors"))
    );
    let c = go("{ ids: ids.safetensors, samples: 2, seq_len: 8 }").unwrap();
    assert_eq!((c.samples, c.seq_len), (2, 8));
    assert!(matches!(
        go("{ ids: ids.safetensors, samples: 5 }"),
        Err(PareError::Recipe { .. })
    ));
    assert!(matches!(
        go("{ ids: missing.safetensors }"),
        Err(PareError::Input { .. })
    ));
}

#[test]
fn key_before_finds_the_key() {
    assert_eq!(
        key_before("a:\n      sparsity: high\n", 2, 17).as_deref(),
        Some("sparsity")
    );
    assert_eq!(
        key_before("x: { a: 1, max_shard_size: 5 gigs }", 1, 28).as_deref(),
        Some("max_shard_size")
    );
    assert_eq!(key_before("  - wandda: {}", 1, 5), None);
    assert_eq!(
        key_path(&["steps".into(), "[1]".into(), "wanda".into()]),
        "steps[1].wanda"
    );
}

// ---- shipped recipes ---------------------------------------------------------------------------

#[test]
fn shipped_recipes_parse_and_resolve_for_stories260k() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/recipes"));
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    for file in &names {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with('#'),
            "{} must open with a comment saying what it does",
            file.display()
        );
        let recipe = load_recipe(file).unwrap_or_else(|e| panic!("{e}"));
        let p = resolve(recipe, file, &stories260k()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.calibration.samples, 128);
        assert_eq!(p.calibration.seq_len, 256);
        assert_eq!(
            p.calibration.source,
            CalibSource::Text(dir.join("../calibration/tinystories-train-head.txt"))
        );
        let e = p.eval.as_ref().unwrap();
        assert_eq!((e.seq_len, e.max_windows, e.kld), (256, Some(50), true));
        // The GGUF recipe leaves down_proj (d_in 172, no group of 32) out.
        let targets = if p.export.gguf.is_some() { 30 } else { 35 };
        assert!(
            p.steps.iter().all(|s| s.targets.len() == targets),
            "{}: every linear targeted",
            file.display()
        );
        // The applied recipe written next to the output parses back to the same recipe.
        assert_eq!(
            parse_recipe(&to_yaml(&p.recipe).unwrap(), file).unwrap(),
            p.recipe
        );
    }
    let by = |n: &str| {
        resolve(
            load_recipe(&dir.join(n)).unwrap(),
            &dir.join(n),
            &stories260k(),
        )
        .unwrap()
    };
    let gguf = by("gptq-q4_0-gguf.yaml");
    assert_eq!(gguf.export.format, ExportFormat::PackQuantized);
    assert_eq!(gguf.export.gguf, Some(crate::gguf::GgmlType::Q4_0));
    let comp = by("sparsegpt-2of4-gptq-int4.yaml");
    assert_eq!(
        comp.steps
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["sparsegpt", "gptq"]
    );
    assert_eq!(comp.export.format, ExportFormat::PackQuantized);
    // Every shipped sparse-only recipe writes what transformers loads today.
    for name in [
        "magnitude-50.yaml",
        "wanda-50.yaml",
        "wanda-2of4.yaml",
        "sparsegpt-50.yaml",
        "sparsegpt-2of4.yaml",
    ] {
        assert_eq!(by(name).export.format, ExportFormat::Dense, "{name}");
    }
}

#[test]
fn sequential_defaults_follow_the_measured_table() {
    // benches/sequential_modes.sh measured both orderings; each family's default must be the
    // ordering that wins most of that family's runs (stories260k by perplexity, tiny-llama by
    // mean KLD), a tie going to stories260k, the trained model that ranks methods.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/sequential-modes.json");
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut wins = std::collections::BTreeMap::<(bool, &str), usize>::new();
    let mut stories = std::collections::BTreeMap::<(bool, &str), usize>::new();
    for (name, model) in table["models"].as_object().unwrap() {
        let metric = model["metric"].as_str().unwrap();
        for (run, m) in model["runs"].as_object().unwrap() {
            let (b, l) = (
                m["block"][metric].as_f64().unwrap(),
                m["linear"][metric].as_f64().unwrap(),
            );
            if b == l {
                continue; // data-free: the ordering cannot matter
            }
            let quant = run.starts_with("gptq");
            let mode = if b < l { "block" } else { "linear" };
            *wins.entry((quant, mode)).or_default() += 1;
            if name == "stories260k" {
                *stories.entry((quant, mode)).or_default() += 1;
            }
        }
    }
    assert_eq!(
        table["models"].as_object().unwrap().len(),
        2,
        "both models measured"
    );
    let count = |m: &std::collections::BTreeMap<(bool, &str), usize>, q: bool, mode: &str| {
        m.get(&(q, mode)).copied().unwrap_or(0)
    };
    let winner = |quant: bool| {
        let (mut b, mut l) = (count(&wins, quant, "block"), count(&wins, quant, "linear"));
        if b == l {
            (b, l) = (
                count(&stories, quant, "block"),
                count(&stories, quant, "linear"),
            );
        }
        if b >= l {
            Sequential::Block
        } else {
            Sequential::Linear
        }
    };
    let prune = plan(&format!("{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\n")).unwrap();
    let quant = plan(&format!(
        "{CAL}steps:\n  - gptq: {{ format: int4-ch-sym }}\n"
    ))
    .unwrap();
    assert_eq!(prune.sequential, winner(false), "{wins:?}");
    assert_eq!(quant.sequential, winner(true), "{wins:?}");
    // An explicit key wins over the default.
    let p = plan(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\nsequential: linear\n"
    ))
    .unwrap();
    assert_eq!(p.sequential, Sequential::Linear);
    let (k, _) = recipe_err(plan(&format!(
        "{CAL}steps:\n  - wanda: {{ sparsity: 0.5 }}\nsequential: linear\npropagate: original\n"
    )));
    assert_eq!(k, "sequential");
}
