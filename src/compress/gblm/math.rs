//! Pure math of GBLM: the score `|W_ij| · (‖X_j‖₂ + G_ij)` and its per-row selection
//! (unstructured: the `floor(d_in · p)` lowest of each row; N:M: the N highest of each group).

use rayon::prelude::*;

use crate::compress::NofM;
use crate::compress::kit::select::{
    key_index, prune_count, prune_n_of_m_rows_by, score_key, smallest_k,
};

/// GBLM's score of weight `v` at column `j` with gradient magnitude `g`:
/// `|v|·norm_j + |v|·g` (the reference's `W_metric + W_metric_grad`).
#[inline]
pub fn score(v: f32, norm: f32, g: f32) -> f32 {
    v.abs() * norm + v.abs() * g.abs()
}

/// Zeroes, in every row of the row-major `w` (`cols` wide), exactly `floor(cols · sparsity)`
/// entries with the smallest score; `norms` are `‖X_j‖₂` per column, `g` the gradient
/// magnitudes shaped like `w`. Ties: lower column first (the reference's stable sort).
pub fn prune_rows(w: &mut [f32], cols: usize, norms: &[f32], g: &[f32], sparsity: f32) {
    let k = prune_count(cols, sparsity);
    if k == 0 || cols == 0 {
        return;
    }
    w.par_chunks_mut(cols)
        .zip(g.par_chunks(cols))
        .for_each_init(
            || Vec::with_capacity(cols),
            |keys: &mut Vec<u64>, (row, gr)| {
                keys.clear();
                keys.extend(
                    row.iter()
                        .zip(norms)
                        .zip(gr)
                        .enumerate()
                        .map(|(j, ((v, n), gv))| score_key(score(*v, *n, *gv), j as u32)),
                );
                for key in smallest_k(keys, k) {
                    row[key_index(*key)] = 0.0;
                }
            },
        );
}

/// N:M GBLM: per row and aligned group of `nm.m` columns keep the `nm.n` highest scores.
pub fn prune_rows_n_of_m(w: &mut [f32], cols: usize, norms: &[f32], g: &[f32], nm: NofM) {
    prune_n_of_m_rows_by(w, cols, nm, |r, j, v| score(v, norms[j], g[r * cols + j]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gradient_term_changes_the_choice() {
        // Equal activation norms: without gradients the two smallest |w| (cols 0, 1) go; a large
        // gradient on col 0 saves it and col 2 goes instead.
        let norms = [1.0; 4];
        let mut w = vec![0.5, 0.6, 0.7, 3.0];
        prune_rows(&mut w, 4, &norms, &[0.0; 4], 0.5);
        assert_eq!(w, vec![0.0, 0.0, 0.7, 3.0]);
        let mut w = vec![0.5, 0.6, 0.7, 3.0];
        // scores: 0.5·(1+2)=1.5, 0.6, 0.7, 3.0
        prune_rows(&mut w, 4, &norms, &[2.0, 0.0, 0.0, 0.0], 0.5);
        assert_eq!(w, vec![0.5, 0.0, 0.0, 3.0]);
        // Per row: the second row's gradients differ.
        let mut w = vec![0.5, 0.6, 0.7, 3.0, 0.5, 0.6, 0.7, 3.0];
        let g = [0.0, 0.0, 0.0, 0.0, 0.0, 9.0, 0.0, 0.0];
        prune_rows(&mut w, 4, &norms, &g, 0.25);
        assert_eq!(w, vec![0.0, 0.6, 0.7, 3.0, 0.0, 0.6, 0.7, 3.0]);
        prune_rows(&mut w, 4, &norms, &g, 0.5);
        assert_eq!(&w[4..], &[0.0, 0.6, 0.0, 3.0]);
    }

    #[test]
    fn n_of_m_keeps_the_highest_scores_per_group() {
        let mut w = vec![1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0, 1.0];
        let norms = [0.5, 2.0, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        let g = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 5.0, 0.0];
        prune_rows_n_of_m(&mut w, 8, &norms, &g, NofM { n: 2, m: 4 });
        assert_eq!(w, vec![0.0, 1.0, 1.0, 0.0, 2.0, 0.0, 1.0, 0.0]);
    }
}
