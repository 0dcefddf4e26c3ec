//! The report's reconstruction metric of a compressed linear.

use burn::tensor::Device;

use crate::error::Result;
use crate::matrix::Matrix;

/// Output rows per chunk: the metric never holds a weight-sized temporary.
const CHUNK_ROWS: usize = 256;

/// `‖(W − W′) Xᵀ‖ / ‖W Xᵀ‖` on the kept inputs `x` (`[tokens, d_in]`), `None` without inputs or
/// when `‖W Xᵀ‖ = 0`. Computed on the host with pare's GEMM, [`CHUNK_ROWS`] output rows at a
/// time (two `[tokens, CHUNK_ROWS]` products per chunk, squares summed in f64).
pub fn relative_error(
    w: &Matrix,
    w_new: &Matrix,
    x: &Matrix,
    _device: &Device,
) -> Result<Option<f64>> {
    if x.rows == 0 || x.cols != w.cols || w_new.rows != w.rows || w_new.cols != w.cols {
        return Ok(None);
    }
    let d = w.cols;
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut y = vec![0f32; x.rows * CHUNK_ROWS];
    let mut diff = vec![0f32; CHUNK_ROWS * d];
    for r0 in (0..w.rows).step_by(CHUNK_ROWS) {
        let n = CHUNK_ROWS.min(w.rows - r0);
        let rows = &w.data[r0 * d..(r0 + n) * d];
        for ((o, a), b) in diff
            .iter_mut()
            .zip(rows)
            .zip(&w_new.data[r0 * d..(r0 + n) * d])
        {
            *o = a - b;
        }
        let y = &mut y[..x.rows * n];
        crate::kernels::gemm::linear(&x.data, rows, n, None, y, false);
        den += y.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
        crate::kernels::gemm::linear(&x.data, &diff[..n * d], n, None, y, false);
        num += y.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
    }
    Ok((den > 0.0).then(|| (num / den).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_error_matches_the_direct_definition() {
        let (rows, d, t) = (300, 7, 11);
        let w = Matrix::from_vec(
            rows,
            d,
            (0..rows * d).map(|i| ((i * 7) % 13) as f32 - 6.0).collect(),
        );
        let mut w2 = w.clone();
        w2.data.iter_mut().step_by(3).for_each(|v| *v = 0.0);
        let x = Matrix::from_vec(
            t,
            d,
            (0..t * d).map(|i| ((i * 5) % 11) as f32 * 0.1).collect(),
        );
        let got = relative_error(&w, &w2, &x, &burn::tensor::Device::flex())
            .unwrap()
            .unwrap();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for r in 0..rows {
            for k in 0..t {
                let dot = |m: &Matrix| -> f64 {
                    (0..d)
                        .map(|j| m.get(r, j) as f64 * x.get(k, j) as f64)
                        .sum()
                };
                let (a, b) = (dot(&w), dot(&w2));
                num += (a - b).powi(2);
                den += a * a;
            }
        }
        assert!((got - (num / den).sqrt()).abs() < 1e-6, "{got}");
    }
}
