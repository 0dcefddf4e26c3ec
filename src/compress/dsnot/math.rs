//! Pure math of DSnoT (ALGORITHMS.md §5): the per-row prune-and-grow cycle on a fixed number
//! of pruned weights, unstructured and N:M.
//!
//! For row `i` with original weights `w⁰`, current weights `w` (pruned entries 0) and the
//! per-column input mean `μ` (`(1/n_seqs) Σ_t x_t`, the reference's units), the expected
//! reconstruction error is `ε = Σ_j (w⁰_j − w_j) μ_j`; with a mask-only initial step (magnitude,
//! Wanda) that is the reference's `Σ_{pruned} w_j μ_j`. Restoring pruned `r` to its original
//! value changes it by `−w⁰_r μ_r`; pruning kept `q` by `+w_q μ_q`.
//!
//! * **Regrow** (from the pruned entries, sorted by `w⁰_j μ_j / σ²_j^γ` ascending): from the top
//!   when `ε > 0`, from the bottom otherwise.
//! * **Prune**, unstructured: the kept weight with the smallest Wanda score among those whose
//!   contribution `w_j μ_j` has the sign opposite to `ε` (the reference's `return_reorder_indice`
//!   list, read from its front when `ε ≥ 0` and from its back when `ε < 0`).
//! * **Prune**, N:M: the kept, initially kept weight of the regrown weight's group with the
//!   smallest initial score, so every group keeps its count.
//!
//! A row swaps while `|ε| > threshold` (checked before the swap) and, with the sign rule, while
//! the swap keeps `ε` on its initial side; it stops for good at the first failed check, when a
//! candidate list runs out, or after `max_cycles` cycles.
//!
//! **Every swap must reduce `|ε|`** (pare's rule, not the reference's): unstructured, a row
//! stops at the first swap that would not; N:M, that regrow candidate is passed over (its
//! group's forced prune costs more than it gains) and the next one tried. Without it the
//! reference's swaps overshoot: on stories260k (d = 64, so 50 cycles can replace the whole
//! mask), Wanda 50% went from perplexity 17.8 to 6·10⁶ with the reference's rules.
//!
//! Unlike the reference, a row also stops when no candidate of the right sign is left: its
//! pointers run on into candidates that move `ε` *away* from 0 (the largest-score kept weight
//! of the wrong sign once the right-signed ones are used up, a regrow candidate of the wrong
//! sign), and its regrow list also holds the kept entries as zeros, which its pointers can
//! reach. Entries with zero contribution are never candidates. A near-zero variance is floored
//! at `1e-12 · max σ²` (the reference divides by zero: inf/NaN for dead channels). Sums in f64.

use rayon::prelude::*;

use crate::compress::NofM;
use crate::compress::kit::obs::times_hessian;
use crate::error::{PareError, Result};

/// DSnoT's knobs (ALGORITHMS.md §5 defaults: 50, 0.1, 1, sign rule off for unstructured).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cycle {
    pub max_cycles: usize,
    /// `|ε|` at or below which a row stops, in the units of `μ`.
    pub threshold: f64,
    /// Exponent γ of the variance in the regrow score.
    pub gamma: f64,
    /// Stop a row when a swap would flip the sign of `ε` (always on for N:M).
    pub same_sign: bool,
    /// pare's guard on each swap (the candidate pair is passed over when it fails).
    pub guard: Guard,
}

/// pare's acceptance test of a swap, on top of the reference's rules.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Guard {
    /// The reference's rules only.
    None,
    /// The swap must lower `Σ_j Δw_j² σ²_j + (ε / L)²`, the row's expected squared output error
    /// per token under a diagonal covariance (`L` tokens per calibration sequence).
    Variance(f64),
    /// The swap must lower the row's exact layer error `Δw H Δwᵀ` (`Columns::hessian`).
    Hessian,
}

/// A row's guard state: for [`Guard::Hessian`], `H·Δw` of the row, kept up to date.
enum RowGuard<'a> {
    None,
    Variance(f64),
    Hessian { h: &'a [f32], hd: &'a mut [f32] },
}

