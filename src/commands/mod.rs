//! What each subcommand does, as library functions that return data; `main.rs` prints it.

pub mod bench;
pub mod compare;
pub mod compress;
pub mod eval;
pub mod export;
pub mod gradients;

use crate::report::Provenance;

/// The warning (and report note) for windows longer than the model's context, the same for
/// calibration and evaluation: `what` says which (`calibration`, `evaluation`).
pub fn context_note(cfg: &crate::config::HfConfig, what: &str, seq: usize) -> Option<String> {
    let n = cfg.max_position_embeddings;
    (seq > n).then(|| {
        format!(
            "{what} windows of {seq} tokens exceed config.json max_position_embeddings {n}: \
             positions past {n} are outside the context the model was trained for"
        )
    })
}

/// The report's remark on NaN/Inf input weights let through by `--allow-non-finite`: which
/// tensors of `runner`'s checkpoint and how many values.
pub fn non_finite_note(runner: &crate::pipeline::ModelRunner) -> Option<String> {
    let bad = runner.store.non_finite_tensors();
    if bad.is_empty() {
        return None;
    }
    let total: usize = bad.iter().map(|(_, n)| n).sum();
    let list: Vec<String> = bad.iter().map(|(t, n)| format!("{t} ({n})")).collect();
    Some(format!(
        "{}: the input weights hold {total} NaN/Inf value(s), let through by --allow-non-finite; \
         every figure computed from them is suspect: {}",
        runner.dir.display(),
        list.join(", ")
    ))
}

/// Provenance with the tool, version, date and machine filled in.
pub fn provenance(model: &str, base: Option<&str>) -> Provenance {
    Provenance {
        tool: "pare".into(),
        version: crate::VERSION.into(),
        model: model.into(),
        base_model: base.map(str::to_string),
        date: now_rfc3339(),
        machine: machine(),
        ..Default::default()
    }
}

/// UTC time as RFC 3339 (computed from the Unix clock; no date crate needed).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Host name, CPU model and thread count in one line.
pub fn machine() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|x| x.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{host}; {cpu}; {} threads", rayon::current_num_threads())
}
