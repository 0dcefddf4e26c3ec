//! Selection helpers every pruner shares: exact "k smallest" selection with index tie-breaking,
//! and the per-group N:M choice, including a shorter tail group.
//!
//! Ties: every pruner here removes *exactly* the requested number of entries, ordering equal
//! scores by position (lower flat index pruned first). The reference codes prune `score ≤ thr`,
//! which over-prunes when scores tie at the threshold (ALGORITHMS.md §1, §3 pitfalls); we
//! deliberately do not reproduce that.
//!
//! N:M tail: when d_in is not a multiple of M, the last group of a row has `len < M` columns
//! and keeps `ceil(len · N / M)` of them (proportional, never sparser than the pattern). The
//! layer is then not exactly N:M; [`tail_note`] says so for the report.

use rayon::prelude::*;

use crate::compress::NofM;

/// Largest group width supported by the N:M helpers (a group's pruned set is a `u64` bitmask).
pub const MAX_M: usize = 64;

/// Sort key ordering by `(score, index)`: the bit pattern of a non-negative f32 is monotonic, so
/// the key is `bits(score) << 32 | index`. The sign bit is cleared (−0 ranks as +0); NaN ranks
/// above +∞ (never pruned before a finite score).
#[inline]
pub fn score_key(score: f32, index: u32) -> u64 {
    (((score.to_bits() & 0x7fff_ffff) as u64) << 32) | index as u64
}

/// Index part of a [`score_key`].
#[inline]
pub fn key_index(key: u64) -> usize {
    (key & 0xffff_ffff) as usize
}

/// Reorders `keys` so that its first `k` entries are the `k` smallest (unordered among
/// themselves) and returns them. O(len) expected.
pub fn smallest_k(keys: &mut [u64], k: usize) -> &[u64] {
    let k = k.min(keys.len());
    if k > 0 && k < keys.len() {
        keys.select_nth_unstable(k);
    }
    &keys[..k]
}

/// `floor(count · p)`, the number of entries a sparsity `p` prunes out of `count`.
pub fn prune_count(count: usize, sparsity: f32) -> usize {
    ((count as f64 * sparsity as f64).floor() as usize).min(count)
}

/// How many of a group of `len` columns N:M keeps: `n` for a whole group, `ceil(len·n/m)` for
/// a shorter tail group.
pub fn group_keep(len: usize, nm: NofM) -> usize {
    if len >= nm.m {
        nm.n
    } else {
        (len * nm.n).div_ceil(nm.m)
    }
}

/// The note for a layer whose d_in = `cols` is not a multiple of M (`None` when it is).
pub fn tail_note(cols: usize, nm: NofM) -> Option<String> {
    let r = cols % nm.m;
    (r != 0).then(|| {
        format!(
            "d_in {cols} is not a multiple of {}: the last {r} columns of each row form a tail group that keeps {} of {r}, so this layer is not exactly {}:{}",
            nm.m,
            group_keep(r, nm),
            nm.n,
            nm.m
        )
    })
}

/// Pruned positions of one N:M group: bit `i` set ⇔ entry `i` of `scores` is among the
/// `len − n_keep` smallest (ties → lower position pruned first). `scores.len() ≤ MAX_M`.
#[inline]
pub fn group_prune_bits(scores: &[f32], n_keep: usize) -> u64 {
    let m = scores.len().min(MAX_M);
    let mut keys = [0u64; MAX_M];
    for (i, s) in scores[..m].iter().enumerate() {
        keys[i] = score_key(*s, i as u32);
    }
    let keys = &mut keys[..m];
    keys.sort_unstable();
    let mut bits = 0u64;
    for key in &keys[..m.saturating_sub(n_keep)] {
        bits |= 1 << key_index(*key);
    }
    bits
}

