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
    let ng = grid.n_groups.max(1);
    let mut e = vec![0f32; rows * block];
    for a in (0..d).step_by(block) {
        let b = (a + block).min(d);
        let bw = b - a;
        let e = &mut e[..rows * bw];
        w.par_chunks_mut(d * TILE)
            .zip(e.par_chunks_mut(bw * TILE))
            .zip(q_out.par_chunks_mut(d * TILE))
            .zip(frozen.par_chunks(d * TILE))
            .zip(grid.params.par_chunks(ng * TILE))
            .for_each(|((((wt, et), qt), ft), pt)| {
                let tile = Tile {
                    w: wt,
                    e: et,
                    q: qt,
                    frozen: ft,
                    params: pt,
                };
                sweep_tile(tile, u, d, a, b, orig_col, group_of, grid)
            });
        update_tail(w, d, e, u, a, b);
    }
}

/// Rows swept together: one AVX-512 vector of f32 per column.
const TILE: usize = 16;

/// Up to [`TILE`] consecutive rows of the matrix and of everything indexed by row.
struct Tile<'a> {
    /// `[n, d]` weights.
    w: &'a mut [f32],
    /// `[n, b − a]` scaled errors of the lazy block.
    e: &'a mut [f32],
    /// `[n, d]` integer codes, original column order.
    q: &'a mut [i8],
    /// `[n, d]` entries that stay zero.
    frozen: &'a [bool],
    /// `[n, n_groups]` grid parameters.
    params: &'a [GroupParams],
}

