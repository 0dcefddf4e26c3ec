//! The report as a list of titled tables (`Section`), shared by the Markdown and HTML renderers so
//! both show the same numbers formatted the same way; and the Markdown renderer itself.

use super::types::{Estimate, KldStats, MetricValue, PerplexityStats, Report};

/// A rectangular table of already formatted cells.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One titled part of a report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Section {
    /// Heading level below the page title: 2 for `##`, 3 for `###`.
    pub level: u8,
    pub title: String,
    /// A sentence under the heading.
    pub intro: Option<String>,
    pub table: Option<Table>,
    /// Preformatted text (the recipe).
    pub code: Option<String>,
    /// Bullet points (notes, warnings).
    pub items: Vec<String>,
}

impl Section {
    fn new(level: u8, title: &str) -> Self {
        Section {
            level,
            title: title.to_string(),
            ..Default::default()
        }
    }
    fn table(mut self, headers: &[&str], rows: Vec<Vec<String>>) -> Self {
        self.table = Some(Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows,
        });
        self
    }
    fn intro(mut self, text: impl Into<String>) -> Self {
        self.intro = Some(text.into());
        self
    }
}

/// A float with 4 significant digits, trailing zeros dropped (`12.35`, `0.0125`, `3`);
/// scientific notation below 1e-4 or from 1e7 on. Non-finite values print as `nan`/`inf`.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-4..1e7).contains(&a) {
        return format!("{x:.3e}");
    }
    let mag = a.log10().floor() as i32;
    let decimals = (3 - mag).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `value ± unc`.
pub fn fmt_est(e: &Estimate) -> String {
    format!("{} ± {}", fmt_num(e.value), fmt_num(e.unc))
}

/// `value ± stderr`, or just the value when there is no stderr.
pub fn fmt_metric(m: &MetricValue) -> String {
    match m.stderr {
        Some(s) => format!("{} ± {}", fmt_num(m.value), fmt_num(s)),
        None => fmt_num(m.value),
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), fmt_num)
}

fn ppl_rows(p: Option<&PerplexityStats>, q: &PerplexityStats) -> Vec<Vec<String>> {
    let cell = |f: &dyn Fn(&PerplexityStats) -> String| vec![p.map_or_else(|| "–".into(), f), f(q)];
    let mut rows = vec![];
    for (label, f) in [
        (
            "perplexity",
            &(|s: &PerplexityStats| fmt_num(s.ppl)) as &dyn Fn(&PerplexityStats) -> String,
        ),
        ("mean NLL", &|s: &PerplexityStats| fmt_num(s.mean_nll)),
        ("predicted tokens", &|s: &PerplexityStats| {
            s.predicted_tokens.to_string()
        }),
        ("windows", &|s: &PerplexityStats| s.windows.to_string()),
        ("seq_len", &|s: &PerplexityStats| s.seq_len.to_string()),
        ("text", &|s: &PerplexityStats| s.text.clone()),
    ] {
        let mut row = vec![label.to_string()];
        row.extend(cell(f));
        rows.push(row);
    }
    rows
}

fn kld_sections(k: &KldStats) -> Vec<Section> {
    let est = |label: &str, e: &Estimate| vec![label.to_string(), fmt_est(e)];
    let ppl = vec![
        est("Mean PPL(Q)", &k.mean_ppl_q),
        est("Mean PPL(base)", &k.mean_ppl_base),
        vec![
            "Cor(ln(PPL(Q)), ln(PPL(base)))".into(),
            fmt_num(k.cor_ln_ppl),
        ],
        est("Mean ln(PPL(Q)/PPL(base))", &k.mean_ln_ppl_ratio),
        est("Mean PPL(Q)/PPL(base)", &k.mean_ppl_ratio),
        est("Mean PPL(Q)-PPL(base)", &k.mean_ppl_diff),
    ];
    let mut kld = vec![est("Mean KLD", &k.mean_kld)];
    kld.extend(
        k.kld_lines()
            .iter()
            .map(|(l, v)| vec![l.to_string(), fmt_num(*v)]),
    );
    let mut dp = vec![est("Mean Δp", &k.mean_delta_p)];
    dp.extend(
        k.delta_p_lines()
            .iter()
            .map(|(l, v)| vec![l.to_string(), fmt_num(*v)]),
    );
    dp.push(est("RMS Δp", &k.rms_delta_p));
    dp.push(est("Same top p", &k.same_top_p));
    vec![
        Section::new(3, "Perplexity statistics (llama.cpp fields)")
            .intro(format!("{} scored positions; KL(base ‖ model). Probabilities as fractions (llama.cpp prints %).", k.tokens))
            .table(&["statistic", "value"], ppl),
        Section::new(3, "KL divergence statistics").table(&["statistic", "value"], kld),
        Section::new(3, "Token probability statistics").table(&["statistic", "value"], dp),
    ]
}

