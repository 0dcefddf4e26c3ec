//! Results do not depend on the thread count or on the run: the same recipe and seed give
//! byte-identical safetensors with `--threads 1` and `--threads 2`, and on a repeated run, for
//! Wanda, SparseGPT and GPTQ (stories260k, 8 × 128 calibration tokens).

mod common;

use std::path::Path;

use common::{compress, text, write_recipe};

fn safetensors_bytes(dir: &Path) -> Vec<u8> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("output dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no safetensors in {}", dir.display());
    names
        .iter()
        .flat_map(|p| std::fs::read(p).expect("read"))
        .collect()
}

#[test]
fn outputs_are_identical_across_thread_counts_and_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/stories260k");
    for (name, step, export) in [
        ("wanda", "wanda: { sparsity: 0.5 }", "dense"),
        ("sparsegpt", "sparsegpt: { sparsity: 0.5 }", "dense"),
        ("gptq", "gptq: { format: int4-ch-sym }", "pack-quantized"),
    ] {
        let recipe = write_recipe(tmp.path(), name, 8, 128, step, export);
        let mut outs = Vec::new();
        for (run, threads) in [(0, "1"), (1, "2"), (2, "2")] {
            let out = tmp.path().join(format!("{name}-{run}"));
            let o = compress(&["--quiet", "--threads", threads], &model, &recipe, &out);
            assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o).1);
            outs.push(safetensors_bytes(&out));
        }
        assert!(
            outs[0] == outs[1],
            "{name}: --threads 1 and --threads 2 differ"
        );
        assert!(
            outs[1] == outs[2],
            "{name}: two runs with --threads 2 differ"
        );
    }
}