crate::kernels::multiversion! {
    /// Columns `a..b` (a lazy block) of one tile of rows: for each column in turn, quantise it in
    /// every row, store the codes and scaled errors, and push the errors into the tile's later
    /// columns of the block. The block is held column-major (`[b − a][TILE]`) so that each step
    /// runs across the tile's rows in vector lanes; every weight sees the same operations in the
    /// same order as a row-by-row sweep, so the result has the same bits (a zero error's update,
    /// which a row-wise sweep skips, changes at most the sign of a zero, which quantises alike).
    #[allow(clippy::too_many_arguments)]
    fn sweep_tile(
        tile: Tile<'_>,
        u: &[f32],
        d: usize,
        a: usize,
        b: usize,
        orig_col: &[usize],
        group_of: &[usize],
        grid: Grid<'_>,
    ) {
        let (bw, n, ng) = (b - a, tile.w.len() / d, grid.n_groups.max(1));
        let mut t = vec![0f32; bw * TILE];
        for r in 0..n {
            for (jj, x) in tile.w[r * d + a..r * d + b].iter().enumerate() {
                t[jj * TILE + r] = *x;
            }
        }
        let (dt, scheme) = (grid.dt, grid.scheme);
        // Opaque to the optimiser, so that the update below stays a loop over the tile's rows
        // (vectorised across rows) rather than being unrolled and vectorised across columns
        // with gathers and scatters.
        let lanes = std::hint::black_box(TILE);
        for jj in 0..bw {
            let p = a + jj;
            let g = group_of[p];
            // Rows past `n` are padding: frozen, so they quantise 0 and feed no error.
            let (mut scale, mut zp, mut fz) = ([1f32; TILE], [0i32; TILE], [true; TILE]);
            for r in 0..n {
                let gp = tile.params[r * ng + g];
                (scale[r], zp[r]) = (gp.scale, gp.zero_point);
                fz[r] = tile.frozen[r * d + p];
            }
            let upp = u[p * d + p];
            let (col, later) = t[jj * TILE..].split_at_mut(TILE);
            let mut q = [0i32; TILE];
            let mut err = [0f32; TILE];
            for r in 0..TILE {
                let gp = GroupParams {
                    scale: scale[r],
                    zero_point: zp[r],
                };
                let wv = col[r];
                q[r] = quantize_value(if fz[r] { 0.0 } else { wv }, gp, scheme, dt);
                let deq = dt.round(dequantize_value(q[r], gp));
                col[r] = if fz[r] { 0.0 } else { deq };
                err[r] = if fz[r] { 0.0 } else { (wv - deq) / upp };
            }
            for r in 0..n {
                tile.q[r * d + orig_col[p]] = q[r] as i8;
                tile.e[r * bw + jj] = err[r];
            }
            let urow = &u[p * d + p + 1..p * d + b];
            for (tk, uk) in later.chunks_exact_mut(lanes).zip(urow) {
                for (x, e) in tk.iter_mut().zip(&err[..lanes]) {
                    *x -= e * uk;
                }
            }
        }
        for r in 0..n {
            for (jj, x) in tile.w[r * d + a..r * d + b].iter_mut().enumerate() {
                *x = t[jj * TILE + r];
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

    /// The row-by-row sweep (one row at a time, errors pushed only when non-zero): the
    /// reference the tiled sweep must reproduce bit for bit.
    #[allow(clippy::too_many_arguments)]
    fn row_sweep(
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
        let rows = w.len() / d;
        let ng = grid.n_groups;
        for a in (0..d).step_by(block) {
            let b = (a + block).min(d);
            let mut e = vec![0f32; rows * (b - a)];
            for r in 0..rows {
                for p in a..b {
                    let gp = grid.params[r * ng + group_of[p]];
                    let (q, deq, err) = if frozen[r * d + p] {
                        (quantize_value(0.0, gp, grid.scheme, grid.dt), 0.0, 0.0)
                    } else {
                        let wv = w[r * d + p];
                        let q = quantize_value(wv, gp, grid.scheme, grid.dt);
                        let deq = grid.dt.round(dequantize_value(q, gp));
                        (q, deq, (wv - deq) / u[p * d + p])
                    };
                    w[r * d + p] = deq;
                    q_out[r * d + orig_col[p]] = q as i8;
                    e[r * (b - a) + p - a] = err;
                    if err != 0.0 {
                        for k in p + 1..b {
                            w[r * d + k] -= err * u[p * d + k];
                        }
                    }
                }
            }
            update_tail(w, d, &e, u, a, b);
        }
    }

    #[test]
    fn tiled_sweep_has_the_bits_of_the_row_sweep() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        // 37 rows (two full tiles and a partial one), 70 columns in blocks of 32 (a partial
        // last block), groups of 8 in original order under an act-order permutation.
        let (rows, d, block, gs) = (37usize, 70usize, 32, 8);
        let scheme = QuantScheme {
            bits: 4,
            group_size: Some(gs),
            symmetric: false,
        };
        let n_groups = d.div_ceil(gs);
        let params: Vec<GroupParams> = (0..rows * n_groups)
            .map(|_| GroupParams {
                scale: ScaleDtype::BF16.round(0.05 + 0.2 * rand()),
                zero_point: (rand() * 8.0) as i32 - 4,
            })
            .collect();
        let mut u = vec![0f32; d * d];
        for i in 0..d {
            u[i * d + i] = 0.5 + rand();
            for j in i + 1..d {
                u[i * d + j] = 0.3 * (rand() - 0.5);
            }
        }
        let perm = act_order(&(0..d).map(|_| rand()).collect::<Vec<_>>());
        let group_of: Vec<usize> = perm.iter().map(|c| c / gs).collect();
        let frozen: Vec<bool> = (0..rows * d).map(|_| rand() < 0.1).collect();
        let w0: Vec<f32> = (0..rows * d)
            .map(|i| if frozen[i] { 0.0 } else { 2.0 * rand() - 1.0 })
            .collect();
        for dt in [ScaleDtype::BF16, ScaleDtype::F32] {
            let grid = Grid {
                scheme: &scheme,
                dt,
                params: &params,
                n_groups,
            };
            let (mut w_ref, mut q_ref) = (w0.clone(), vec![0i8; rows * d]);
            row_sweep(&mut w_ref, d, &u, block, &perm, &group_of, &frozen, grid, &mut q_ref);
            let (mut w, mut q) = (w0.clone(), vec![0i8; rows * d]);
            gptq_sweep(&mut w, d, &u, block, &perm, &group_of, &frozen, grid, &mut q);
            assert_eq!(q, q_ref, "{dt:?}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&w), bits(&w_ref), "{dt:?}");
            assert!(q.iter().any(|&c| c != 0) && frozen.iter().any(|&f| f));
        }
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