/// The report's sections in display order.
pub fn sections(r: &Report) -> Vec<Section> {
    let p = &r.provenance;
    let mut prov = vec![
        vec!["tool".into(), format!("{} {}", p.tool, p.version)],
        vec!["model".into(), p.model.clone()],
    ];
    if let Some(b) = &p.base_model {
        prov.push(vec!["base model".into(), b.clone()]);
    }
    if let Some(c) = &p.calibration {
        prov.push(vec![
            "calibration".into(),
            format!(
                "{}: {} samples × {} tokens, seed {}",
                c.source, c.samples, c.seq_len, c.seed
            ),
        ]);
    }
    prov.push(vec!["date".into(), p.date.clone()]);
    prov.push(vec!["machine".into(), p.machine.clone()]);
    let mut out = vec![Section::new(2, "Provenance").table(&["", ""], prov)];
    if let Some(recipe) = &p.recipe {
        let mut s = Section::new(3, "Recipe");
        s.code = Some(recipe.clone());
        out.push(s);
    }

    if let Some(q) = &r.quality {
        out.push(Section::new(2, "Quality: dense vs compressed").table(
            &["", "base (dense)", "this model"],
            ppl_rows(q.base_perplexity.as_ref(), &q.perplexity),
        ));
        if let Some(k) = &q.kld {
            out.extend(kld_sections(k));
        }
    }

    if !r.tasks.is_empty() {
        let with_base = r.tasks.iter().any(|t| t.base_metrics.is_some());
        let rows = r
            .tasks
            .iter()
            .flat_map(|t| {
                t.metrics.iter().map(move |(m, v)| {
                    let mut row = vec![t.name.clone(), t.kind.clone(), t.n.to_string(), m.clone()];
                    if with_base {
                        row.push(
                            t.base_metrics
                                .as_ref()
                                .and_then(|b| b.get(m))
                                .map_or_else(|| "–".into(), fmt_metric),
                        );
                    }
                    row.push(fmt_metric(v));
                    row
                })
            })
            .collect();
        let header: &[&str] = if with_base {
            &["task", "kind", "n", "metric", "base", "value ± stderr"]
        } else {
            &["task", "kind", "n", "metric", "value ± stderr"]
        };
        out.push(
            Section::new(2, "Tasks")
                .intro("Mean ± standard error over items (bootstrap stderr for medians).")
                .table(header, rows),
        );
    }

    // Only the quantities this run measured (an eval run has no linear byte counts).
    let t = &r.totals;
    let mut size: Vec<Vec<String>> = Vec::new();
    let mut row = |label: &str, value: Option<String>| {
        if let Some(v) = value {
            size.push(vec![label.into(), v]);
        }
    };
    row("parameters", (t.params > 0).then(|| t.params.to_string()));
    let bytes = |b: u64| (b > 0).then(|| b.to_string());
    row("linear bytes before", bytes(t.bytes_linear_before));
    row("linear bytes after", bytes(t.bytes_linear_after));
    row(
        "linear bytes, most compact layout",
        t.bytes_linear_compact.and_then(bytes),
    );
    row("size ratio (compact / before)", t.size_ratio().map(fmt_num));
    row(
        "wall time (s)",
        (t.seconds > 0.0).then(|| fmt_num(t.seconds)),
    );
    row("forward time (s)", t.forward_seconds.map(fmt_num));
    if !size.is_empty() {
        out.push(Section::new(2, "Size and time").table(&["", ""], size));
    }

    if !r.linears.is_empty() {
        let rows = r
            .linears
            .iter()
            .map(|l| {
                let pattern = match (&l.pattern, l.pattern_exact) {
                    (Some(p), Some(false)) => format!("{p} (tail group: not exactly {p})"),
                    (Some(p), _) => p.clone(),
                    (None, _) => "–".into(),
                };
                vec![
                    l.id.clone(),
                    format!("{}×{}", l.shape[0], l.shape[1]),
                    l.method.clone(),
                    pattern,
                    fmt_num(l.sparsity),
                    l.bits.map_or_else(|| "–".into(), |b| fmt_num(f64::from(b))),
                    opt(l.rel_error),
                    l.warnings.join("; "),
                ]
            })
            .collect();
        out.push(Section::new(2, "Linears").intro(error_intro(r)).table(
            &[
                "linear",
                "shape",
                "method",
                "N:M",
                "sparsity",
                "bits",
                "rel. error",
                "warnings",
            ],
            rows,
        ));
    }
    if !r.experts.is_empty() {
        let rows = r
            .experts
            .iter()
            .map(|e| {
                vec![
                    e.block.to_string(),
                    e.expert.to_string(),
                    e.tokens_routed.to_string(),
                    e.tokens_for_statistics.to_string(),
                    if e.fallbacks.is_empty() {
                        "–".into()
                    } else {
                        e.fallbacks.join("; ")
                    },
                ]
            })
            .collect();
        out.push(
            Section::new(2, "Experts")
                .intro(
                    "Calibration tokens per MoE expert: routed to it by the router, and used for \
                     its statistics (every token when calibrating all experts). An expert with \
                     no tokens for a data-driven step gets that step's data-free form.",
                )
                .table(
                    &[
                        "block",
                        "expert",
                        "tokens routed",
                        "tokens for statistics",
                        "data-free fallback",
                    ],
                    rows,
                ),
        );
    }
    if !r.expert_pruning.is_empty() {
        let rows = r
            .expert_pruning
            .iter()
            .map(|p| {
                let removed: Vec<String> = (0..p.scores.len())
                    .filter(|e| !p.kept.contains(e))
                    .map(|e| e.to_string())
                    .collect();
                let kept: Vec<String> = p.kept.iter().map(|e| e.to_string()).collect();
                let scores: Vec<String> = p.scores.iter().map(|x| fmt_num(*x)).collect();
                let tokens: Vec<String> = p.tokens_routed.iter().map(|t| t.to_string()).collect();
                vec![
                    p.block.to_string(),
                    p.saliency.clone(),
                    kept.join(", "),
                    removed.join(", "),
                    scores.join(", "),
                    tokens.join(", "),
                ]
            })
            .collect();
        out.push(
            Section::new(2, "Expert pruning")
                .intro(
                    "Original expert indices; the output renumbers the kept experts in order. \
                     Scores and routed tokens are per original expert.",
                )
                .table(
                    &[
                        "block",
                        "saliency",
                        "kept",
                        "removed",
                        "scores",
                        "tokens routed",
                    ],
                    rows,
                ),
        );
    }
    if let Some(g) = &r.gguf {
        let types: Vec<String> = g
            .tensors_by_type
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        let mut rows = vec![
            vec!["file".to_string(), g.file.clone()],
            vec!["type".into(), g.ty.clone()],
            vec!["llama.cpp architecture".into(), g.architecture.clone()],
            vec![
                "tensors".into(),
                format!("{} ({})", g.tensors, types.join(", ")),
            ],
            vec!["bytes".into(), g.bytes.to_string()],
            vec![
                "quantised linears re-packed exactly".into(),
                g.exact.to_string(),
            ],
            vec![
                "tensors quantised by llama.cpp's RTN here".into(),
                if g.requantised.is_empty() {
                    "none".into()
                } else {
                    g.requantised.join(", ")
                },
            ],
        ];
        rows.extend(g.notes.iter().map(|n| vec!["note".to_string(), n.clone()]));
        out.push(
            Section::new(2, "GGUF")
                .intro(
                    "The llama.cpp file written beside the checkpoint. The figures above evaluate \
                     the checkpoint; the GGUF holds the same quantised linears bit for bit, and \
                     any tensor listed as quantised here by RTN differs from it.",
                )
                .table(&["", ""], rows),
        );
    }
    if let Some(a) = &r.allocation {
        let mut rows = Vec::new();
        if let Some(steps) = a.get("steps").and_then(|v| v.as_object()) {
            for (step, linears) in steps {
                for (id, set) in linears.as_object().into_iter().flatten() {
                    let what = set
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    rows.push(vec![format!("steps[{step}]"), id.clone(), what]);
                }
            }
        }
        if let Some(p) = a.get("protected").and_then(|v| v.as_object()) {
            for (id, why) in p {
                let why = why.as_str().unwrap_or_default();
                rows.push(vec!["all".into(), id.clone(), format!("protected: {why}")]);
            }
        }
        out.push(
            Section::new(2, "Allocation")
                .intro("Per-linear settings decided before the block loop.")
                .table(&["step", "linear", "settings"], rows),
        );
    }
    if let Some(a) = &r.allocation {
        out.extend(profile_sections(a, r));
    }
    if !r.blocks.is_empty() {
        let rows = r
            .blocks
            .iter()
            .map(|b| vec![b.block.to_string(), fmt_num(b.seconds)])
            .collect();
        out.push(Section::new(2, "Blocks").table(&["block", "seconds"], rows));
    }
    if !r.notes.is_empty() {
        let mut s = Section::new(2, "Notes");
        s.items = r.notes.clone();
        out.push(s);
    }
    out
}

