//! Several runs side by side (`pare compare`): one row per run with size ratio, perplexity, KLD
//! and task scores, sorted by quality at equal size; written as comparison.{json,md,html}.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::html::{Figure, render_page};
use super::markdown::{Section, Table, fmt_num, render_markdown};
use super::plots;
use super::types::Report;
use super::write_file;
use crate::error::Result;

/// One run of a comparison.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub name: String,
    /// Recipe file or name ("dense" for the reference).
    pub recipe: String,
    /// Compressed linear bytes over dense linear bytes (1 for the dense model).
    pub params_bytes_ratio: Option<f64>,
    pub ppl: Option<f64>,
    pub kld_mean: Option<f64>,
    /// Top-1 agreement with the base, as a fraction.
    pub same_top_p: Option<f64>,
    /// `"<task>/<metric>"` → value, for the headline metric(s) of each task.
    #[serde(default)]
    pub tasks: BTreeMap<String, f64>,
    /// Fraction of expert calls the run's ODP routing policy skipped in the evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub odp_skipped: Option<f64>,
}

/// Headline metrics per task kind, in column order.
fn headline_metrics(kind: &str) -> &'static [&'static str] {
    match kind {
        "multiple_choice" => &["acc", "acc_norm"],
        "qa" => &["em"],
        "retrieval" => &["em", "f1"],
        "agreement" => &["token_match"],
        _ => &[],
    }
}

impl ComparisonRow {
    /// The row of one run's report.
    pub fn from_report(name: &str, recipe: &str, r: &Report) -> Self {
        let mut tasks = BTreeMap::new();
        for t in &r.tasks {
            for m in headline_metrics(&t.kind) {
                if let Some(v) = t.metrics.get(*m) {
                    tasks.insert(format!("{}/{m}", t.name), v.value);
                }
            }
        }
        let kld = r.quality.as_ref().and_then(|q| q.kld.as_ref());
        ComparisonRow {
            name: name.to_string(),
            recipe: recipe.to_string(),
            params_bytes_ratio: r.totals.size_ratio(),
            ppl: r.quality.as_ref().map(|q| q.perplexity.ppl),
            kld_mean: kld.map(|k| k.mean_kld.value),
            same_top_p: kld.map(|k| k.same_top_p.value),
            tasks,
            odp_skipped: r
                .quality
                .as_ref()
                .and_then(|q| q.odp)
                .map(|o| o.skipped_fraction),
        }
    }
}

/// Runs compared side by side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub runs: Vec<ComparisonRow>,
}

/// Sort key: size ratio rounded to 2 decimals (unknown last), then perplexity (unknown last).
fn order(a: &ComparisonRow, b: &ComparisonRow) -> std::cmp::Ordering {
    let key = |r: &ComparisonRow| {
        (
            r.params_bytes_ratio
                .map_or(i64::MAX, |x| (x * 100.0).round() as i64),
            r.ppl.filter(|p| p.is_finite()).unwrap_or(f64::INFINITY),
        )
    };
    let (ka, kb) = (key(a), key(b));
    ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
}

impl Comparison {
    /// Rows sorted by quality at equal size: grouped by size ratio rounded to 2 decimals
    /// (ascending), then perplexity ascending within a group.
    pub fn sorted(&self) -> Vec<&ComparisonRow> {
        let mut rows: Vec<&ComparisonRow> = self.runs.iter().collect();
        rows.sort_by(|a, b| order(a, b));
        rows
    }

