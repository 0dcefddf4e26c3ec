//! `pare export`: a checkpoint to another format (GGUF for llama.cpp, [`crate::gguf`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{PareError, Result};
use crate::gguf::{GgmlType, GgufReport, convert_checkpoint};

/// Converts `model` to `to` (`gguf`) of type `ty`, into `out` (default
/// `<model>/model-<type>.gguf`). An existing output is replaced only with `force`; the file is
/// written beside it and renamed into place.
pub fn run(
    model: &Path,
    to: &str,
    ty: &str,
    out: Option<&Path>,
    force: bool,
) -> Result<GgufReport> {
    if !to.eq_ignore_ascii_case("gguf") {
        return Err(PareError::Usage(format!("--to {to}: expected `gguf`")));
    }
    let t = GgmlType::parse(ty).ok_or_else(|| {
        PareError::Usage(format!(
            "--type {ty}: expected one of f32, f16, bf16, q8_0, q4_0"
        ))
    })?;
    let out: PathBuf = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| model.join(format!("model-{}.gguf", t.label())));
    if out.exists() && !force {
        return Err(PareError::Usage(format!(
            "{} exists; pass --force to replace it",
            out.display()
        )));
    }
    let name = model
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "model".into());
    convert_checkpoint(model, &out, t, &name)
}

/// The human summary of an export.
pub fn summary(r: &GgufReport) -> String {
    let mut s = String::new();
    let types: Vec<String> = r
        .tensors_by_type
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    let _ = writeln!(
        s,
        "GGUF ({}, type {}): {} tensors ({}), {:.2} MiB",
        r.architecture,
        r.ty,
        r.tensors,
        types.join(", "),
        r.bytes as f64 / (1024.0 * 1024.0)
    );
    if r.exact > 0 {
        let _ = writeln!(
            s,
            "  {} quantised linears re-packed from pare's codes exactly",
            r.exact
        );
    }
    if !r.requantised.is_empty() {
        let _ = writeln!(
            s,
            "  {} tensors quantised here by llama.cpp's RTN (not by a recipe method)",
            r.requantised.len()
        );
    }
    for n in &r.notes {
        let _ = writeln!(s, "  note: {n}");
    }
    let _ = writeln!(s, "wrote {}", r.file);
    s
}
