//! The format table: every quantisation format and sparsity pattern pare knows, in one `const`
//! slice that drives recipe parsing, `pare formats`, validation and writer metadata.
//!
//! Adding a format is adding one row to [`FORMATS`]. Quantisation names read
//! `int{bits}-{ch|g<group>}-{sym|asym}`: `ch` is one scale per output channel (row), `g128` one
//! scale per 128 consecutive input columns of a row. Sparsity patterns are `unstructured` or
//! `N:M`, meaning **keep N of every M** consecutive input weights (`2:4` keeps 2 of 4); any
//! `N:M` with `1 ≤ N < M` is accepted by [`parse_pattern`], the table lists the common ones.

use crate::compress::{NofM, QuantScheme};

/// What a row of the format table describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// An integer weight quantisation scheme (recipe key `format:`).
    Quant(QuantScheme),
    /// A sparsity pattern (recipe key `pattern:`); `None` is unstructured.
    Sparse(Option<NofM>),
}

/// One row of the format table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FormatRow {
    /// The name recipes use, e.g. `int4-g128-sym` or `2:4`.
    pub name: &'static str,
    pub kind: FormatKind,
    /// One line for `pare formats`.
    pub description: &'static str,
}

const fn q(
    name: &'static str,
    bits: u8,
    group: usize,
    symmetric: bool,
    description: &'static str,
) -> FormatRow {
    let group_size = if group == 0 { None } else { Some(group) };
    FormatRow {
        name,
        kind: FormatKind::Quant(QuantScheme {
            bits,
            group_size,
            symmetric,
        }),
        description,
    }
}

const fn sp(name: &'static str, pattern: Option<NofM>, description: &'static str) -> FormatRow {
    FormatRow {
        name,
        kind: FormatKind::Sparse(pattern),
        description,
    }
}

/// Every known format. Group `0` in the `q` rows means per channel.
pub const FORMATS: &[FormatRow] = &[
    q(
        "int8-ch-sym",
        8,
        0,
        true,
        "8-bit, one scale per output channel (W8A16)",
    ),
    q(
        "int8-ch-asym",
        8,
        0,
        false,
        "8-bit, scale and zero-point per output channel",
    ),
    q(
        "int8-g128-sym",
        8,
        128,
        true,
        "8-bit, one scale per 128 input columns",
    ),
    q(
        "int8-g128-asym",
        8,
        128,
        false,
        "8-bit, scale and zero-point per 128 input columns",
    ),
    q(
        "int8-g64-sym",
        8,
        64,
        true,
        "8-bit, one scale per 64 input columns",
    ),
    q(
        "int8-g64-asym",
        8,
        64,
        false,
        "8-bit, scale and zero-point per 64 input columns",
    ),
    q(
        "int8-g32-sym",
        8,
        32,
        true,
        "8-bit, one scale per 32 input columns",
    ),
    q(
        "int8-g32-asym",
        8,
        32,
        false,
        "8-bit, scale and zero-point per 32 input columns",
    ),
    q(
        "int4-ch-sym",
        4,
        0,
        true,
        "4-bit, one scale per output channel",
    ),
    q(
        "int4-ch-asym",
        4,
        0,
        false,
        "4-bit, scale and zero-point per output channel",
    ),
    q(
        "int4-g128-sym",
        4,
        128,
        true,
        "4-bit, one scale per 128 input columns (W4A16)",
    ),
    q(
        "int4-g128-asym",
        4,
        128,
        false,
        "4-bit, scale and zero-point per 128 input columns (W4A16_ASYM)",
    ),
    q(
        "int4-g64-sym",
        4,
        64,
        true,
        "4-bit, one scale per 64 input columns",
    ),
    q(
        "int4-g64-asym",
        4,
        64,
        false,
        "4-bit, scale and zero-point per 64 input columns",
    ),
    q(
        "int4-g32-sym",
        4,
        32,
        true,
        "4-bit, one scale per 32 input columns",
    ),
    q(
        "int4-g32-asym",
        4,
        32,
        false,
        "4-bit, scale and zero-point per 32 input columns",
    ),
    q(
        "int3-ch-sym",
        3,
        0,
        true,
        "3-bit, one scale per output channel",
    ),
    q(
        "int3-ch-asym",
        3,
        0,
        false,
        "3-bit, scale and zero-point per output channel",
    ),
    q(
        "int3-g128-sym",
        3,
        128,
        true,
        "3-bit, one scale per 128 input columns",
    ),
    q(
        "int3-g128-asym",
        3,
        128,
        false,
        "3-bit, scale and zero-point per 128 input columns",
    ),
    q(
        "int3-g64-sym",
        3,
        64,
        true,
        "3-bit, one scale per 64 input columns",
    ),
    q(
        "int3-g64-asym",
        3,
        64,
        false,
        "3-bit, scale and zero-point per 64 input columns",
    ),
    q(
        "int3-g32-sym",
        3,
        32,
        true,
        "3-bit, one scale per 32 input columns",
    ),
    q(
        "int3-g32-asym",
        3,
        32,
        false,
        "3-bit, scale and zero-point per 32 input columns",
    ),
    q(
        "int2-ch-sym",
        2,
        0,
        true,
        "2-bit, one scale per output channel",
    ),
    q(
        "int2-ch-asym",
        2,
        0,
        false,
        "2-bit, scale and zero-point per output channel",
    ),
    q(
        "int2-g128-sym",
        2,
        128,
        true,
        "2-bit, one scale per 128 input columns",
    ),
    q(
        "int2-g128-asym",
        2,
        128,
        false,
        "2-bit, scale and zero-point per 128 input columns",
    ),
    q(
        "int2-g64-sym",
        2,
        64,
        true,
        "2-bit, one scale per 64 input columns",
    ),
    q(
        "int2-g64-asym",
        2,
        64,
        false,
        "2-bit, scale and zero-point per 64 input columns",
    ),
    q(
        "int2-g32-sym",
        2,
        32,
        true,
        "2-bit, one scale per 32 input columns",
    ),
    q(
        "int2-g32-asym",
        2,
        32,
        false,
        "2-bit, scale and zero-point per 32 input columns",
    ),
    sp(
        "unstructured",
        None,
        "any weights may be zero; the amount is set by `sparsity`",
    ),
    sp(
        "2:4",
        Some(NofM { n: 2, m: 4 }),
        "keep 2 of every 4 consecutive input weights (50%)",
    ),
    sp(
        "4:8",
        Some(NofM { n: 4, m: 8 }),
        "keep 4 of every 8 consecutive input weights (50%)",
    ),
];

