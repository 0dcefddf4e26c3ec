//! SVG plots for the HTML report, drawn with plotters into a `String`: per-linear reconstruction
//! error and sparsity by layer, and quality against compression ratio. Text is measured with the
//! DejaVu Sans font embedded by the `dejavu` crate (no system fonts).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

use super::types::LinearReport;
use crate::error::{PareError, Result};

const SIZE: (u32, u32) = (760, 420);

/// Registers DejaVu Sans as "sans-serif" once; plotters' ab_glyph backend needs it for any text.
fn ensure_font() -> Result<()> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok = *OK.get_or_init(|| {
        register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(PareError::Internal(
            "plot: the embedded DejaVu Sans font failed to load".into(),
        ))
    }
}

fn plot_err(title: &str) -> impl Fn(String) -> PareError + '_ {
    move |e| PareError::Internal(format!("plot \"{title}\": {e}"))
}

/// `(min, max)` of finite values padded by 5 % (or ±0.5 when flat).
fn padded_range(vals: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if floor_zero && lo >= 0.0 {
        lo = 0.0;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 0.5 };
    (
        if floor_zero && lo == 0.0 {
            0.0
        } else {
            lo - pad
        },
        hi + pad,
    )
}

/// Plotters emits `xmlns="http://…"`; inline SVG in HTML5 does not need it, and dropping it keeps
/// the page free of anything that looks like an external URL.
fn tidy_svg(svg: String) -> String {
    svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1)
}

/// Width of the legend column right of a line chart's plot area.
const LEGEND_WIDTH: u32 = 120;

/// Lines with markers against an integer x (block index), one series per name, legend in its
/// own column right of the plot (so it never hides data).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<String> {
    ensure_font()?;
    let err = plot_err(title);
    let (x0, x1) = padded_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.0)), false);
    let (y0, y1) = padded_range(series.iter().flat_map(|s| s.1.iter().map(|p| p.1)), true);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let legend = series.len() > 1 || series.first().is_some_and(|s| !s.0.is_empty());
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(|e| err(e.to_string()))?;
        let (plot_area, legend_area) = if legend {
            root.split_horizontally(SIZE.0 - LEGEND_WIDTH)
        } else {
            root.split_horizontally(SIZE.0)
        };
        let mut chart = ChartBuilder::on(&plot_area)
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(e.to_string()))?;
        // x is a block index: label integer ticks only.
        let int_label = |x: &f64| {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round())
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(((x1 - x0).round() as usize + 1).clamp(2, 24))
            .x_label_formatter(&int_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .copied()
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| err(e.to_string()))?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(e.to_string()))?;
            if legend {
                // One row per series, from the top of the plot area.
                let y = 24 + 20 * i as i32;
                legend_area
                    .draw(
                        &(EmptyElement::at((4, y))
                            + PathElement::new(vec![(0, 0), (18, 0)], color.stroke_width(2))
                            + Circle::new((9, 0), 3, color.filled())
                            + Text::new(
                                name.clone(),
                                (24, 0),
                                ("sans-serif", 13)
                                    .into_font()
                                    .into_text_style(&legend_area)
                                    .pos(Pos::new(HPos::Left, VPos::Center)),
                            )),
                    )
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(tidy_svg(svg))
}

/// Labelled points (no lines): `(label, x, y)`.
pub fn labelled_scatter(
    title: &str,
    x_label: &str,
    y_label: &str,
    points: &[(String, f64, f64)],
) -> Result<String> {
    ensure_font()?;
    let err = plot_err(title);
    let pts: Vec<&(String, f64, f64)> = points
        .iter()
        .filter(|p| p.1.is_finite() && p.2.is_finite())
        .collect();
    let (x0, x1) = padded_range(pts.iter().map(|p| p.1).chain([0.0, 1.05]), true);
    let (y0, y1) = padded_range(pts.iter().map(|p| p.2), false);
    // Room above the highest point for its label.
    let y1 = y1 + (y1 - y0) * 0.05;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        for (i, p) in pts.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(std::iter::once(Circle::new((p.1, p.2), 5, color.filled())))
                .map_err(|e| err(e.to_string()))?;
        }
        // Labels in pixel space: right of the point (left of it near the right edge), moved down
        // past labels they would overlap, so runs of equal size stay readable.
        let style = ("sans-serif", 13).into_font().into_text_style(&root);
        let xr = chart.plotting_area().get_pixel_range().0;
        let (px0, px1) = (xr.start, xr.end);
        let mut placed: Vec<(i32, i32, i32, i32)> = vec![];
        let mut order: Vec<(i32, i32, &str)> = pts
            .iter()
            .map(|p| {
                let (x, y) = chart.backend_coord(&(p.1, p.2));
                (x, y, p.0.as_str())
            })
            .collect();
        order.sort_by_key(|&(x, y, _)| (y, x));
        for (x, y, label) in order {
            let (w, h) = root
                .estimate_text_size(label, &style)
                .map_err(|e| err(e.to_string()))?;
            let (w, h) = (w as i32, h as i32);
            let lx = if x + 8 + w <= px1 || x - 8 - w < px0 {
                x + 8
            } else {
                x - 8 - w
            };
            let mut ly = y - h / 2;
            while let Some(b) = placed
                .iter()
                .find(|b| lx < b.2 && b.0 < lx + w && ly < b.3 && b.1 < ly + h)
            {
                ly = b.3 + 1;
            }
            placed.push((lx, ly, lx + w, ly + h));
            root.draw_text(label, &style, (lx, ly))
                .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(tidy_svg(svg))
}

