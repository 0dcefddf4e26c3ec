//! What a new user hits in the first hour: existing reports are not overwritten, `compare` reuses
//! a run only when nothing it depends on changed, the saved recipe re-runs, `eval` shows no
//! invented numbers, a closed stdout ends quietly, interrupted runs' temporary folders are
//! cleaned, progress is logged without a terminal, the task table shows the base, missing
//! recipe files and bare shard sizes are named errors, and the help separates global options.
//! All on stories260k (the shipped model) so they stay fast.

mod common_compress;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common_compress::*;
use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pare"))
}

fn model() -> PathBuf {
    root("models/stories260k")
}

/// A small Wanda recipe on the shipped calibration text, with an eval block.
fn small_recipe(dir: &Path, name: &str, sparsity: f64) -> PathBuf {
    write_recipe(
        dir,
        name,
        &format!(
            "calibration: {{ text: {}, samples: 8, seq_len: 64, seed: 0 }}\nsteps:\n  - wanda: {{ sparsity: {sparsity} }}\nexport: {{ format: dense }}\neval: {{ text: {}, seq_len: 64, max_windows: 8, kld: true }}\n",
            root("calibration/tinystories-train-head.txt").display(),
            root("calibration/tinystories-valid-head.txt").display()
        ),
    )
}

