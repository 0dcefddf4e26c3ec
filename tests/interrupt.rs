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
    // Only the resume state of the finished blocks stays, and the message says how to use it.
    let left: Vec<_> = std::fs::read_dir(&outs)
        .expect("read")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != ".compressed.pare-resume" || !se.contains("--resume"))
        .collect();
    assert!(
        left.is_empty(),
        "left behind: {:?}",
        left.iter().map(|e| e.file_name()).collect::<Vec<_>>()
    );
}

/// `pare compress` killed with SIGKILL after a random block, then re-run with `--resume`,
/// writes the same checkpoint (safetensors and config.json, byte for byte) as an uninterrupted
/// run; the killed run leaves no output folder, and state from another recipe is refused.
#[cfg(unix)]
#[test]
fn sigkill_then_resume_gives_the_uninterrupted_bytes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let recipe = write_recipe(
        tmp.path(),
        "r",
        32,
        128,
        "gptq: { format: int4-g32-sym }",
        "pack-quantized",
    );
    let run = |out: &std::path::Path, resume: bool, recipe: &std::path::Path| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_pare"));
        c.args(["compress", "--model"])
            .arg(model_dir("tiny-llama"))
            .arg("--recipe")
            .arg(recipe)
            .arg("--out")
            .arg(out);
        if resume {
            c.arg("--resume");
        }
        c
    };
    let whole = tmp.path().join("whole");
    let o = run(&whole, false, &recipe).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // A block in 0..6 of tiny-llama's 8, from the clock.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let k = (nanos % 6) as usize;
    let out = tmp.path().join("killed");
    let state = tmp.path().join(".killed.pare-resume");
    let mut child = run(&out, false, &recipe)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let t = Instant::now();
    while !state.join(format!("block-{k}.done")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "block {k} never finished"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "pare ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(u64::from(nanos % 50)));
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    assert!(!out.exists(), "a killed run left {}", out.display());

    // State from another recipe is refused.
    let other = write_recipe(
        tmp.path(),
        "other",
        32,
        128,
        "gptq: { format: int4-g32-asym }",
        "pack-quantized",
    );
    let o = run(&out, true, &other).output().expect("run");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("different run"));

    let o = run(&out, true, &recipe).output().expect("resume");
    let se = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{se}");
    assert!(
        se.contains("resuming after block"),
        "killed after block {k}: {se}"
    );
    for f in ["model.safetensors", "config.json"] {
        let a = std::fs::read(whole.join(f)).expect("whole");
        let b = std::fs::read(out.join(f)).expect("resumed");
        assert!(
            a == b,
            "{f} differs after resuming (killed after block {k})"
        );
    }
    assert!(!state.exists(), "the resume state is removed after success");
}
