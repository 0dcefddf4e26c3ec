//! The streamed gradient pass and GBLM end to end on stories260k: gradients against PyTorch
//! autograd (tests/golden/gradients-stories260k.*, made by tools/gradients/make_golden.py), the
//! artefact's refusals, and GBLM's use of it.

mod common_compress;

use std::path::{Path, PathBuf};

use common_compress::{
    compress, pare, read_linears, root, shared, stories, tiny_llama, write_recipe,
};
use serde_json::Value;

fn ids_recipe(dir: &Path, name: &str, samples: usize, steps: &str) -> PathBuf {
    write_recipe(
        dir,
        name,
        &format!(
            "calibration: {{ ids: {}, samples: {samples}, seq_len: 256 }}\nsteps:\n{steps}export: {{ format: dense }}\n",
            shared("models/stories260k/reference.calib_ids.safetensors").display()
        ),
    )
}

fn gradients(model: &Path, recipe: &Path, out: &Path) -> std::process::Output {
    pare()
        .args(["gradients", "--model"])
        .arg(model)
        .arg("--recipe")
        .arg(recipe)
        .arg("--out")
        .arg(out)
        .output()
        .expect("running pare")
}

/// name → values of every tensor in a safetensors file, and its metadata.
fn read_all(
    p: &Path,
) -> (
    Vec<(String, Vec<f32>)>,
    std::collections::HashMap<String, String>,
) {
    let bytes = std::fs::read(p).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
            (n, bytemuck::pod_collect_to_vec(t.data()))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    (v, meta.metadata().clone().unwrap_or_default())
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn gradients_match_pytorch_autograd() {
    let tmp = tempfile::tempdir().unwrap();
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(root("tests/golden/gradients-stories260k.json")).unwrap(),
    )
    .unwrap();
    let alpha = golden["alpha"].as_f64().unwrap();
    for (samples, key) in [(1usize, "grad_norm_seq0"), (4, "artefact_norm")] {
        let recipe = ids_recipe(
            tmp.path(),
            &format!("r{samples}.yaml"),
            samples,
            "  - gblm: { sparsity: 0.5 }\n",
        );
        let out = tmp.path().join(format!("g{samples}.safetensors"));
        let o = gradients(&stories(), &recipe, &out);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (tensors, meta) = read_all(&out);
        assert_eq!(meta["format"], "pare-gradients");
        assert_eq!(meta["samples"], samples.to_string());
        let want = golden[key].as_object().unwrap();
        assert_eq!(tensors.len(), want.len(), "one tensor per block linear");
        for (name, g) in &tensors {
            // One sequence: ‖G‖ = α‖g‖. Four: ‖sqrt(Σ (α g_n)²)‖.
            let scale = if samples == 1 { alpha } else { 1.0 };
            let w = want[name].as_f64().unwrap() * scale;
            let rel = (norm(g) - w).abs() / w;
            assert!(
                rel < 1e-4,
                "{name} ({samples} seq): ‖G‖ {} vs PyTorch {w} (rel {rel:.2e})",
                norm(g)
            );
        }
        if samples == 4 {
            let losses: Vec<f64> = golden["losses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let mean: f64 = losses.iter().sum::<f64>() / 4.0;
            let got: f64 = meta["mean_loss"].parse().unwrap();
            assert!((got - mean).abs() < 1e-5, "mean loss {got} vs {mean}");
            let (full, _) = read_all(&root("tests/golden/gradients-stories260k.safetensors"));
            for (name, want) in &full {
                let got = &tensors.iter().find(|(n, _)| n == name).unwrap().1;
                let diff: Vec<f32> = got.iter().zip(want).map(|(a, b)| a - b).collect();
                let rel = norm(&diff) / norm(want);
                assert!(rel < 1e-4, "{name}: elementwise relative error {rel:.2e}");
            }
        }
    }
}

#[test]
fn gblm_reads_its_file_or_computes_the_same_gradients_and_prunes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("g.safetensors");
    let r = ids_recipe(tmp.path(), "r.yaml", 8, "  - gblm: { sparsity: 0.5 }\n");
    let o = gradients(&stories(), &r, &file);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let with_file = ids_recipe(
        tmp.path(),
        "f.yaml",
        8,
        &format!(
            "  - gblm: {{ pattern: \"2:4\", gradients: {} }}\n",
            file.display()
        ),
    );
    let in_run = ids_recipe(tmp.path(), "p.yaml", 8, "  - gblm: { pattern: \"2:4\" }\n");
    let wanda = ids_recipe(tmp.path(), "w.yaml", 8, "  - wanda: { pattern: \"2:4\" }\n");
    let outs = tmp.path().join("outs");
    std::fs::create_dir(&outs).unwrap();
    let rep_f = compress(&stories(), &with_file, &outs.join("f"));
    compress(&stories(), &in_run, &outs.join("p"));
    compress(&stories(), &wanda, &outs.join("w"));
    // The in-run pass leaves no file behind.
    let mut names: Vec<String> = std::fs::read_dir(&outs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["f", "p", "w"]);
    let (lf, lp, lw) = (
        read_linears(&outs.join("f")),
        read_linears(&outs.join("p")),
        read_linears(&outs.join("w")),
    );
    let mut differ = 0;
    for (((id, a), (_, b)), (_, c)) in lf.iter().zip(&lp).zip(&lw) {
        assert_eq!(
            a.data, b.data,
            "{id}: file and in-run gradients prune alike"
        );
        assert!(a.satisfies_n_of_m(2, 4), "{id}");
        differ += a
            .data
            .iter()
            .zip(&c.data)
            .filter(|(x, y)| (**x == 0.0) != (**y == 0.0))
            .count();
    }
    assert!(
        differ > 0,
        "the gradient term changed no choice against Wanda"
    );
    let profiles = rep_f["allocation"]["profiles"].as_array().unwrap();
    assert!(
        profiles
            .iter()
            .any(|p| p["profile"] == "gradients" && p["samples"] == "8"),
        "{profiles:?}"
    );
}