/// The pre-passes' sections: OWL's per-block outlier ratios and allocation with the sparsity
/// reached, and where each GBLM step's gradients came from.
fn profile_sections(a: &serde_json::Value, r: &Report) -> Vec<Section> {
    let mut out = Vec::new();
    let profiles = a.get("profiles").and_then(|v| v.as_array());
    for p in profiles.into_iter().flatten() {
        let step = p.get("step").map(|v| v.to_string()).unwrap_or_default();
        match p.get("profile").and_then(|v| v.as_str()) {
            Some("owl") => {
                let blocks = p.get("blocks").and_then(|v| v.as_array());
                let rows: Vec<Vec<String>> = blocks
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        let num = |k: &str| b.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
                        let pattern = b.get("pattern").and_then(|v| v.as_str()).unwrap_or("");
                        vec![
                            b.get("block").map(|v| v.to_string()).unwrap_or_default(),
                            format!("{:.3}", num("outlier_ratio")),
                            format!("{:.4}", num("sparsity")),
                            pattern.to_string(),
                        ]
                    })
                    .collect();
                let (zeros, total) = r.linears.iter().fold((0.0, 0.0), |(z, t), l| {
                    let n = (l.shape[0] * l.shape[1]) as f64;
                    (z + l.sparsity * n, t + n)
                });
                let target = p.get("target_sparsity").and_then(|v| v.as_f64());
                let intro = format!(
                    "OWL (outlier-weighed layer-wise sparsity) for steps[{step}]: outlier ratio D_l                      (% of Wanda scores above m = {} × the block mean) and the sparsity each block                      was given (λ = {}). Target {}; reached over all compressed linears: {:.4}.",
                    p.get("m").map(|v| v.to_string()).unwrap_or_default(),
                    p.get("lambda").map(|v| v.to_string()).unwrap_or_default(),
                    target.map(|t| format!("{t:.4}")).unwrap_or_default(),
                    if total > 0.0 { zeros / total } else { f64::NAN }
                );
                out.push(
                    Section::new(2, "OWL layer-wise sparsity")
                        .intro(&intro)
                        .table(&["block", "D_l (%)", "sparsity", "pattern"], rows),
                );
            }
            Some("gradients") => {
                let field = |k: &str| match p.get(k) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) if !v.is_null() => v.to_string(),
                    _ => String::new(),
                };
                let rows = [
                    "file",
                    "samples",
                    "seq_len",
                    "alpha",
                    "mean_loss",
                    "seconds",
                ]
                .iter()
                .map(|k| {
                    let k = if *k == "samples" && p.get("sequences").is_some() {
                        "sequences"
                    } else {
                        k
                    };
                    vec![k.to_string(), field(k)]
                })
                .collect();
                out.push(
                    Section::new(2, "Gradients")
                        .intro(&format!(
                            "GBLM's per-weight gradient magnitudes for steps[{step}]: the dense model's                              causal-LM loss, one backward per calibration sequence."
                        ))
                        .table(&["", ""], rows),
                );
            }
            Some("maskllm-end-to-end") => {
                let field = |k: &str| match p.get(k) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(serde_json::Value::Number(n)) => match n.as_f64() {
                        Some(f) if n.is_f64() => format!("{f:.4}"),
                        _ => n.to_string(),
                    },
                    _ => String::new(),
                };
                let rows = [
                    ("linears", "linears"),
                    ("weights", "weights"),
                    ("iterations", "iterations"),
                    ("sequences per iteration", "batch"),
                    ("loss", "loss"),
                    ("mean loss, first tenth (nats)", "loss_first"),
                    ("mean loss, last tenth (nats)", "loss_last"),
                    ("calibration sequences", "sequences"),
                    ("seq_len", "seq_len"),
                    ("seconds", "seconds"),
                    ("of which masks (sampling, updates)", "mask_seconds"),
                    ("of which the model (forward, backward)", "model_seconds"),
                ]
                .iter()
                .map(|(label, k)| vec![label.to_string(), field(k)])
                .collect();
                out.push(
                    Section::new(2, "MaskLLM end to end")
                        .intro(&format!(
                            "steps[{step}]: every targeted linear's mask logits trained together on \
                             the whole model's loss through the streamed backward, before the block \
                             loop; the block loop applied the argmax masks."
                        ))
                        .table(&["", ""], rows),
                );
            }
            _ => {}
        }
    }
    out
}