impl RowGuard<'_> {
    /// Whether pruning `q` (current value `wq`) and regrowing `r` (original value `wr`), which
    /// takes `ε` to `after`, lowers the guarded error.
    #[allow(clippy::too_many_arguments)]
    fn accepts(&self, var: &[f32], eps: f64, after: f64, q: usize, wq: f32, r: usize, wr: f32) -> bool {
        let (wq, wr) = (wq as f64, wr as f64);
        match self {
            RowGuard::None => true,
            RowGuard::Variance(l) => {
                wq * wq * var[q] as f64 - wr * wr * var[r] as f64
                    + (after * after - eps * eps) / (l * l)
                    < 0.0
            }
            RowGuard::Hessian { h, hd } => {
                let d = hd.len();
                let (hqq, hrr, hqr) = (h[q * d + q] as f64, h[r * d + r] as f64, h[q * d + r] as f64);
                2.0 * (wq * hd[q] as f64 - wr * hd[r] as f64) + wq * wq * hqq + wr * wr * hrr
                    - 2.0 * wq * wr * hqr
                    < 0.0
            }
        }
    }

    /// Records the swap: `Δw_q += wq`, `Δw_r −= wr`.
    fn commit(&mut self, q: usize, wq: f32, r: usize, wr: f32) {
        if let RowGuard::Hessian { h, hd } = self {
            let d = hd.len();
            let (hq, hr) = (&h[q * d..(q + 1) * d], &h[r * d..(r + 1) * d]);
            for ((o, a), b) in hd.iter_mut().zip(hq).zip(hr) {
                *o += wq * a - wr * b;
            }
        }
    }
}

/// Per-column input statistics DSnoT reads, each `cols` long.
pub struct Columns<'a> {
    /// `μ_j`.
    pub mean: &'a [f32],
    /// `σ²_j`.
    pub var: &'a [f32],
    /// Wanda's `‖X_j‖₂` (up to a constant), the score of the prune order.
    pub norms: &'a [f32],
    /// The layer Hessian `[cols, cols]`, for [`Guard::Hessian`].
    pub hessian: Option<&'a [f32]>,
}

/// What one row did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowOutcome {
    pub swaps: usize,
    /// `|ε|` before and after.
    pub before: f64,
    pub after: f64,
}

/// Refines the mask of every row of `w` (row-major, `cols` wide; pruned entries are exact
/// zeros) in place: regrown entries take their value from `orig`, pruned ones become 0. The
/// number of zeros per row (and per N:M group with `pattern`) is unchanged.
pub fn refine(
    w: &mut [f32],
    orig: &[f32],
    cols: usize,
    stats: &Columns<'_>,
    pattern: Option<NofM>,
    cycle: Cycle,
) -> Result<Vec<RowOutcome>> {
    if cols == 0 {
        return Ok(Vec::new());
    }
    let vmax = stats.var.iter().fold(0f32, |a, v| a.max(*v)) as f64;
    let floor = if vmax > 0.0 { vmax * 1e-12 } else { 1.0 };
    let inv_var: Vec<f64> = stats
        .var
        .iter()
        .map(|v| (*v as f64).max(floor).powf(-cycle.gamma))
        .collect();
    // H·Δw for every row, Δw = w⁰ − w, with the Hessian guard (one GEMM).
    let h = match (cycle.guard, stats.hessian) {
        (Guard::Hessian, Some(h)) if h.len() == cols * cols => Some(h),
        (Guard::Hessian, _) => {
            return Err(PareError::Internal(format!(
                "DSnoT's Hessian guard needs a {cols} × {cols} Hessian"
            )));
        }
        _ => None,
    };
    let mut hd = Vec::new();
    if let Some(h) = h {
        let dw: Vec<f32> = orig.iter().zip(w.iter()).map(|(o, v)| o - v).collect();
        hd = vec![0f32; dw.len()];
        times_hessian(&dw, h, cols, &mut hd);
    }
    let mut hd_rows: Vec<Option<&mut [f32]>> = match h {
        Some(_) => hd.chunks_mut(cols).map(Some).collect(),
        None => (0..w.len() / cols).map(|_| None).collect(),
    };
    Ok(w
        .par_chunks_mut(cols)
        .zip(orig.par_chunks(cols))
        .zip(hd_rows.par_iter_mut())
        .map(|((row, o), hdr)| {
            let guard = match (cycle.guard, h, hdr.take()) {
                (Guard::Hessian, Some(h), Some(hd)) => RowGuard::Hessian { h, hd },
                (Guard::Variance(l), _, _) => RowGuard::Variance(l),
                _ => RowGuard::None,
            };
            match pattern {
                None => refine_row(row, o, stats, &inv_var, cycle, guard),
                Some(nm) => refine_row_n_of_m(row, o, stats, &inv_var, nm, cycle, guard),
            }
        })
        .collect::<Vec<_>>())
}

fn error_of(row: &[f32], orig: &[f32], mean: &[f32]) -> f64 {
    row.iter()
        .zip(orig)
        .zip(mean)
        .map(|((w, o), m)| (*o as f64 - *w as f64) * *m as f64)
        .sum()
}