/// One on-disk layout `export.format` can write, and who reads it today.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExportRow {
    pub name: &'static str,
    /// `current`, or `legacy` (kept as an explicit opt-in).
    pub status: &'static str,
    pub readers: &'static str,
}

/// The export layouts, in the order `pare formats` lists them.
pub const EXPORTS: &[ExportRow] = &[
    ExportRow {
        name: "dense",
        status: "current",
        readers: "transformers, vLLM, llama.cpp's converter, pare (zeros stored; the default for sparse-only recipes)",
    },
    ExportRow {
        name: "pack-quantized",
        status: "current",
        readers: "compressed-tensors ≥ 0.12 (vLLM, transformers with compressed-tensors), pare",
    },
    ExportRow {
        name: "gguf",
        status: "current",
        readers: "llama.cpp (and ollama, LM Studio): model.gguf beside the checkpoint, type f32/f16/bf16/q8_0/q4_0; int4/int8-g32-sym codes re-packed as Q4_0/Q8_0 exactly; also `pare export --to gguf`",
    },
    ExportRow {
        name: "sparse-bitmask",
        status: "legacy",
        readers: "compressed-tensors ≤ 0.14.0.1 (llm-compressor ≤ 0.10), pare; not compressed-tensors ≥ 0.15 nor transformers 5",
    },
    ExportRow {
        name: "sparse-24-bitmask",
        status: "legacy",
        readers: "compressed-tensors ≤ 0.14.0.1 (llm-compressor ≤ 0.10; transformers 4 in float32), pare; not compressed-tensors ≥ 0.15 nor transformers 5",
    },
];

/// compressed-tensors' weight-only preset scheme names (llm-compressor's `scheme: W4A16`) and
/// the table rows they are.
pub const PRESETS: [(&str, &str); 3] = [
    ("W4A16", "int4-g128-sym"),
    ("W4A16_ASYM", "int4-g128-asym"),
    ("W8A16", "int8-ch-sym"),
];

/// The table row a preset name (`W4A16`, any case) stands for, if it is one.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(p, _)| p.eq_ignore_ascii_case(name))
        .map(|(_, row)| *row)
}

/// The row called `name` (exact match), or named by a preset (`W4A16`, any case), if any.
pub fn row_by_name(name: &str) -> Option<&'static FormatRow> {
    let name = preset(name).unwrap_or(name);
    FORMATS.iter().find(|r| r.name == name)
}

/// The quantisation scheme called `name`, e.g. `int4-g128-sym`.
pub fn scheme_by_name(name: &str) -> Option<QuantScheme> {
    match row_by_name(name)?.kind {
        FormatKind::Quant(s) => Some(s),
        FormatKind::Sparse(_) => None,
    }
}

