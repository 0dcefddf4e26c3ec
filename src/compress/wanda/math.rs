//! Pure math of Wanda: score `|W_ij| · sqrt(s_j)` and per-row selection.

use rayon::prelude::*;

use crate::compress::NofM;
use crate::compress::kit::select::{
    key_index, prune_count, prune_n_of_m_rows, score_key, smallest_k,
};

/// Zeroes, in every row of the row-major `w` (`cols` wide), exactly `floor(cols · sparsity)`
/// entries with the smallest `|w_j| · norms_j`, where `norms_j = sqrt(s_j)`. Ties: lower column
/// first (wanda's stable ascending sort). Every row ends with the same sparsity.
pub fn prune_rows(w: &mut [f32], cols: usize, norms: &[f32], sparsity: f32) {
    let k = prune_count(cols, sparsity);
    if k == 0 || cols == 0 {
        return;
    }
    w.par_chunks_mut(cols).for_each_init(
        || Vec::with_capacity(cols),
        |keys: &mut Vec<u64>, row| {
            keys.clear();
            keys.extend(
                row.iter()
                    .zip(norms)
                    .enumerate()
                    .map(|(j, (v, n))| score_key(v.abs() * n, j as u32)),
            );
            for key in smallest_k(keys, k) {
                row[key_index(*key)] = 0.0;
            }
        },
    );
}

/// N:M Wanda: per row and aligned group of `nm.m` columns keep the `nm.n` largest scores.
pub fn prune_rows_n_of_m(w: &mut [f32], cols: usize, norms: &[f32], nm: NofM) {
    prune_n_of_m_rows(w, cols, nm, |j, v| v.abs() * norms[j]);
}

/// `sqrt(s_j)` — the column norms Wanda multiplies with (up to the constant `sqrt(n_seqs)`).
pub fn column_norms(sq_norms: &[f32]) -> Vec<f32> {
    sq_norms.iter().map(|s| s.max(0.0).sqrt()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_norms_change_the_choice() {
        // Same weights, column 0 has a huge input norm: it survives although |w| is smallest.
        let mut w = vec![0.1, 1.0, 2.0, 3.0];
        prune_rows(&mut w, 4, &column_norms(&[10000.0, 1.0, 1.0, 1.0]), 0.5);
        assert_eq!(w, vec![0.1, 0.0, 0.0, 3.0]);
    }

    #[test]
    fn exact_per_row_sparsity_with_ties() {
        // 3 rows × 5 cols, p = 0.5 → floor(2.5) = 2 per row; row 1 all ties → columns 0, 1.
        let mut w = vec![
            5.0, 4.0, 3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -9.0, 0.0, 2.0, 0.0, 7.0,
        ];
        prune_rows(&mut w, 5, &[1.0; 5], 0.5);
        assert_eq!(
            w,
            vec![
                5.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, -9.0, 0.0, 2.0, 0.0, 7.0
            ]
        );
        for row in w.chunks(5) {
            assert!(row.iter().filter(|v| **v == 0.0).count() >= 2);
        }
    }

    #[test]
    fn n_of_m_uses_scores() {
        let mut w = vec![1.0, 1.0, 1.0, 1.0];
        prune_rows_n_of_m(&mut w, 4, &[0.5, 2.0, 3.0, 1.0], NofM { n: 2, m: 4 });
        assert_eq!(w, vec![0.0, 1.0, 1.0, 0.0]);
    }
}
