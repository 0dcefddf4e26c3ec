//! Pure math of FineQuant's data-free granularity test: the worst per-row relative error of a
//! dequantised matrix, and the candidate group sizes.

use rayon::prelude::*;

use crate::matrix::Matrix;

/// The collapse statistic: for each row, `e_r = sqrt(mean_t ‖w_rt − ŵ_rt‖² / ‖w_rt‖²)` over the
/// row's tiles `t` of `tile` consecutive columns (all-zero tiles skipped); returns `max_r e_r`.
/// Averaging relative errors per tile, not over the whole row, keeps one outlier from hiding the
/// collapse of the rest of its row (its own energy would dominate a row-wide ratio).
pub fn worst_row_tile_error(w: &Matrix, deq: &Matrix, tile: usize) -> f64 {
    let d = w.cols.max(1);
    let tile = tile.clamp(1, d);
    w.data
        .par_chunks(d)
        .zip(deq.data.par_chunks(d))
        .map(|(a, b)| {
            let (mut sum, mut n) = (0.0f64, 0usize);
            for (ta, tb) in a.chunks(tile).zip(b.chunks(tile)) {
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for (x, y) in ta.iter().zip(tb) {
                    let (x, y) = (*x as f64, *y as f64);
                    num += (x - y) * (x - y);
                    den += x * x;
                }
                if den > 0.0 {
                    sum += num / den;
                    n += 1;
                }
            }
            if n > 0 { (sum / n as f64).sqrt() } else { 0.0 }
        })
        .reduce(|| 0.0, f64::max)
}

/// Group sizes to try, coarsest first: `start` (`None` = one group per row), then halving while
/// the half is an integer ≥ `min_group` that divides `cols`.
pub fn candidate_groups(cols: usize, start: Option<usize>, min_group: usize) -> Vec<Option<usize>> {
    let mut out = vec![start.filter(|g| *g < cols)];
    let mut g = start.unwrap_or(cols).min(cols);
    while g % 2 == 0 && g / 2 >= min_group.max(1) && cols % (g / 2) == 0 {
        g /= 2;
        out.push(Some(g));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_halve_and_divide() {
        assert_eq!(
            candidate_groups(864, None, 64),
            vec![None, Some(432), Some(216), Some(108)]
        );
        assert_eq!(
            candidate_groups(512, Some(256), 64),
            vec![Some(256), Some(128), Some(64)]
        );
        assert_eq!(
            candidate_groups(320, None, 64),
            vec![None, Some(160), Some(80)]
        );
        assert_eq!(candidate_groups(64, Some(128), 64), vec![None]);
    }

    #[test]
    fn worst_row_error() {
        // Row 0 exact; row 1 tiles [1, 0] → 0.5² and [2, 2] → exact: sqrt(0.25 / 2).
        let w = Matrix::from_vec(2, 4, vec![3.0, 4.0, 0.0, 0.0, 1.0, 0.0, 2.0, 2.0]);
        let d = Matrix::from_vec(2, 4, vec![3.0, 4.0, 0.0, 0.0, 0.5, 0.0, 2.0, 2.0]);
        assert!((worst_row_tile_error(&w, &d, 2) - 0.125f64.sqrt()).abs() < 1e-12);
    }
}