    /// Task columns present in any run, in name order.
    fn task_columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| r.tasks.keys().cloned())
            .collect();
        cols.sort();
        cols.dedup();
        cols
    }

    fn section(&self) -> Section {
        let opt = |x: Option<f64>| x.map_or_else(|| "–".to_string(), fmt_num);
        let cols = self.task_columns();
        let mut headers: Vec<String> = [
            "run",
            "recipe",
            "size ratio",
            "perplexity",
            "mean KLD",
            "same top p",
        ]
        .map(String::from)
        .to_vec();
        headers.extend(cols.iter().cloned());
        let odp = self.runs.iter().any(|r| r.odp_skipped.is_some());
        if odp {
            headers.push("expert calls skipped".into());
        }
        let rows = self
            .sorted()
            .into_iter()
            .map(|r| {
                let mut row = vec![
                    r.name.clone(),
                    r.recipe.clone(),
                    opt(r.params_bytes_ratio),
                    opt(r.ppl),
                    opt(r.kld_mean),
                    opt(r.same_top_p),
                ];
                row.extend(cols.iter().map(|c| opt(r.tasks.get(c).copied())));
                if odp {
                    row.push(opt(r.odp_skipped));
                }
                row
            })
            .collect();
        Section {
            level: 2,
            title: "Runs".into(),
            intro: Some(
                "Sorted by size ratio (compressed linear bytes / dense, rounded to 2 decimals), then perplexity."
                    .into(),
            ),
            table: Some(Table { headers, rows }),
            ..Default::default()
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The comparison table in Markdown.
    pub fn to_markdown(&self) -> String {
        render_markdown("pare comparison", &[self.section()])
    }

    /// A self-contained HTML page: the table and the quality-vs-ratio plot.
    pub fn to_html(&self) -> Result<String> {
        let pts: Vec<(String, f64, f64)> = self
            .runs
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.params_bytes_ratio?, r.ppl?)))
            .collect();
        let mut figs = vec![];
        if let Some(svg) = plots::quality_vs_ratio_plot(&pts)? {
            figs.push(Figure {
                svg,
                caption: "Perplexity against the size of the linear layers (lower left is better)."
                    .into(),
            });
        }
        // ODP runs: KLD against the fraction of expert calls skipped.
        let mut odp: Vec<(f64, f64)> = self
            .runs
            .iter()
            .filter_map(|r| Some((100.0 * r.odp_skipped?, r.kld_mean?)))
            .collect();
        if odp.len() >= 2 {
            odp.sort_by(|a, b| a.0.total_cmp(&b.0));
            figs.push(Figure {
                svg: plots::line_chart(
                    "KLD against skipped expert calls (ODP)",
                    "expert calls skipped (%)",
                    "mean KLD",
                    &[(String::new(), odp)],
                )?,
                caption: "Mean KLD against the dense model, per run with an online dynamic pruning policy, by the share of expert calls it skipped in the evaluation.".into(),
            });
        }
        render_page(
            "comparison.html",
            "pare comparison",
            &[self.section()],
            figs,
        )
    }
}

/// Writes comparison.json, comparison.md and comparison.html into `dir`.
pub fn write_comparison(dir: &Path, cmp: &Comparison) -> Result<()> {
    let html = cmp.to_html()?;
    write_file(dir, "comparison.json", &cmp.to_json())?;
    write_file(dir, "comparison.md", &cmp.to_markdown())?;
    write_file(dir, "comparison.html", &html)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, ratio: Option<f64>, ppl: Option<f64>) -> ComparisonRow {
        ComparisonRow {
            name: name.into(),
            recipe: format!("{name}.yaml"),
            params_bytes_ratio: ratio,
            ppl,
            ..Default::default()
        }
    }

    #[test]
    fn sorted_by_size_group_then_ppl() {
        let c = Comparison {
            runs: vec![
                row("a", Some(0.5), Some(12.0)),
                row("dense", Some(1.0), Some(8.0)),
                row("b", Some(0.501), Some(11.0)),
                row("c", Some(0.25), Some(30.0)),
                row("d", None, Some(1.0)),
                row("e", Some(0.5), None),
            ],
        };
        let names: Vec<&str> = c.sorted().iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["c", "b", "a", "e", "dense", "d"]);
        let md = c.to_markdown();
        let pos = |s: &str| md.find(&format!("| {s} |")).unwrap();
        assert!(pos("c") < pos("b") && pos("b") < pos("a"));
        let html = c.to_html().unwrap();
        assert!(html.contains("<svg") && html.contains("dense.yaml"));
        let back: Comparison = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn row_from_report_takes_headline_metrics() {
        use super::super::types::{KldStats, MetricValue, Quality, TaskResult};
        let mut r = Report::default();
        r.totals.bytes_linear_before = 200;
        r.totals.bytes_linear_after = 50;
        let mut kld = KldStats::default();
        kld.mean_kld.value = 0.03;
        kld.same_top_p.value = 0.9;
        r.quality = Some(Quality {
            kld: Some(kld),
            ..Default::default()
        });
        r.quality.as_mut().unwrap().perplexity.ppl = 9.5;
        let mut t = TaskResult {
            name: "cloze".into(),
            kind: "multiple_choice".into(),
            n: 2,
            ..Default::default()
        };
        t.metrics.insert(
            "acc".into(),
            MetricValue {
                value: 0.5,
                stderr: None,
            },
        );
        t.metrics.insert(
            "other".into(),
            MetricValue {
                value: 0.1,
                stderr: None,
            },
        );
        r.tasks.push(t);
        let row = ComparisonRow::from_report("x", "x.yaml", &r);
        assert_eq!(row.params_bytes_ratio, Some(0.25));
        assert_eq!(
            (row.ppl, row.kld_mean, row.same_top_p),
            (Some(9.5), Some(0.03), Some(0.9))
        );
        assert_eq!(row.tasks.len(), 1);
        assert_eq!(row.tasks["cloze/acc"], 0.5);
    }

    #[test]
    fn write_comparison_writes_three_files() {
        let dir = tempfile::tempdir().unwrap();
        write_comparison(
            dir.path(),
            &Comparison {
                runs: vec![row("a", Some(0.5), Some(3.0))],
            },
        )
        .unwrap();
        for f in ["comparison.json", "comparison.md", "comparison.html"] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
    }
}
