//! Pure math of SparseGPT (ALGORITHMS.md §3): the OBS sweep over lazy column blocks with an
//! adaptive mask, given the upper Cholesky factor `U` of the damped inverse Hessian.
//!
//! Precision: `U` and the weights are f32 (the factorisation itself ran in f64, see
//! `compress::kit::obs`), as in the reference. Rows are independent inside a block, so the
//! in-block sweep runs in parallel over rows (rayon); the update of the columns right of the block
//! is one faer GEMM `W[:, b:] −= E · U[a:b, b:]`.

use rayon::prelude::*;

use crate::compress::NofM;
use crate::compress::kit::obs::update_tail;
use crate::compress::kit::select::{
    MAX_M, group_keep, group_prune_bits, key_index, prune_count, score_key, smallest_k,
};

/// How the pruning mask is chosen.
#[derive(Clone, Copy, Debug)]
pub enum MaskRule<'a> {
    /// Per block of columns, prune exactly `floor(rows · width · p)` entries with the smallest
    /// OBS saliency `w² / U_jj²` over the whole block (ties → lower flat index first), chosen from
    /// the weights as updated by the previous blocks.
    Unstructured(f32),
    /// Per row and aligned group of M columns, keep the N largest `w² / U_jj²`, chosen from the
    /// current (updated) weights when the sweep reaches the group (a shorter tail group keeps
    /// its proportional share).
    NofM(NofM),
    /// A fixed mask, row-major `[rows, cols]`, `true` = prune; only the weight update is OBS's
    /// (used by tests and to reconstruct after another method's mask).
    Given(&'a [bool]),
}