/// Escapes a Markdown table cell (pipes and line breaks).
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', "<br>")
}

/// Renders sections as GitHub-flavoured Markdown under a `# title`.
pub fn render_markdown(title: &str, sections: &[Section]) -> String {
    let mut md = format!("# {title}\n");
    for s in sections {
        md.push_str(&format!(
            "\n{} {}\n\n",
            "#".repeat(usize::from(s.level)),
            s.title
        ));
        if let Some(i) = &s.intro {
            md.push_str(&format!("{i}\n\n"));
        }
        if let Some(t) = &s.table {
            md.push_str(&format!(
                "| {} |\n",
                t.headers
                    .iter()
                    .map(|h| cell(h))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            md.push_str(&format!("|{}\n", "---|".repeat(t.headers.len())));
            for row in &t.rows {
                md.push_str(&format!(
                    "| {} |\n",
                    row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                ));
            }
        }
        if let Some(c) = &s.code {
            let fence = if c.contains("```") { "~~~~" } else { "```" };
            md.push_str(&format!("{fence}yaml\n{}\n{fence}\n", c.trim_end()));
        }
        for i in &s.items {
            md.push_str(&format!("- {}\n", i.replace('\n', " ")));
        }
    }
    md
}

impl Report {
    /// Page title: "pare report: <model>".
    pub fn title(&self) -> String {
        format!("pare report: {}", self.provenance.model)
    }

    /// Markdown: provenance, dense vs compressed quality, KLD statistics, tasks, size, linears.
    pub fn to_markdown(&self) -> String {
        render_markdown(&self.title(), &sections(self))
    }
}

/// Every number under a JSON value, formatted as the renderers print it (integers as written,
/// floats with [`fmt_num`]). Lets a check confirm that report.json, report.md and report.html
/// carry the same numbers.
pub fn rendered_numbers(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Number(n) => out.push(match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => fmt_num(f),
            _ => n.to_string(),
        }),
        serde_json::Value::Array(a) => a.iter().for_each(|x| rendered_numbers(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| rendered_numbers(x, out)),
        _ => {}
    }
}

/// The linears table's intro: what `rel_error` is and how many calibration tokens it saw.
fn error_intro(r: &Report) -> String {
    match r.provenance.calibration.as_ref().map(|c| c.error_tokens) {
        Some(n) if n > 0 => format!(
            "Relative error = ‖WX − W′X‖ / ‖WX‖ on the first {n} calibration tokens at each \
             linear's input."
        ),
        _ => "Relative error = ‖WX − W′X‖ / ‖WX‖ on calibration inputs.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(12.3456), "12.35");
        assert_eq!(fmt_num(0.0125), "0.0125");
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(-0.5), "-0.5");
        assert_eq!(fmt_num(1234.6), "1235");
        assert_eq!(fmt_num(0.00001234), "1.234e-5");
        assert_eq!(fmt_num(f64::NAN), "nan");
        assert_eq!(fmt_num(0.0), "0");
    }

    #[test]
    fn markdown_table_escapes_pipes() {
        let s = Section::new(2, "T").table(&["a"], vec![vec!["x|y".into()]]);
        let md = render_markdown("t", &[s]);
        assert!(md.contains("| x\\|y |"), "{md}");
        assert!(md.starts_with("# t\n\n## T\n"));
    }
}
