//! llm-compressor's vocabulary in native recipes: preset scheme names, Hugging Face module
//! names and `re:` patterns in targets, and `--quiet` printing only the output path.

mod common;

use std::path::Path;

use common::{compress, text, write_recipe};

fn stories() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/stories260k")
}

fn bytes(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("model.safetensors")).expect("output")
}

/// `W8A16` is `int8-ch-sym`: the same checkpoint byte for byte.
#[test]
fn preset_scheme_names_are_format_aliases() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut outs = Vec::new();
    for (name, format) in [("preset", "W8A16"), ("table", "int8-ch-sym")] {
        let r = write_recipe(
            tmp.path(),
            name,
            2,
            32,
            &format!("rtn: {{ format: {format} }}"),
            "pack-quantized",
        );
        let out = tmp.path().join(name);
        let o = compress(&[], &stories(), &r, &out);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o).1);
        outs.push(bytes(&out));
    }
    assert!(outs[0] == outs[1]);
}

/// Targets written as module names or `re:` patterns select what the canonical globs select:
/// the same checkpoint byte for byte.
#[test]
fn module_names_and_regex_targets_select_canonical_linears() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut outs = Vec::new();
    for (name, targets) in [
        ("canonical", r#"["blocks.*.mlp.down", "blocks.1.attn.q"]"#),
        (
            "regex",
            r#"["re:.*mlp.down_proj$", "model.layers.1.self_attn.q_proj"]"#,
        ),
        (
            "weight",
            r#"["re:model.layers.[0-9].mlp.down_proj", "model.layers.1.self_attn.q_proj.weight"]"#,
        ),
    ] {
        let r = write_recipe(
            tmp.path(),
            name,
            2,
            32,
            &format!("magnitude: {{ sparsity: 0.5, targets: {targets} }}"),
            "dense",
        );
        let out = tmp.path().join(name);
        let o = compress(&[], &stories(), &r, &out);
        let (_, se) = text(&o);
        if name == "weight" {
            // `[0-9]` is outside the regex subset: matched literally, it matches nothing, and
            // that is an error naming the key, not a silent miss.
            assert_eq!(o.status.code(), Some(2), "{se}");
            assert!(se.contains("steps[0].magnitude.targets[0]"), "{se}");
            continue;
        }
        assert_eq!(o.status.code(), Some(0), "{se}");
        outs.push(bytes(&out));
    }
    assert!(outs[0] == outs[1]);
}

/// `--quiet compress` prints the output path and nothing else; warnings are silenced too.
#[test]
fn quiet_prints_only_the_output_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // 4:8 on stories260k's down_proj (d_in 172) warns about the tail group without --quiet.
    let r = write_recipe(
        tmp.path(),
        "r",
        2,
        32,
        r#"magnitude: { pattern: "4:8" }"#,
        "dense",
    );
    let out = tmp.path().join("out");
    let loud = compress(&[], &stories(), &r, &out);
    assert!(text(&loud).1.contains("warning"), "{}", text(&loud).1);
    let o = compress(&["--quiet"], &stories(), &r, &out.with_file_name("quiet"));
    let (so, se) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{se}");
    assert_eq!(so, format!("{}\n", out.with_file_name("quiet").display()));
    assert_eq!(se, "");
}

/// A data-free recipe needs no `calibration:` block, and writes what it writes with one; a step
/// that needs data without one is refused naming it.
#[test]
fn data_free_recipes_need_no_calibration() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let with = write_recipe(
        tmp.path(),
        "with",
        2,
        32,
        "rtn: { format: int4-ch-sym }",
        "pack-quantized",
    );
    let without = tmp.path().join("without.yaml");
    std::fs::write(
        &without,
        "steps:\n  - rtn: { format: int4-ch-sym }\n  - magnitude: { sparsity: 0.5 }\nexport: { format: pack-quantized }\n",
    )
    .expect("recipe");
    let both = tmp.path().join("both.yaml");
    let y = std::fs::read_to_string(&with).expect("recipe").replace(
        "  - rtn: { format: int4-ch-sym }\n",
        "  - rtn: { format: int4-ch-sym }\n  - magnitude: { sparsity: 0.5 }\n",
    );
    std::fs::write(&both, y).expect("recipe");
    let mut outs = Vec::new();
    for (name, r) in [("both", &both), ("without", &without)] {
        let out = tmp.path().join(name);
        let o = compress(&[], &stories(), r, &out);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o).1);
        outs.push(bytes(&out));
    }
    // The tensors are the same; the metadata records the calibration (none here).
    let tensors = |b: &Vec<u8>| -> Vec<(String, Vec<u8>)> {
        let st = safetensors::SafeTensors::deserialize(b).expect("safetensors");
        let mut v: Vec<(String, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.data().to_vec()))
            .collect();
        v.sort();
        v
    };
    assert!(tensors(&outs[0]) == tensors(&outs[1]));
    let needs = tmp.path().join("needs.yaml");
    std::fs::write(&needs, "steps:\n  - gptq: { format: int4-ch-sym }\n").expect("recipe");
    let o = compress(&[], &stories(), &needs, &tmp.path().join("needs"));
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert!(
        se.contains("calibration: no calibration source: `steps[0].gptq` needs calibration data"),
        "{se}"
    );
}