/// Runs SparseGPT on row-major `w` (`d` columns) in place. `u` is the upper Cholesky factor of
/// `H⁻¹` (row-major `d × d`), `block` the lazy-batch width (a multiple of M for N:M). On return
/// pruned entries are exact zeros and the kept ones carry the OBS corrections.
pub fn sparsegpt_sweep(w: &mut [f32], d: usize, u: &[f32], block: usize, rule: MaskRule<'_>) {
    if d == 0 || w.is_empty() {
        return;
    }
    let rows = w.len() / d;
    let block = block.max(1);
    let mut e = vec![0f32; rows * block];
    let mut mask = vec![false; rows * block];
    let mut keys: Vec<u64> = Vec::new();
    for a in (0..d).step_by(block) {
        let b = (a + block).min(d);
        let bw = b - a;
        let e = &mut e[..rows * bw];
        let mask = &mut mask[..rows * bw];
        match rule {
            MaskRule::Unstructured(p) => {
                mask.iter_mut().for_each(|m| *m = false);
                let k = prune_count(rows * bw, p);
                keys.clear();
                keys.par_extend((0..rows * bw).into_par_iter().map(|f| {
                    let (i, jj) = (f / bw, f % bw);
                    let j = a + jj;
                    let (wv, ujj) = (w[i * d + j], u[j * d + j]);
                    score_key(wv * wv / (ujj * ujj), f as u32)
                }));
                for key in smallest_k(&mut keys, k) {
                    mask[key_index(*key)] = true;
                }
            }
            MaskRule::Given(given) => {
                for i in 0..rows {
                    mask[i * bw..(i + 1) * bw].copy_from_slice(&given[i * d + a..i * d + b]);
                }
            }
            MaskRule::NofM(_) => {}
        }
        w.par_chunks_mut(d)
            .zip(e.par_chunks_mut(bw))
            .zip(mask.par_chunks_mut(bw))
            .with_min_len(4)
            .for_each(|((row, er), mr)| {
                let w1 = &mut row[a..b];
                for jj in 0..bw {
                    let j = a + jj;
                    if let MaskRule::NofM(nm) = rule
                        && jj % nm.m == 0
                    {
                        let m = nm.m.min(bw - jj).min(MAX_M);
                        let mut scores = [0f32; MAX_M];
                        for t in 0..m {
                            let (wv, ut) = (w1[jj + t], u[(j + t) * d + j + t]);
                            scores[t] = wv * wv / (ut * ut);
                        }
                        let bits = group_prune_bits(&scores[..m], group_keep(m, nm));
                        for t in 0..m {
                            mr[jj + t] = bits >> t & 1 == 1;
                        }
                    }
                    if mr[jj] {
                        let err = w1[jj] / u[j * d + j];
                        w1[jj] = 0.0;
                        let urow = &u[j * d + j + 1..j * d + b];
                        for (wk, uk) in w1[jj + 1..].iter_mut().zip(urow) {
                            *wk -= err * uk;
                        }
                        er[jj] = err;
                    } else {
                        er[jj] = 0.0;
                    }
                }
            });
        update_tail(w, d, e, u, a, b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::kit::obs::inverse_factor;
    use crate::stats::tests::{correlated_x, rand_vec, stats_of};
    use faer::{Mat, Side, linalg::solvers::Solve};

    /// Minimises ‖(w − w')Xᵀ‖² over the free columns of w' (others fixed: `fixed[j]` → w'_j =
    /// `value[j]`): normal equations H_FF w'_F = H_F: w − H_FC w'_C.
    fn least_squares_row(h: &crate::Matrix, w: &[f32], value: &[f64], free: &[bool]) -> Vec<f64> {
        let d = w.len();
        let fidx: Vec<usize> = (0..d).filter(|j| free[*j]).collect();
        let n = fidx.len();
        let a = Mat::<f64>::from_fn(n, n, |p, q| h.get(fidx[p], fidx[q]) as f64);
        let mut rhs = Mat::<f64>::from_fn(n, 1, |p, _| {
            let i = fidx[p];
            let mut s: f64 = (0..d).map(|j| h.get(i, j) as f64 * w[j] as f64).sum();
            for j in (0..d).filter(|j| !free[*j]) {
                s -= h.get(i, j) as f64 * value[j];
            }
            s
        });
        a.llt(Side::Lower).unwrap().solve_in_place(rhs.as_mut());
        let mut out = value.to_vec();
        for (p, &i) in fidx.iter().enumerate() {
            out[i] = rhs[(p, 0)];
        }
        out
    }

    #[test]
    fn one_pruned_weight_matches_least_squares_optimum() {
        let (rows, d, t) = (4, 8, 40);
        let x = rand_vec(21, t * d); // full rank
        let h = stats_of(&x, t, d).hessian.unwrap();
        let w0 = rand_vec(22, rows * d);
        let f = inverse_factor(&h, 0.0).unwrap();
        for q in [0usize, 3] {
            let mut given = vec![false; rows * d];
            for i in 0..rows {
                given[i * d + q] = true;
            }
            let mut w = w0.clone();
            sparsegpt_sweep(&mut w, d, &f.u, 3, MaskRule::Given(&given));
            for i in 0..rows {
                let row = &w0[i * d..(i + 1) * d];
                // SparseGPT freezes columns left of q (already processed) and w_q = 0; the rest
                // are free. For q = 0 this is the plain OBS optimum with everything else free.
                let mut value: Vec<f64> = row.iter().map(|v| *v as f64).collect();
                value[q] = 0.0;
                let free: Vec<bool> = (0..d).map(|j| j > q).collect();
                let want = least_squares_row(&h, row, &value, &free);
                for j in 0..d {
                    let got = w[i * d + j] as f64;
                    assert!(
                        (got - want[j]).abs() < 1e-3 * (1.0 + want[j].abs()),
                        "q {q} row {i} col {j}: {got} vs {}",
                        want[j]
                    );
                }
                assert_eq!(w[i * d + q], 0.0);
            }
        }
    }

    #[test]
    fn unstructured_block_count_is_exact() {
        let (rows, d, t) = (6, 10, 40);
        let h = stats_of(&correlated_x(3, t, d), t, d).hessian.unwrap();
        let f = inverse_factor(&h, 0.01).unwrap();
        let mut w = rand_vec(4, rows * d);
        sparsegpt_sweep(&mut w, d, &f.u, 4, MaskRule::Unstructured(0.5));
        // Blocks of 4, 4, 2 columns: floor(24·.5) + floor(24·.5) + floor(12·.5) = 30.
        assert_eq!(w.iter().filter(|v| **v == 0.0).count(), 30);
    }
}
