//! HTML rendering with minijinja: templates embedded from `templates/*.html` (names end in
//! `.html`, so autoescaping is on), plots inlined as SVG. One self-contained file, no scripts.

use minijinja::{Environment, Value, context};

use super::markdown::{Section, sections};
use super::plots;
use super::types::Report;
use crate::error::{PareError, Result};

/// An inline SVG figure.
pub struct Figure {
    /// The `<svg>…</svg>` markup, inserted unescaped.
    pub svg: String,
    pub caption: String,
}

fn template_env() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    for (name, src) in [
        ("_style.html", include_str!("templates/_style.html")),
        ("_sections.html", include_str!("templates/_sections.html")),
        ("report.html", include_str!("templates/report.html")),
        ("comparison.html", include_str!("templates/comparison.html")),
    ] {
        env.add_template(name, src)
            .map_err(|e| PareError::Internal(format!("report template {name}: {e}")))?;
    }
    Ok(env)
}

/// A section as a template value (minijinja is built without its serde feature).
fn section_value(s: &Section) -> Value {
    let table = s.table.as_ref().map(|t| {
        let rows: Vec<Value> = t.rows.iter().map(|r| Value::from(r.clone())).collect();
        context! { headers => Value::from(t.headers.clone()), rows }
    });
    context! {
        level => s.level,
        title => s.title.clone(),
        intro => s.intro.clone(),
        table,
        code => s.code.clone(),
        items => Value::from(s.items.clone()),
    }
}

/// Renders the embedded template `name` with a title, sections and figures.
pub fn render_page(
    name: &str,
    title: &str,
    sections: &[Section],
    figures: Vec<Figure>,
) -> Result<String> {
    let env = template_env()?;
    let tmpl = env
        .get_template(name)
        .map_err(|e| PareError::Internal(format!("report template {name}: {e}")))?;
    let plots: Vec<Value> = figures
        .into_iter()
        .map(|f| context! { svg => Value::from_safe_string(f.svg), caption => f.caption })
        .collect();
    let tool = format!("pare {}", crate::VERSION);
    let sections: Vec<Value> = sections.iter().map(section_value).collect();
    tmpl.render(context! { title, sections, plots, tool })
        .map_err(|e| PareError::Internal(format!("rendering {name}: {e}")))
}

/// The figures of a single report: error and sparsity by layer, and dense vs this model.
pub fn report_figures(r: &Report) -> Result<Vec<Figure>> {
    let mut figs = vec![];
    if let Some(svg) = plots::rel_error_plot(&r.linears)? {
        figs.push(Figure {
            svg,
            caption: "Relative reconstruction error of each linear, by decoder block.".into(),
        });
    }
    if let Some(svg) = plots::sparsity_plot(&r.linears)? {
        figs.push(Figure {
            svg,
            caption: "Fraction of zero weights of each linear, by decoder block.".into(),
        });
    }
    if let (Some(q), Some(ratio)) = (&r.quality, r.totals.size_ratio()) {
        let mut pts = vec![];
        if let Some(b) = &q.base_perplexity {
            pts.push(("dense".to_string(), 1.0, b.ppl));
        }
        pts.push(("this model".to_string(), ratio, q.perplexity.ppl));
        if let Some(svg) = plots::quality_vs_ratio_plot(&pts)? {
            figs.push(Figure {
                svg,
                caption: "Perplexity against the size of the linear layers.".into(),
            });
        }
    }
    Ok(figs)
}

impl Report {
    /// One self-contained HTML page: the Markdown report's tables plus inline SVG plots.
    pub fn to_html(&self) -> Result<String> {
        render_page(
            "report.html",
            &self.title(),
            &sections(self),
            report_figures(self)?,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_svg_is_not() {
        let mut r = Report::default();
        r.provenance.model = "<b>x</b>".into();
        r.notes.push("a < b & c".into());
        let html = r.to_html().unwrap();
        assert!(
            html.contains("&lt;b&gt;x&lt;&#x2f;b&gt;") || html.contains("&lt;b&gt;x&lt;/b&gt;"),
            "{html}"
        );
        assert!(html.contains("a &lt; b &amp; c"));
        assert!(html.starts_with("<!DOCTYPE html>"));
        let page = render_page(
            "report.html",
            "t",
            &[],
            vec![Figure {
                svg: "<svg></svg>".into(),
                caption: "c".into(),
            }],
        )
        .unwrap();
        assert!(page.contains("<svg></svg>"));
    }
}