/// Block index of a canonical id `blocks.<b>.<role>` and the role, or `None` for other ids.
fn block_and_role(id: &str) -> Option<(usize, &str)> {
    let rest = id.strip_prefix("blocks.")?;
    let (b, role) = rest.split_once('.')?;
    Some((b.parse().ok()?, role))
}

/// Series by role (`attn.q`, `mlp.down` …) of `value(linear)` against block index.
fn by_role(
    linears: &[LinearReport],
    value: impl Fn(&LinearReport) -> Option<f64>,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut map: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for l in linears {
        if let (Some((b, role)), Some(v)) = (block_and_role(&l.id), value(l)) {
            map.entry(role.to_string()).or_default().push((b as f64, v));
        }
    }
    map.into_iter().collect()
}

/// Relative reconstruction error of each linear by layer, one line per role; `None` when no
/// linear has a measured error.
pub fn rel_error_plot(linears: &[LinearReport]) -> Result<Option<String>> {
    let series = by_role(linears, |l| l.rel_error);
    if series.is_empty() {
        return Ok(None);
    }
    line_chart(
        "Relative reconstruction error by layer",
        "block",
        "‖WX − W′X‖ / ‖WX‖",
        &series,
    )
    .map(Some)
}

/// Sparsity of each linear by layer; `None` when every linear is dense.
pub fn sparsity_plot(linears: &[LinearReport]) -> Result<Option<String>> {
    if linears.iter().all(|l| l.sparsity == 0.0) {
        return Ok(None);
    }
    let series = by_role(linears, |l| Some(l.sparsity));
    if series.is_empty() {
        return Ok(None);
    }
    line_chart(
        "Sparsity by layer",
        "block",
        "fraction of zero weights",
        &series,
    )
    .map(Some)
}

/// Perplexity against linear-size ratio for labelled runs; `None` without any finite point.
pub fn quality_vs_ratio_plot(points: &[(String, f64, f64)]) -> Result<Option<String>> {
    if !points.iter().any(|p| p.1.is_finite() && p.2.is_finite()) {
        return Ok(None);
    }
    labelled_scatter(
        "Quality vs compression",
        "linear bytes after / before",
        "perplexity",
        points,
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lin(id: &str, sparsity: f64, err: Option<f64>) -> LinearReport {
        LinearReport {
            id: id.into(),
            shape: [4, 4],
            method: "m".into(),
            sparsity,
            rel_error: err,
            ..Default::default()
        }
    }

    #[test]
    fn error_plot_is_an_svg_with_text() {
        let ls = [
            lin("blocks.0.attn.q", 0.5, Some(0.1)),
            lin("blocks.1.attn.q", 0.5, Some(0.2)),
            lin("blocks.0.mlp.down", 0.5, Some(0.3)),
            lin("lm_head", 0.0, Some(0.9)),
        ];
        let svg = rel_error_plot(&ls).unwrap().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("<text") && svg.contains("attn.q") && svg.contains("mlp.down"));
        assert!(!svg.contains("http"));
        assert!(sparsity_plot(&ls).unwrap().is_some());
        assert!(
            sparsity_plot(&[lin("blocks.0.attn.q", 0.0, None)])
                .unwrap()
                .is_none()
        );
        assert!(
            rel_error_plot(&[lin("blocks.0.attn.q", 0.0, None)])
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn scatter_handles_single_and_nan_points() {
        let svg =
            quality_vs_ratio_plot(&[("dense".into(), 1.0, 10.0), ("x".into(), f64::NAN, 3.0)])
                .unwrap()
                .unwrap();
        assert!(svg.contains("dense"));
        assert!(
            quality_vs_ratio_plot(&[("x".into(), f64::NAN, 3.0)])
                .unwrap()
                .is_none()
        );
        assert_eq!(
            block_and_role("blocks.12.moe.experts.3.up"),
            Some((12, "moe.experts.3.up"))
        );
    }
}
