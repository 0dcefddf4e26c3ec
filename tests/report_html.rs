//! The HTML report of a real `pare compress` run: self-contained, every quality number shown as
//! rendered, and (in headless Chromium) a page that actually draws, with the SVG plots' text in
//! its DOM. Chromium is required (CI installs it); `PARE_SKIP_BROWSER=1` skips only the browser.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pare::report::Report;
use pare::report::markdown::{fmt_num, rendered_numbers};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// `pare compress` of stories260k with the Wanda-50 parity recipe (it has an eval block).
fn compressed(dir: &Path) -> PathBuf {
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_pare"))
        .args(["--quiet", "compress", "--model"])
        .arg(format!("{MANIFEST}/../shared/models/stories260k"))
        .arg("--recipe")
        .arg(format!("{MANIFEST}/tests/parity/wanda-50.yaml"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pare compress failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The trimmed contents of every `<text …>…</text>` element.
fn svg_texts(dom: &str) -> Vec<String> {
    dom.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect()
}

/// `chromium` on PATH, or `None` when it is absent and `PARE_SKIP_BROWSER=1`; fails otherwise.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var("PARE_SKIP_BROWSER").as_deref() == Ok("1") => {
            eprintln!("chromium not on PATH: browser checks skipped (PARE_SKIP_BROWSER=1)");
            None
        }
        None => panic!(
            "chromium is not on PATH: install Debian's `chromium` (as .ci/run does), or set PARE_SKIP_BROWSER=1 to skip the browser checks"
        ),
    }
}

/// Runs headless Chromium on `page` with `args`, killed after 120 s.
fn headless(chromium: &Path, profile: &Path, page: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // Read the pipes on threads so a large DOM dump cannot block the child.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut b = vec![];
        std::io::Read::read_to_end(&mut so, &mut b).map(|_| b)
    });
    let t_err = std::thread::spawn(move || {
        let mut b = vec![];
        std::io::Read::read_to_end(&mut se, &mut b).map(|_| b)
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("chromium {args:?} on {} timed out", page.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Output {
        status,
        stdout: t_out.join().unwrap().unwrap(),
        stderr: t_err.join().unwrap().unwrap(),
    }
}

/// Screenshot of `page` in a fresh profile; returns the PNG's size in bytes.
fn screenshot(chromium: &Path, tmp: &Path, name: &str, page: &Path) -> u64 {
    let png = tmp.join(format!("{name}.png"));
    let o = headless(
        chromium,
        &tmp.join(format!("profile-{name}")),
        page,
        &[&format!("--screenshot={}", png.display())],
    );
    assert!(
        o.status.success(),
        "chromium --screenshot {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{name}.png is not a PNG"
    );
    // IHDR: width and height follow the signature and chunk header.
    let dim = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1200, 2000), "{name}.png size");
    bytes.len() as u64
}

#[test]
fn report_html_shows_every_quality_number_and_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let out = compressed(tmp.path());
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    let json_text = std::fs::read_to_string(out.join("report.json")).unwrap();
    let report = Report::from_json(&json_text).unwrap();

    // Self-contained: one document, inline SVG, nothing fetched.
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(
        html.matches("<svg").count(),
        3,
        "error, sparsity and quality plots"
    );
    for bad in [
        "http://", "https://", "<script", "<link", "<img", "<iframe", "src=", "@import", "url(",
    ] {
        assert!(!html.contains(bad), "report.html contains {bad}");
    }

    // Every number of the quality section, as the renderer formats it.
    let q = report
        .quality
        .as_ref()
        .expect("the recipe has an eval block");
    let kld = q.kld.as_ref().expect("kld: true");
    let base = q
        .base_perplexity
        .as_ref()
        .expect("base perplexity with KLD");
    for (what, x) in [
        ("ppl", q.perplexity.ppl),
        ("base ppl", base.ppl),
        ("mean KLD", kld.mean_kld.value),
        ("mean KLD unc", kld.mean_kld.unc),
        ("same top p", kld.same_top_p.value),
        ("same top p unc", kld.same_top_p.unc),
    ] {
        let s = fmt_num(x);
        assert!(html.contains(&s), "report.html lacks {what} = {s}");
    }
    let v: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    let mut nums = vec![];
    rendered_numbers(&v["quality"], &mut nums);
    assert!(nums.len() > 50, "{} quality numbers", nums.len());
    for n in &nums {
        assert!(html.contains(n.as_str()), "report.html lacks {n}");
    }

    let Some(chromium) = chromium() else {
        return;
    };

    // The page draws: its screenshot is far larger than that of an empty page.
    let empty = tmp.path().join("empty.html");
    std::fs::write(
        &empty,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>empty</title></head><body></body></html>",
    )
    .unwrap();
    let blank = screenshot(&chromium, tmp.path(), "empty", &empty);
    let shot = screenshot(&chromium, tmp.path(), "report", &page);
    assert!(
        shot > 20_000 && shot > 5 * blank,
        "report screenshot {shot} bytes vs empty page {blank} bytes: the page looks blank"
    );

    // The DOM Chromium built holds the plots and their text labels.
    let o = headless(
        &chromium,
        &tmp.path().join("profile-dom"),
        &page,
        &["--dump-dom"],
    );
    assert!(
        o.status.success(),
        "chromium --dump-dom: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dom = String::from_utf8_lossy(&o.stdout);
    assert_eq!(dom.matches("<svg").count(), 3, "svg elements in the DOM");
    for label in [
        "Relative reconstruction error by layer",
        "Sparsity by layer",
        "Quality vs compression",
        "attn.q",
        "mlp.down",
        "this model",
        "dense",
        &fmt_num(q.perplexity.ppl),
    ] {
        assert!(
            dom.contains(&format!(">{label}<")) || dom.contains(label),
            "DOM lacks {label}"
        );
    }
    // The plot labels are SVG <text> elements, not just table cells.
    let texts = svg_texts(&dom);
    for label in [
        "Relative reconstruction error by layer",
        "Quality vs compression",
        "attn.q",
        "mlp.down",
        "this model",
        "dense",
        "block",
        "perplexity",
    ] {
        assert!(
            texts.iter().any(|t| t == label),
            "no SVG <text> {label} in {texts:?}"
        );
    }
}