#[test]
fn eval_refuses_to_overwrite_a_report_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("w");
    compress(&model(), &small_recipe(tmp.path(), "w.yaml", 0.5), &out);
    let before = std::fs::read(out.join("report.json")).unwrap();
    let eval = |extra: &[&str]| {
        bin()
            .args(["--quiet", "eval", "--model"])
            .arg(&out)
            .arg("--text")
            .arg(root("calibration/tinystories-valid-head.txt"))
            .args(["--seq-len", "64", "--max-windows", "2", "--report"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = eval(&[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("report.json exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("report.json")).unwrap(),
        before,
        "report touched"
    );
    let o = eval(&["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(std::fs::read(out.join("report.json")).unwrap(), before);
}

#[test]
fn compare_reuses_a_run_only_when_its_inputs_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let rdir = tmp.path().join("recipes");
    std::fs::create_dir_all(&rdir).unwrap();
    let recipe = small_recipe(&rdir, "w.yaml", 0.5);
    let out = tmp.path().join("cmp");
    let run = |out: &Path, extra: &[&str]| {
        bin()
            .args(["--json", "compare", "--model"])
            .arg(model())
            .arg("--recipe")
            .arg(&recipe)
            .arg("--out")
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    };
    let sparsity = |out: &Path| -> f64 {
        let r: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("w/report.json")).unwrap())
                .unwrap();
        r["linears"][0]["sparsity"].as_f64().unwrap()
    };
    let o = run(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sparsity(&out), 0.5);
    // Unchanged: reused.
    let o = run(&out, &[]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("reusing the identical earlier run"));
    // The recipe edited (0.5 → 0.7): redone, and listed with its new result.
    small_recipe(&rdir, "w.yaml", 0.7);
    let o = run(&out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("changed since the run"), "{err}");
    // floor(64 · 0.7) / 64 per row of the first linear (d_in 64).
    assert_eq!(sparsity(&out), 44.0 / 64.0);
    // An unrelated existing folder is refused.
    let other = tmp.path().join("photos");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("holiday.jpg"), b"x").unwrap();
    let o = run(&other, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a pare compare output"));
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}

#[test]
fn the_saved_recipe_re_runs_from_the_output_folder() {
    let tmp = tempfile::tempdir().unwrap();
    // The shipped recipe, with its paths relative to recipes/.
    let out = tmp.path().join("a");
    let o = bin()
        .args(["--quiet", "--json", "compress", "--model"])
        .arg(model())
        .arg("--recipe")
        .arg(root("recipes/magnitude-50.yaml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Re-run the saved copy from inside the output folder.
    let o = bin()
        .current_dir(&out)
        .args(["--quiet", "--json", "compress", "--model"])
        .arg(model())
        .args(["--recipe", "recipe.yaml", "--out", "../b"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        safetensors_files(&out),
        safetensors_files(&tmp.path().join("b")),
        "the re-run recipe gives the same weights"
    );
}

#[test]
fn eval_reports_only_numbers_it_measured() {
    let o = bin()
        .args(["--quiet", "eval", "--model"])
        .arg(model())
        .arg("--text")
        .arg(root("calibration/tinystories-valid-head.txt"))
        .args(["--seq-len", "64", "--max-windows", "2"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let md = String::from_utf8_lossy(&o.stdout);
    let size = md.split("## Size and time").nth(1).expect("size section");
    let size = size.split("\n## ").next().unwrap();
    assert!(
        size.contains("parameters") && size.contains("wall time"),
        "{size}"
    );
    assert!(
        !size.contains("linear bytes"),
        "no linear byte counts in eval: {size}"
    );
    for line in size
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("---"))
    {
        assert!(!line.ends_with("| 0 |"), "zero shown: {line}");
    }
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let mut child = bin()
        .arg("inspect")
        .arg(model())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the pipe before pare has written anything (it is still reading the checkpoint), as
    // `| head` does once it has its lines: pare's write then fails with EPIPE.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
}

#[test]
fn an_interrupted_runs_temporary_folder_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    // As a killed run would leave it: a pid that no longer exists.
    let stale = tmp.path().join(".w.pare-tmp-4000000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("shard-00001.data"), b"partial").unwrap();
    let o = bin()
        .args(["compress", "--model"])
        .arg(model())
        .arg("--recipe")
        .arg(small_recipe(tmp.path(), "w.yaml", 0.5))
        .arg("--out")
        .arg(tmp.path().join("w"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!stale.exists(), "stale temporary folder left");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("left by an interrupted earlier run"), "{err}");
    // Progress without a terminal: one plain line per block.
    for b in 1..=5 {
        assert!(err.contains(&format!("compress: {b}/5")), "{err}");
    }
    assert!(temp_leftovers(tmp.path()).is_empty());
}

#[test]
fn with_a_base_the_task_table_has_a_base_column() {
    let o = bin()
        .args(["--quiet", "eval", "--model"])
        .arg(model())
        .arg("--base")
        .arg(model())
        .arg("--tasks")
        .arg(root("eval/tasks/tinystories-cloze.jsonl"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8_lossy(&o.stdout);
    let header = md
        .lines()
        .find(|l| l.starts_with("| task"))
        .expect("task table");
    assert!(header.contains("| base |"), "{header}");
    // The model is its own base: both columns agree.
    let row = md
        .lines()
        .find(|l| l.starts_with("| tinystories-cloze"))
        .unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert!(cells[6].starts_with(cells[5]), "{row}");
}

#[test]
fn a_missing_eval_text_names_the_recipe_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = write_recipe(
        tmp.path(),
        "r.yaml",
        &format!(
            "calibration: {{ text: {}, samples: 4, seq_len: 32 }}\nsteps:\n  - magnitude: {{ sparsity: 0.5 }}\neval: {{ text: no-such-file.txt }}\n",
            root("calibration/tinystories-train-head.txt").display()
        ),
    );
    let o = compress_raw(&model(), &recipe, &tmp.path().join("o"), &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("r.yaml") && err.contains("eval.text") && err.contains("no-such-file.txt"),
        "{err}"
    );
    assert!(!tmp.path().join("o").exists());
}

#[test]
fn a_bare_shard_size_is_refused_and_help_separates_global_options() {
    let tmp = tempfile::tempdir().unwrap();
    let o = compress_raw(
        &model(),
        &small_recipe(tmp.path(), "w.yaml", 0.5),
        &tmp.path().join("o"),
        &["--max-shard-size", "200"],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--max-shard-size 200") && err.contains("no unit"),
        "{err}"
    );
    let help = bin().args(["compress", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let (own, global) = help
        .split_once("Global options:")
        .expect("a global options heading");
    assert!(
        own.contains("--recipe") && !own.contains("--threads"),
        "{help}"
    );
    assert!(
        global.contains("--threads") && global.contains("--device"),
        "{help}"
    );
}
