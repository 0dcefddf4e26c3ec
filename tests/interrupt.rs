//! Ctrl-C during `pare compress`: a real SIGINT once the block loop has started stops the run
//! at the next block boundary with exit code 130, and leaves neither `--out` nor the temporary
//! folder behind.

mod common;

use std::time::{Duration, Instant};

use common::{model_dir, write_recipe};

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn ctrl_c_stops_cleanly_with_no_partial_output() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(
        tmp.path(),
        "r",
        128,
        512,
        "sparsegpt: { sparsity: 0.5 }",
        "dense",
    );
    let outs = tmp.path().join("outs");
    std::fs::create_dir(&outs).expect("mkdir");
    let out = outs.join("compressed");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["--quiet", "compress", "--model"])
        .arg(model_dir("tiny-llama"))
        .arg("--recipe")
        .arg(&recipe)
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pare");
    // The writer's temporary folder appears just before the block loop starts.
    let t = Instant::now();
    let started = || {
        std::fs::read_dir(&outs)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .any(|e| e.file_name().to_string_lossy().contains("pare-tmp"))
            })
            .unwrap_or(false)
    };
    while !started() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the block loop never started"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "pare ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let o = child.wait_with_output().expect("wait");
    let se = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "stderr: {se}");
    assert!(se.contains("interrupted"), "{se}");
    assert!(!out.exists(), "{} was written", out.display());
    let left: Vec<_> = std::fs::read_dir(&outs)
        .expect("read")
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        left.is_empty(),
        "left behind: {:?}",
        left.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
}