/// The pruned entries of `row` worth regrowing, sorted by `w⁰_j μ_j / σ²_j^γ` ascending (ties by
/// column), with their contribution `w⁰_j μ_j`.
fn regrow_list(row: &[f32], orig: &[f32], mean: &[f32], inv_var: &[f64]) -> Vec<(usize, f64)> {
    let mut list: Vec<(usize, f64, f64)> = (0..row.len())
        .filter(|&j| row[j] == 0.0)
        .map(|j| (j, orig[j] as f64 * mean[j] as f64))
        .filter(|(_, c)| *c != 0.0)
        .map(|(j, c)| (j, c, c * inv_var[j]))
        .collect();
    list.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    list.into_iter().map(|(j, c, _)| (j, c)).collect()
}

fn sign(x: f64) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

fn refine_row(
    row: &mut [f32],
    orig: &[f32],
    st: &Columns<'_>,
    inv_var: &[f64],
    cy: Cycle,
    mut guard: RowGuard<'_>,
) -> RowOutcome {
    let mut eps = error_of(row, orig, st.mean);
    let before = eps.abs();
    let grow = regrow_list(row, orig, st.mean, inv_var);
    // Kept entries by sign of their contribution, each by ascending Wanda score (ties by
    // column): the reference's reordered list read from its two ends.
    let mut kept: Vec<(usize, f64, f32)> = (0..row.len())
        .filter(|&j| row[j] != 0.0)
        .map(|j| (j, row[j] as f64 * st.mean[j] as f64, row[j].abs() * st.norms[j]))
        .filter(|(_, c, _)| *c != 0.0)
        .collect();
    kept.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
    let neg: Vec<(usize, f64)> = kept.iter().filter(|k| k.1 < 0.0).map(|k| (k.0, k.1)).collect();
    let pos: Vec<(usize, f64)> = kept.iter().filter(|k| k.1 > 0.0).map(|k| (k.0, k.1)).collect();
    let sign0 = sign(eps);
    let (mut g_lo, mut g_hi) = (0usize, grow.len());
    let (mut n_at, mut p_at) = (0usize, 0usize);
    let mut swaps = 0;
    for _ in 0..cy.max_cycles {
        if eps.abs() <= cy.threshold || g_lo >= g_hi {
            break;
        }
        let (r, q) = if eps > 0.0 {
            let Some(&q) = neg.get(n_at) else { break };
            g_hi -= 1;
            n_at += 1;
            (grow[g_hi], q)
        } else {
            let Some(&q) = pos.get(p_at) else { break };
            g_lo += 1;
            p_at += 1;
            (grow[g_lo - 1], q)
        };
        let after = eps + q.1 - r.1;
        if after.abs() >= eps.abs() || (cy.same_sign && sign(after) != sign0) {
            break;
        }
        if !guard.accepts(st.var, eps, after, q.0, row[q.0], r.0, orig[r.0]) {
            continue;
        }
        guard.commit(q.0, row[q.0], r.0, orig[r.0]);
        row[q.0] = 0.0;
        row[r.0] = orig[r.0];
        eps = after;
        swaps += 1;
    }
    RowOutcome {
        swaps,
        before,
        after: eps.abs(),
    }
}

