//! Pure math of GPTQ (ALGORITHMS.md §7): column-by-column quantisation with OBS error feedback
//! over lazy blocks, on a grid fixed up front (static groups).
//!
//! The sweep runs in *processing order* (columns possibly permuted by act-order); each processed
//! position knows its original column, hence its group. Rows are independent inside a block
//! (rayon over rows); the columns right of a block get one GEMM (`kit::obs::update_tail`).
//! Weights and `U` are f32, as in the reference.

use rayon::prelude::*;

use crate::compress::QuantScheme;
use crate::compress::kit::obs::update_tail;
use crate::compress::quant::{GroupParams, ScaleDtype, dequantize_value, quantize_value};

/// The fixed quantisation grid of one matrix.
#[derive(Clone, Copy, Debug)]
pub struct Grid<'a> {
    pub scheme: &'a QuantScheme,
    pub dt: ScaleDtype,
    /// Row-major `[rows, n_groups]` parameters.
    pub params: &'a [GroupParams],
    pub n_groups: usize,
}

/// Quantises row-major `w` (`d` columns, processing order) in place with GPTQ.
///
/// * `u` — upper Cholesky factor of the damped `H⁻¹` in processing order (row-major `d × d`).
/// * `orig_col[p]` — original column of processing position `p`; `group_of[p]` — its group.
/// * `frozen[i·d + p]` — entries that must stay exactly zero (zero on entry, dead columns): they
///   get the integer code of 0, dequantise to 0 and feed no error forward (llm-compressor ≤ 0.12's
///   zero preservation; updates that other columns push into them are discarded).
/// * `q_out` — row-major `[rows, d]` integers in *original* column order.
///
/// On return `w` holds the dequantised values (rounded to `grid.dt`) in processing order.
#[allow(clippy::too_many_arguments)]
pub fn gptq_sweep(
    w: &mut [f32],
    d: usize,
    u: &[f32],
    block: usize,
    orig_col: &[usize],
    group_of: &[usize],
    frozen: &[bool],
    grid: Grid<'_>,
    q_out: &mut [i8],
) {
    if d == 0 || w.is_empty() {
        return;
    }
    let rows = w.len() / d;
    let block = block.max(1);
    let mut e = vec![0f32; rows * block];
    for a in (0..d).step_by(block) {
        let b = (a + block).min(d);
        let bw = b - a;
        let e = &mut e[..rows * bw];
        w.par_chunks_mut(d)
            .zip(e.par_chunks_mut(bw))
            .zip(q_out.par_chunks_mut(d))
            .zip(frozen.par_chunks(d))
            .zip(grid.params.par_chunks(grid.n_groups.max(1)))
            .with_min_len(4)
            .for_each(|((((row, er), qr), fr), pr)| {
                sweep_row(&mut row[a..b], er, qr, fr, pr, u, d, a, orig_col, group_of, grid)
            });
        update_tail(w, d, e, u, a, b);
    }
}

crate::kernels::multiversion! {
    /// One row's columns `a..a + w1.len()` of a lazy block: quantise each, store its code and
    /// scaled error, push the error into the row's later columns of the block (compiled for the
    /// CPU's vector width; same operations, so the same bits, on every path).
    #[allow(clippy::too_many_arguments)]
    fn sweep_row(
        w1: &mut [f32],
        er: &mut [f32],
        qr: &mut [i8],
        fr: &[bool],
        pr: &[GroupParams],
        u: &[f32],
        d: usize,
        a: usize,
        orig_col: &[usize],
        group_of: &[usize],
        grid: Grid<'_>,
    ) {
        let (b, bw) = (a + w1.len(), w1.len());
        for jj in 0..bw {
            let p = a + jj;
            let gp = pr[group_of[p]];
            let (q, deq, err) = if fr[p] {
                (quantize_value(0.0, gp, grid.scheme, grid.dt), 0.0, 0.0)
            } else {
                let wv = w1[jj];
                let q = quantize_value(wv, gp, grid.scheme, grid.dt);
                let deq = grid.dt.round(dequantize_value(q, gp));
                (q, deq, (wv - deq) / u[p * d + p])
            };
            w1[jj] = deq;
            qr[orig_col[p]] = q as i8;
            er[jj] = err;
            if err != 0.0 {
                let urow = &u[p * d + p + 1..p * d + b];
                for (wk, uk) in w1[jj + 1..].iter_mut().zip(urow) {
                    *wk -= err * uk;
                }
            }
        }
    }
}

/// Act-order permutation: positions sorted by descending `diag`, ties by lower index.
pub fn act_order(diag: &[f32]) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..diag.len()).collect();
    perm.sort_by(|&i, &j| diag[j].total_cmp(&diag[i]).then(i.cmp(&j)));
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_order_descending_stable() {
        assert_eq!(act_order(&[1.0, 3.0, 2.0, 3.0]), vec![1, 3, 2, 0]);
    }

    #[test]
    fn identity_factor_is_plain_rounding() {
        // U = I: no error feedback at all → GPTQ reduces to RTN on the fixed grid.
        let scheme = QuantScheme {
            bits: 4,
            group_size: None,
            symmetric: true,
        };
        let p = GroupParams {
            scale: 0.5,
            zero_point: 0,
        };
        let mut w = vec![0.3, -1.2, 2.0, 0.0];
        let mut u = vec![0.0; 16];
        for i in 0..4 {
            u[i * 5] = 1.0;
        }
        let mut q = vec![0i8; 4];
        let grid = Grid {
            scheme: &scheme,
            dt: ScaleDtype::F32,
            params: &[p],
            n_groups: 1,
        };
        gptq_sweep(
            &mut w,
            4,
            &u,
            2,
            &[0, 1, 2, 3],
            &[0; 4],
            &[false; 4],
            grid,
            &mut q,
        );
        assert_eq!(q, vec![1, -2, 4, 0]);
        assert_eq!(w, vec![0.5, -1.0, 2.0, 0.0]);
    }
}