/// The table name of a scheme, if the table has it (for reports and writer metadata).
pub fn scheme_name(scheme: &QuantScheme) -> Option<&'static str> {
    FORMATS
        .iter()
        .find(|r| r.kind == FormatKind::Quant(*scheme))
        .map(|r| r.name)
}

/// Names of all quantisation formats, in table order.
pub fn quant_names() -> impl Iterator<Item = &'static str> {
    FORMATS
        .iter()
        .filter(|r| matches!(r.kind, FormatKind::Quant(_)))
        .map(|r| r.name)
}

/// Names of the listed sparsity patterns, in table order.
pub fn pattern_names() -> impl Iterator<Item = &'static str> {
    FORMATS
        .iter()
        .filter(|r| matches!(r.kind, FormatKind::Sparse(_)))
        .map(|r| r.name)
}

/// Bit widths that appear in the table (for methods that take `bits:` rather than a format).
pub fn supported_bits() -> Vec<u8> {
    let mut bits: Vec<u8> = FORMATS
        .iter()
        .filter_map(|r| match r.kind {
            FormatKind::Quant(s) => Some(s.bits),
            FormatKind::Sparse(_) => None,
        })
        .collect();
    bits.sort_unstable();
    bits.dedup();
    bits
}

/// Parses a sparsity pattern: `unstructured` → `None`, `N:M` (keep N of every M, `1 ≤ N < M`)
/// → `Some`. The error text says what was expected.
pub fn parse_pattern(text: &str) -> Result<Option<NofM>, String> {
    let text = text.trim();
    if text == "unstructured" {
        return Ok(None);
    }
    let Some((n, m)) = text.split_once(':') else {
        return Err(format!(
            "unknown pattern `{text}`: expected `unstructured` or `N:M` (keep N of every M weights, e.g. `2:4`)"
        ));
    };
    let (Ok(n), Ok(m)) = (n.trim().parse::<usize>(), m.trim().parse::<usize>()) else {
        return Err(format!(
            "pattern `{text}`: N and M in `N:M` must be whole numbers, e.g. `2:4` keeps 2 of every 4"
        ));
    };
    if n == 0 || n >= m {
        return Err(format!(
            "pattern `{text}` keeps {n} of every {m} weights: N must satisfy 1 ≤ N < M (`2:4` keeps 2 of every 4)"
        ));
    }
    Ok(Some(NofM { n, m }))
}

/// The format table and the export layouts as aligned plain text, for `pare formats`.
pub fn formats_table() -> String {
    let mut out = aligned(&quant_and_sparsity_rows());
    out.push_str("\nexport layouts (`export.format`)\n");
    let mut rows = vec![["layout".to_string(), "status".into(), "read by".into()]];
    for e in EXPORTS {
        rows.push([e.name.into(), e.status.into(), e.readers.into()]);
    }
    out.push_str(&aligned(&rows));
    out
}

/// Storage bits per weight of a scheme with 16-bit scales (and, asymmetric, a `bits`-bit
/// zero-point per group, as pack-quantized stores it): `bits + (16 [+ bits]) / group`; per
/// channel the overhead is per row, shown over `d_in`.
pub fn bits_per_weight(s: &QuantScheme) -> String {
    let extra = 16 + if s.symmetric { 0 } else { u32::from(s.bits) };
    match s.group_size {
        Some(g) => format!("{:.3}", f64::from(s.bits) + f64::from(extra) / g as f64),
        None => format!("{} + {extra}/d_in", s.bits),
    }
}

fn quant_and_sparsity_rows() -> Vec<[String; 7]> {
    let mut rows: Vec<[String; 7]> = vec![[
        "name".into(),
        "kind".into(),
        "bits".into(),
        "bits/weight".into(),
        "group".into(),
        "symmetric".into(),
        "description".into(),
    ]];
    for r in FORMATS {
        rows.push(match r.kind {
            FormatKind::Quant(s) => [
                r.name.into(),
                "quant".into(),
                s.bits.to_string(),
                bits_per_weight(&s),
                s.group_size.map_or("channel".into(), |g| g.to_string()),
                if s.symmetric { "yes" } else { "no" }.into(),
                r.description.into(),
            ],
            FormatKind::Sparse(p) => [
                r.name.into(),
                "sparsity".into(),
                "-".into(),
                "-".into(),
                p.map_or("-".into(), |p| p.m.to_string()),
                "-".into(),
                r.description.into(),
            ],
        });
    }
    rows
}