fn refine_row_n_of_m(
    row: &mut [f32],
    orig: &[f32],
    st: &Columns<'_>,
    inv_var: &[f64],
    nm: NofM,
    cy: Cycle,
    mut guard: RowGuard<'_>,
) -> RowOutcome {
    let mut eps = error_of(row, orig, st.mean);
    let before = eps.abs();
    let grow = regrow_list(row, orig, st.mean, inv_var);
    // Initially kept entries may be pruned (once); regrown ones stay.
    let mut prunable: Vec<bool> = row.iter().map(|v| *v != 0.0).collect();
    let score: Vec<f32> = row
        .iter()
        .zip(st.norms)
        .map(|(v, n)| v.abs() * n)
        .collect();
    let sign0 = sign(eps);
    let (mut g_lo, mut g_hi) = (0usize, grow.len());
    let mut swaps = 0;
    for _ in 0..cy.max_cycles {
        if eps.abs() <= cy.threshold || g_lo >= g_hi {
            break;
        }
        let r = if eps > 0.0 {
            g_hi -= 1;
            grow[g_hi]
        } else {
            g_lo += 1;
            grow[g_lo - 1]
        };
        let start = r.0 - r.0 % nm.m;
        let end = (start + nm.m).min(row.len());
        let q = (start..end)
            .filter(|&j| prunable[j])
            .min_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b)));
        // Every weight the group started with was pruned already: try the next candidate.
        let Some(q) = q else { continue };
        let after = eps + row[q] as f64 * st.mean[q] as f64 - r.1;
        if sign(after) != sign0 {
            break;
        }
        // The group's forced prune would undo more than the regrow gains: next candidate.
        if after.abs() >= eps.abs() {
            continue;
        }
        if !guard.accepts(st.var, eps, after, q, row[q], r.0, orig[r.0]) {
            continue;
        }
        guard.commit(q, row[q], r.0, orig[r.0]);
        row[q] = 0.0;
        prunable[q] = false;
        row[r.0] = orig[r.0];
        eps = after;
        swaps += 1;
    }
    RowOutcome {
        swaps,
        before,
        after: eps.abs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refine_t(
        w: &mut [f32],
        orig: &[f32],
        cols: usize,
        stats: &Columns<'_>,
        pattern: Option<NofM>,
        cycle: Cycle,
    ) -> Vec<RowOutcome> {
        refine(w, orig, cols, stats, pattern, cycle).unwrap_or_default()
    }

    const CY: Cycle = Cycle {
        max_cycles: 50,
        threshold: 0.1,
        gamma: 1.0,
        same_sign: false,
        guard: Guard::None,
    };

    #[test]
    fn swap_rule_on_a_hand_made_row() {
        // μ = 1 everywhere, σ² = 1 except column 3 (σ² = 4). Original row
        // [2, -1, 0.5, 3, 1.5, -0.25]; the initial mask pruned columns 0, 2, 3 → ε = 2+0.5+3 = 5.5.
        // Regrow candidates by c/σ²: col 2 (0.5), col 3 (0.75), col 0 (2): top = col 0.
        // Prune candidates (kept: 1 (c −1), 4 (c 1.5), 5 (c −0.25)), Wanda scores with norms 1:
        // |w| = 1, 1.5, 0.25 → negatives ascending: 5, 1; positives descending: 4. ε > 0 → front:
        // col 5. Cycle 1: restore 0, prune 5: ε = 5.5 − 0.25 − 2 = 3.25.
        // Cycle 2: ε > 0 → regrow col 3 (0.75, next from the top), prune col 1: ε = 3.25 − 1 − 3
        // = −0.75. Cycle 3: ε < 0 → regrow from the bottom: col 2 (c 0.5); prune from the back:
        // col 4 (c 1.5): ε = −0.75 + 1.5 − 0.5 = 0.25. Cycle 4: both lists are exhausted.
        let orig = [2.0f32, -1.0, 0.5, 3.0, 1.5, -0.25];
        let mut w = [0.0f32, -1.0, 0.0, 0.0, 1.5, -0.25];
        let cols = Columns {
            mean: &[1.0; 6],
            var: &[1.0, 1.0, 1.0, 4.0, 1.0, 1.0],
            norms: &[1.0; 6],
            hessian: None,
        };
        let out = refine_t(&mut w, &orig, 6, &cols, None, CY);
        assert_eq!(w, [2.0, 0.0, 0.5, 3.0, 0.0, 0.0]);
        assert_eq!(out[0].swaps, 3);
        assert!((out[0].before - 5.5).abs() < 1e-12);
        assert!((out[0].after - 0.25).abs() < 1e-12);
    }

    #[test]
    fn sign_rule_stops_before_a_flip() {
        // Same row with the sign rule: cycle 2 would take ε from 3.25 to −0.75, so the row
        // stops after one swap.
        let orig = [2.0f32, -1.0, 0.5, 3.0, 1.5, -0.25];
        let mut w = [0.0f32, -1.0, 0.0, 0.0, 1.5, -0.25];
        let cols = Columns {
            mean: &[1.0; 6],
            var: &[1.0, 1.0, 1.0, 4.0, 1.0, 1.0],
            norms: &[1.0; 6],
            hessian: None,
        };
        let cy = Cycle {
            same_sign: true,
            ..CY
        };
        let out = refine_t(&mut w, &orig, 6, &cols, None, cy);
        assert_eq!(w, [2.0, -1.0, 0.0, 0.0, 1.5, 0.0]);
        assert_eq!(out[0].swaps, 1);
    }

    #[test]
    fn guard_passes_over_a_swap_that_adds_variance() {
        // ε = 2 (column 0 pruned). Regrowing it and pruning column 1 takes ε to −1, which the
        // reference's rules accept. With σ²₁ = 100 the guard's error change is
        // 1·100 − 4·1 + (1 − 4)/1² = 93 > 0: passed over; with σ²₁ = 1 it is −6: made.
        let orig = [2.0f32, -1.0];
        let cy = Cycle {
            guard: Guard::Variance(1.0),
            ..CY
        };
        for (v1, want) in [(100.0f32, [0.0f32, -1.0]), (1.0, [2.0, 0.0])] {
            let mut w = [0.0f32, -1.0];
            let var = [1.0, v1];
            let cols = Columns {
                mean: &[1.0; 2],
                var: &var,
                norms: &[1.0; 2],
                hessian: None,
            };
            refine_t(&mut w, &orig, 2, &cols, None, cy);
            assert_eq!(w, want, "σ²₁ = {v1}");
            let mut w = [0.0f32, -1.0];
            refine_t(&mut w, &orig, 2, &cols, None, CY);
            assert_eq!(w, [2.0, 0.0], "without the guard");
        }
    }

    #[test]
    fn small_error_means_no_swap() {
        let orig = [0.05f32, 1.0];
        let mut w = [0.0f32, 1.0];
        let cols = Columns {
            mean: &[1.0; 2],
            var: &[1.0; 2],
            norms: &[1.0; 2],
            hessian: None,
        };
        let out = refine_t(&mut w, &orig, 2, &cols, None, CY);
        assert_eq!(w, [0.0, 1.0]);
        assert_eq!(out[0].swaps, 0);
    }

    #[test]
    fn n_of_m_swaps_inside_the_group_and_keeps_counts() {
        // 2:4, one row of two groups, μ = σ² = norms = 1. Group 0 pruned cols 0, 1 (c = 3, 0.5),
        // group 1 pruned cols 4, 5 (c = 1, 1): ε = 5.5. Regrow order from the top: 0, 5, 4, 1.
        // 1. regrow col 0; group 0's smallest-score kept col 2 (c −0.1) goes: ε = 2.4.
        // 2. regrow col 5; group 1 would lose col 6 (c 2): ε → 3.4, worse: passed over.
        // 3. col 4: the same. 4. regrow col 1; group 0's col 3 (c −0.2) goes: ε = 1.7.
        let orig = [3.0f32, 0.5, -0.1, -0.2, 1.0, 1.0, 2.0, 4.0];
        let w0 = [0.0f32, 0.0, -0.1, -0.2, 0.0, 0.0, 2.0, 4.0];
        let cols = Columns {
            mean: &[1.0; 8],
            var: &[1.0; 8],
            norms: &[1.0; 8],
            hessian: None,
        };
        let nm = NofM { n: 2, m: 4 };
        let mut w = w0;
        let out = refine_t(&mut w, &orig, 8, &cols, Some(nm), CY);
        assert_eq!(w, [3.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, 4.0]);
        assert_eq!(out[0].swaps, 2);
        assert!((out[0].after - 1.7).abs() < 1e-6, "{out:?}");
        for g in w.chunks(4) {
            assert_eq!(g.iter().filter(|v| **v != 0.0).count(), 2, "{w:?}");
        }
        // Two cycles: the first swap, then the passed-over candidate.
        let mut w = w0;
        let out = refine_t(&mut w, &orig, 8, &cols, Some(nm), Cycle { max_cycles: 2, ..CY });
        assert_eq!(w, [3.0, 0.0, 0.0, -0.2, 0.0, 0.0, 2.0, 4.0]);
        assert_eq!(out[0].swaps, 1);
    }

    #[test]
    fn dead_channels_give_finite_results() {
        // Column 1 never fires (μ = σ² = 0), column 2 is constant (σ² = 0, μ ≠ 0): the constant
        // one is the best regrow candidate, nothing becomes inf or NaN.
        let orig = [1.0f32, 5.0, 2.0, -1.0];
        let mut w = [1.0f32, 0.0, 0.0, -1.0];
        let cols = Columns {
            mean: &[1.0, 0.0, 1.0, 1.0],
            var: &[1.0, 0.0, 0.0, 1.0],
            norms: &[1.0, 0.0, 1.0, 1.0],
            hessian: None,
        };
        let out = refine_t(&mut w, &orig, 4, &cols, None, CY);
        assert!(w.iter().all(|v| v.is_finite()));
        // ε = 2: regrow column 2 (c 2), prune the one negative kept weight (col 3): ε = −1.
        assert_eq!(w, [1.0, 0.0, 2.0, 0.0]);
        assert!(out[0].after.is_finite() && out[0].after < out[0].before);
    }
}
