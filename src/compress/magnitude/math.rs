//! Pure math of magnitude pruning: one threshold per matrix (unstructured). N:M uses the shared
//! selection of [`crate::compress::kit::select`].

use rayon::prelude::*;

use crate::compress::kit::select::{key_index, prune_count, score_key, smallest_k};

/// Magnitude pruning of a whole matrix (per-matrix threshold): zeroes exactly
/// `floor(len · sparsity)` entries with the smallest `|w|`. Returns the number zeroed.
/// `w.len()` must fit in `u32` (checked by the caller).
pub fn prune_magnitude_unstructured(w: &mut [f32], sparsity: f32) -> usize {
    let k = prune_count(w.len(), sparsity);
    if k == 0 {
        return 0;
    }
    let mut keys: Vec<u64> = w
        .par_iter()
        .enumerate()
        .map(|(i, v)| score_key(v.abs(), i as u32))
        .collect();
    for key in smallest_k(&mut keys, k) {
        w[key_index(*key)] = 0.0;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstructured_prunes_exactly_floor_with_ties_by_index() {
        // |w| = [3, 1, 1, 1, 2, 5]; p = 0.5 → prune 3: the three 1s.
        let mut w = vec![3.0, -1.0, 1.0, 1.0, -2.0, 5.0];
        assert_eq!(prune_magnitude_unstructured(&mut w, 0.5), 3);
        assert_eq!(w, vec![3.0, 0.0, 0.0, 0.0, -2.0, 5.0]);
        // Ties at the threshold: four equal values, p = 0.5 → exactly 2 pruned, lower index first
        // (the reference's `≤ thr` would prune all four).
        let mut t = vec![1.0, 1.0, 1.0, 1.0];
        prune_magnitude_unstructured(&mut t, 0.5);
        assert_eq!(t, vec![0.0, 0.0, 1.0, 1.0]);
        // floor(7 · 0.5) = 3.
        let mut u = vec![7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(prune_magnitude_unstructured(&mut u, 0.5), 3);
        assert_eq!(u, vec![7.0, 6.0, 5.0, 4.0, 0.0, 0.0, 0.0]);
    }
}