/// Rows as left-aligned columns separated by two spaces (the last column unpadded).
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_per_weight_counts_scales_and_zero_points() {
        let b = |n: &str| bits_per_weight(&scheme_by_name(n).unwrap());
        // 4 + (16 + 4) / 128; 2 + 16 / 32; per channel the overhead is per row.
        assert_eq!(b("int4-g128-asym"), "4.156");
        assert_eq!(b("int2-g32-sym"), "2.500");
        assert_eq!(b("int3-g64-asym"), "3.297");
        assert_eq!(b("int8-ch-sym"), "8 + 16/d_in");
        assert!(formats_table().contains("bits/weight"));
    }

    /// llm-compressor's preset names resolve to the rows `pare formats` labels with them.
    #[test]
    fn preset_names_are_format_aliases() {
        for (preset, row) in PRESETS {
            assert_eq!(row_by_name(preset).map(|r| r.name), Some(row));
            assert_eq!(
                row_by_name(&preset.to_lowercase()).map(|r| r.name),
                Some(row)
            );
            let label = format!("({preset})");
            assert!(
                row_by_name(row).is_some_and(|r| r.description.ends_with(&label)),
                "{row}"
            );
        }
        assert_eq!(
            scheme_by_name("W4A16"),
            Some(QuantScheme {
                bits: 4,
                group_size: Some(128),
                symmetric: true
            })
        );
        assert!(row_by_name("W4A8").is_none());
    }

    #[test]
    fn names_are_unique_and_match_their_scheme() {
        for (i, a) in FORMATS.iter().enumerate() {
            assert!(
                FORMATS[i + 1..].iter().all(|b| b.name != a.name),
                "duplicate {}",
                a.name
            );
            if let FormatKind::Quant(s) = a.kind {
                let group = s.group_size.map_or("ch".to_string(), |g| format!("g{g}"));
                let sym = if s.symmetric { "sym" } else { "asym" };
                assert_eq!(a.name, format!("int{}-{group}-{sym}", s.bits));
            }
        }
    }

    #[test]
    fn lookups() {
        assert_eq!(
            scheme_by_name("int4-g128-sym"),
            Some(QuantScheme {
                bits: 4,
                group_size: Some(128),
                symmetric: true
            })
        );
        assert_eq!(
            scheme_by_name("int8-ch-asym"),
            Some(QuantScheme {
                bits: 8,
                group_size: None,
                symmetric: false
            })
        );
        assert_eq!(scheme_by_name("2:4"), None);
        assert_eq!(scheme_by_name("int5-ch-sym"), None);
        assert_eq!(
            scheme_by_name("int3-g128-asym"),
            Some(QuantScheme {
                bits: 3,
                group_size: Some(128),
                symmetric: false
            })
        );
        let s = QuantScheme {
            bits: 4,
            group_size: Some(32),
            symmetric: false,
        };
        assert_eq!(scheme_name(&s), Some("int4-g32-asym"));
        assert_eq!(supported_bits(), vec![2, 3, 4, 8]);
        assert_eq!(quant_names().count(), 32);
        assert_eq!(
            pattern_names().collect::<Vec<_>>(),
            vec!["unstructured", "2:4", "4:8"]
        );
    }

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("unstructured"), Ok(None));
        assert_eq!(parse_pattern("2:4"), Ok(Some(NofM { n: 2, m: 4 })));
        assert_eq!(parse_pattern(" 1:8 "), Ok(Some(NofM { n: 1, m: 8 })));
        assert!(parse_pattern("4:4").is_err_and(|e| e.contains("1 ≤ N < M")));
        assert!(parse_pattern("0:4").is_err());
        assert!(parse_pattern("a:4").is_err());
        assert!(parse_pattern("dense").is_err_and(|e| e.contains("keep N of every M")));
    }

    #[test]
    fn table_is_aligned() {
        let t = formats_table();
        let all: Vec<&str> = t.lines().collect();
        // The format table, a blank line, the export heading, its header and one line per layout.
        assert_eq!(all.len(), FORMATS.len() + 1 + 3 + EXPORTS.len());
        let lines = &all[..FORMATS.len() + 1];
        assert!(lines[0].starts_with("name"));
        let col = lines[0].find("kind").unwrap_or(0);
        assert!(col > 0);
        for l in &lines[1..] {
            assert!(
                l[col..].starts_with("quant") || l[col..].starts_with("sparsity"),
                "{l}"
            );
        }
        assert!(t.contains("int4-g128-sym") && t.contains("keep 2 of every 4"));
        let legacy: Vec<&str> = all
            .iter()
            .filter(|l| l.contains(" legacy "))
            .map(|l| l.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(legacy, ["sparse-bitmask", "sparse-24-bitmask"]);
    }
}