/// Keeps, in every row and every aligned group of `nm.m` columns, the `nm.n` entries with the
/// largest `score(col, w)`; zeroes the others. `nm.m ≤ MAX_M`; a shorter last group keeps
/// [`group_keep`] of its entries.
pub fn prune_n_of_m_rows<F>(w: &mut [f32], cols: usize, nm: NofM, score: F)
where
    F: Fn(usize, f32) -> f32 + Sync,
{
    prune_n_of_m_rows_by(w, cols, nm, |_, j, v| score(j, v));
}

/// [`prune_n_of_m_rows`] with a score that also sees the row: `score(row, col, w)` (GBLM's
/// per-weight gradient term).
pub fn prune_n_of_m_rows_by<F>(w: &mut [f32], cols: usize, nm: NofM, score: F)
where
    F: Fn(usize, usize, f32) -> f32 + Sync,
{
    if cols == 0 || nm.m == 0 {
        return;
    }
    w.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        let mut scores = [0f32; MAX_M];
        for (g, group) in row.chunks_mut(nm.m).enumerate() {
            let base = g * nm.m;
            for (i, v) in group.iter().enumerate() {
                scores[i] = score(r, base + i, *v);
            }
            let bits = group_prune_bits(&scores[..group.len()], group_keep(group.len(), nm));
            for (i, v) in group.iter_mut().enumerate() {
                if bits >> i & 1 == 1 {
                    *v = 0.0;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_by_score_then_index() {
        assert!(score_key(1.0, 5) < score_key(2.0, 0));
        assert!(score_key(1.0, 1) < score_key(1.0, 2));
        assert_eq!(score_key(-0.0, 3), score_key(0.0, 3));
        assert!(score_key(f32::INFINITY, 0) < score_key(f32::NAN, 0));
        assert_eq!(key_index(score_key(3.5, 77)), 77);
    }

    #[test]
    fn n_of_m_keeps_largest_per_group_and_row() {
        // 2 rows × 8, 2:4.
        let mut w = vec![
            0.1, -4.0, 3.0, 0.2, /**/ 1.0, 1.0, 1.0, 1.0, //
            5.0, 0.0, 0.0, -6.0, /**/ -0.5, 0.25, 0.75, -1.0,
        ];
        prune_n_of_m_rows(&mut w, 8, NofM { n: 2, m: 4 }, |_, v| v.abs());
        assert_eq!(
            w,
            vec![
                0.0, -4.0, 3.0, 0.0, /**/ 0.0, 0.0, 1.0, 1.0, //
                5.0, 0.0, 0.0, -6.0, /**/ 0.0, 0.0, 0.75, -1.0,
            ]
        );
        assert!(crate::Matrix::from_vec(2, 8, w).satisfies_n_of_m(2, 4));
    }

    #[test]
    fn group_bits_and_count() {
        assert_eq!(group_prune_bits(&[4.0, 1.0, 3.0, 2.0], 2), 0b1010);
        assert_eq!(group_prune_bits(&[1.0; 8], 4), 0b0000_1111);
        assert_eq!(prune_count(10, 0.55), 5);
        assert_eq!(prune_count(3, 1.0), 3);
    }

    #[test]
    fn tail_group_keeps_its_share() {
        let nm = NofM { n: 4, m: 8 };
        assert_eq!(
            (group_keep(8, nm), group_keep(4, nm), group_keep(1, nm)),
            (4, 2, 1)
        );
        assert_eq!(group_keep(3, NofM { n: 2, m: 4 }), 2);
        // One row of 12 columns, 4:8: a whole group of 8 keeps 4, the tail of 4 keeps 2.
        let mut w: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        prune_n_of_m_rows(&mut w, 12, nm, |_, v| v.abs());
        assert_eq!(
            w,
            vec![0.0, 0.0, 0.0, 0.0, 5.0, 6.0, 7.0, 8.0, 0.0, 0.0, 11.0, 12.0]
        );
        assert!(tail_note(12, nm).unwrap().contains("keeps 2 of 4"));
        assert!(tail_note(16, nm).is_none());
    }
}