#[test]
fn foreign_misshapen_or_misplaced_gradients_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("g.safetensors");
    let r = ids_recipe(tmp.path(), "r.yaml", 1, "  - gblm: { sparsity: 0.5 }\n");
    assert!(gradients(&stories(), &r, &file).status.success());
    let fail = |o: std::process::Output, needle: &str| {
        assert_eq!(
            o.status.code(),
            Some(2),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains("panicked"), "{e}");
    };
    // Written again without --force, or into the model's folder.
    fail(gradients(&stories(), &r, &file), "--force");
    let copy = tmp.path().join("model");
    std::fs::create_dir(&copy).unwrap();
    for e in std::fs::read_dir(stories()).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
        }
    }
    fail(
        gradients(&copy, &r, &copy.join("g.safetensors")),
        "inside the model folder",
    );
    // Another model (tiny-llama) with stories260k's gradients.
    let use_file = write_recipe(
        tmp.path(),
        "u.yaml",
        &format!(
            "calibration: {{ text: {}, samples: 2, seq_len: 64 }}\nsteps:\n  - gblm: {{ sparsity: 0.5, gradients: {} }}\n",
            shared("data/tinystories/tinystories_train_head.txt").display(),
            file.display()
        ),
    );
    let out = tmp.path().join("out");
    let o = common_compress::compress_raw(&tiny_llama(), &use_file, &out, &[]);
    fail(o, "another model");
    assert!(!out.exists(), "no output after a refused gradient file");
    // The right model's fingerprint with a tensor of another shape.
    let bytes = std::fs::read(&file).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let orig = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let st: Vec<(String, safetensors::tensor::TensorView<'_>)> = orig
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let shape = if n == "model.layers.0.self_attn.q_proj.weight" {
                vec![32, 128]
            } else {
                t.shape().to_vec()
            };
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, t.data())
                .unwrap();
            (n, v)
        })
        .collect();
    let bad = tmp.path().join("bad.safetensors");
    safetensors::serialize_to_file(st, meta.metadata().clone(), &bad).unwrap();
    let use_bad = write_recipe(
        tmp.path(),
        "b.yaml",
        &format!(
            "calibration: {{ text: {}, samples: 2, seq_len: 64 }}\nsteps:\n  - gblm: {{ sparsity: 0.5, gradients: {} }}\n",
            shared("data/tinystories/tinystories_train_head.txt").display(),
            bad.display()
        ),
    );
    fail(
        common_compress::compress_raw(&stories(), &use_bad, &tmp.path().join("o2"), &[]),
        "is [32, 128]",
    );
    // A file that is not there, and alpha with a file.
    let missing = write_recipe(
        tmp.path(),
        "m.yaml",
        "steps:\n  - gblm: { sparsity: 0.5, gradients: nope.safetensors }\n",
    );
    fail(
        common_compress::compress_raw(&stories(), &missing, &tmp.path().join("o3"), &[]),
        "pare gradients",
    );
}

/// MoE (tiny-mixtral): the pass runs through burn's autodiff for the MoE blocks; experts get
/// gradients given the routing, routers none (their tensors stay zero).
#[test]
fn moe_gradients_cover_experts_and_leave_routers_at_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let r = write_recipe(
        tmp.path(),
        "r.yaml",
        &format!(
            "calibration: {{ text: {}, samples: 1, seq_len: 32 }}\nsteps:\n  - gblm: {{ sparsity: 0.5 }}\n",
            shared("data/tinystories/tinystories_train_head.txt").display()
        ),
    );
    let out = tmp.path().join("g.safetensors");
    let o = gradients(&shared("models/tiny-mixtral"), &r, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (tensors, _) = read_all(&out);
    let (mut experts, mut routers) = (0, 0);
    for (name, g) in &tensors {
        assert!(g.iter().all(|v| v.is_finite()), "{name}");
        if name.contains("block_sparse_moe.gate.") {
            routers += 1;
            assert!(g.iter().all(|v| *v == 0.0), "{name}");
        } else if name.contains(".experts.") && norm(g) > 0.0 {
            experts += 1;
        } else if !name.contains(".experts.") {
            assert!(norm(g) > 0.0, "{name}");
        }
    }
    assert!(
        routers > 0 && experts > 0,
        "{routers} routers, {experts} experts with gradients"
    );
}
