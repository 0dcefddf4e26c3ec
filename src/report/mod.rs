//! The run report: one serde `Report` (types), rendered to JSON, Markdown and a self-contained
//! HTML page with inline SVG plots; and the multi-run `Comparison`.

pub mod comparison;
pub mod html;
pub mod markdown;
pub mod plots;
pub mod types;

pub use comparison::{Comparison, ComparisonRow, write_comparison};
pub use types::*;

use std::path::Path;

use crate::error::{PareError, Result};

impl Report {
    /// Pretty-printed JSON (report.json).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail; fall back to compact form anyway.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Parses report.json text.
    pub fn from_json(text: &str) -> serde_json::Result<Report> {
        serde_json::from_str(text)
    }
}

/// Writes `name` in `dir`, creating `dir` if needed.
pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| PareError::io(format!("creating {}", dir.display()), e))?;
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| PareError::io(format!("writing {}", path.display()), e))
}

/// Writes report.json, report.md and report.html into `dir`.
pub fn write_report(dir: &Path, report: &Report) -> Result<()> {
    let html = report.to_html()?;
    write_file(dir, "report.json", &report.to_json())?;
    write_file(dir, "report.md", &report.to_markdown())?;
    write_file(dir, "report.html", &html)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn est(value: f64, unc: f64) -> Estimate {
        Estimate { value, unc }
    }

    /// A report with every field filled by distinctive numbers.
    pub(crate) fn sample_report() -> Report {
        let kld = KldStats {
            tokens: 65_432,
            mean_ppl_q: est(13.57, 0.0913),
            mean_ppl_base: est(12.34, 0.0871),
            cor_ln_ppl: 0.9876,
            mean_ln_ppl_ratio: est(0.0951, 0.00123),
            mean_ppl_ratio: est(1.0998, 0.00135),
            mean_ppl_diff: est(1.23, 0.0177),
            mean_kld: est(0.04321, 0.000456),
            max_kld: 7.891,
            kld_p99_9: 2.345,
            kld_p99: 0.8765,
            kld_p95: 0.1789,
            kld_p90: 0.1012,
            median_kld: 0.02468,
            kld_p10: 0.001357,
            kld_p5: 0.0007531,
            kld_p1: 0.0002468,
            kld_p0_1: 0.00003579,
            min_kld: -0.00000123,
            mean_delta_p: est(-0.003141, 0.0002718),
            max_delta_p: 0.6543,
            delta_p_p99_9: 0.4142,
            delta_p_p99: 0.2236,
            delta_p_p95: 0.07071,
            delta_p_p90: 0.03162,
            delta_p_p75: 0.005772,
            median_delta_p: -0.0001414,
            delta_p_p25: -0.006931,
            delta_p_p10: -0.03734,
            delta_p_p5: -0.05772,
            delta_p_p1: -0.1618,
            delta_p_p0_1: -0.3679,
            min_delta_p: -0.7654,
            rms_delta_p: est(0.05432, 0.000987),
            same_top_p: est(0.9123, 0.00111),
        };
        let ppl = |ppl: f64, nll: f64| PerplexityStats {
            text: "../shared/data/tinystories/tinystories_eval.txt".into(),
            seq_len: 512,
            windows: 217,
            predicted_tokens: 110_887,
            mean_nll: nll,
            ppl,
        };
        let mut tasks = vec![];
        let mut t = TaskResult {
            name: "tinystories-cloze".into(),
            kind: "multiple_choice".into(),
            n: 48,
            ..Default::default()
        };
        t.metrics.insert(
            "acc".into(),
            MetricValue {
                value: 0.6458,
                stderr: Some(0.06976),
            },
        );
        t.metrics.insert(
            "acc_norm".into(),
            MetricValue {
                value: 0.7083,
                stderr: Some(0.06632),
            },
        );
        tasks.push(t);
        let mut t = TaskResult {
            name: "tinystories-agreement".into(),
            kind: "agreement".into(),
            n: 22,
            ..Default::default()
        };
        t.metrics.insert(
            "first_divergence_median".into(),
            MetricValue {
                value: 11.5,
                stderr: Some(2.468),
            },
        );
        t.metrics.insert(
            "token_match".into(),
            MetricValue {
                value: 0.5217,
                stderr: None,
            },
        );
        tasks.push(t);
        let lm_eval_results = crate::eval::tasks::lm_eval_results(&tasks);
        Report {
            allocation: None,
            gguf: None,
            provenance: Provenance {
                tool: "pare".into(),
                version: crate::VERSION.into(),
                model: "out/stories260k-wanda".into(),
                base_model: Some("../shared/models/stories260k".into()),
                recipe: Some("steps:\n  - wanda: { sparsity: 0.5, pattern: \"2:4\" }\n".into()),
                calibration: Some(CalibrationInfo {
                    source: "../shared/data/wikitext-2-raw/wiki.valid.raw".into(),
                    samples: 128,
                    seq_len: 256,
                    seed: 31337,
                    error_tokens: 1024,
                }),
                date: "2025-01-02T03:04:05Z".into(),
                machine: "host01 / x86_64 / 2 threads".into(),
            },
            quality: Some(Quality {
                perplexity: ppl(13.57, 2.608),
                base_perplexity: Some(ppl(12.34, 2.513)),
                kld: Some(kld),
                odp: None,
            }),
            tasks,
            lm_eval_results,
            linears: vec![
                LinearReport {
                    id: "blocks.0.attn.q".into(),
                    shape: [64, 48],
                    method: "wanda 2:4".into(),
                    sparsity: 0.5,
                    bits: None,
                    pattern: Some("2:4".into()),
                    pattern_exact: Some(true),
                    rel_error: Some(0.1234),
                    warnings: vec![],
                },
                LinearReport {
                    id: "blocks.1.attn.q".into(),
                    shape: [64, 48],
                    method: "wanda 2:4 + gptq int4-g128-sym".into(),
                    sparsity: 0.5001,
                    bits: Some(4.25),
                    pattern: Some("2:4".into()),
                    pattern_exact: Some(true),
                    rel_error: Some(0.2345),
                    warnings: vec!["hessian damped 3 times".into()],
                },
                LinearReport {
                    id: "blocks.0.mlp.down".into(),
                    shape: [48, 172],
                    method: "wanda 2:4".into(),
                    sparsity: 0.4999,
                    bits: None,
                    pattern: Some("2:4".into()),
                    pattern_exact: Some(true),
                    rel_error: Some(0.3456),
                    warnings: vec![],
                },
            ],
            expert_pruning: vec![ExpertPruneReport {
                block: 0,
                saliency: "reap".into(),
                kept: vec![0, 2],
                scores: vec![1.5, 0.25, 3.0],
                tokens_routed: vec![4, 1, 3],
            }],
            experts: vec![ExpertReport {
                block: 0,
                expert: 3,
                tokens_routed: 0,
                tokens_for_statistics: 0,
                fallbacks: vec!["gptq → rtn (gate, up, down)".into()],
            }],
            blocks: vec![
                BlockTiming {
                    block: 0,
                    seconds: 1.375,
                },
                BlockTiming {
                    block: 1,
                    seconds: 1.625,
                },
            ],
            totals: Totals {
                seconds: 9.875,
                forward_seconds: Some(4.125),
                params: 260_123,
                bytes_linear_before: 1_048_576,
                bytes_linear_after: 589_824,
                bytes_linear_compact: None,
            },
            notes: vec!["perplexity protocol: pruning-paper windows, not llama.cpp's".into()],
        }
    }

    #[test]
    fn every_json_number_is_in_markdown_and_html() {
        let r = sample_report();
        let json = r.to_json();
        let md = r.to_markdown();
        let html = r.to_html().unwrap();
        let mut nums = vec![];
        markdown::rendered_numbers(&serde_json::from_str(&json).unwrap(), &mut nums);
        assert!(nums.len() > 80, "{}", nums.len());
        for n in &nums {
            assert!(md.contains(n.as_str()), "markdown lacks {n}");
            assert!(html.contains(n.as_str()), "html lacks {n}");
        }
        // size ratio 589824 / 1048576 = 0.5625
        assert!(
            md.contains("| size ratio (compact / before) | 0.5625 |"),
            "{md}"
        );
        assert!(md.contains("| perplexity | 12.34 | 13.57 |"));
        assert!(
            md.contains("| tinystories-cloze | multiple_choice | 48 | acc | 0.6458 ± 0.06976 |")
        );
        assert!(md.contains("```yaml\nsteps:"));
    }

    #[test]
    fn html_is_self_contained_with_plots() {
        let html = sample_report().to_html().unwrap();
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert_eq!(
            html.matches("<svg").count(),
            3,
            "error, sparsity and quality plots"
        );
        for bad in [
            "http://", "https://", "<script", "<link", "src=", "@import", "url(",
        ] {
            assert!(!html.contains(bad), "html contains {bad}");
        }
        // a report with no linears and no quality renders without plots
        let html = Report::default().to_html().unwrap();
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn json_round_trip_and_lm_eval_subtree() {
        let r = sample_report();
        let back = Report::from_json(&r.to_json()).unwrap();
        assert_eq!(back, r);
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(
            v["lm_eval_results"]["tinystories-cloze"]["acc_norm,none"],
            0.7083
        );
        assert_eq!(
            v["lm_eval_results"]["tinystories-agreement"]["token_match_stderr,none"],
            "N/A"
        );
        assert_eq!(v["quality"]["kld"]["kld_p99_9"], 2.345);
        assert_eq!(v["quality"]["kld"]["same_top_p"]["unc"], 0.00111);
        // an empty report (what `pare compress` without eval might fill) also round-trips
        let empty = Report::default();
        assert_eq!(Report::from_json(&empty.to_json()).unwrap(), empty);
    }

    #[test]
    fn write_report_writes_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("run");
        write_report(&sub, &sample_report()).unwrap();
        for f in ["report.json", "report.md", "report.html"] {
            assert!(sub.join(f).is_file(), "{f}");
        }
        let text = std::fs::read_to_string(sub.join("report.json")).unwrap();
        assert_eq!(Report::from_json(&text).unwrap(), sample_report());
    }
}
