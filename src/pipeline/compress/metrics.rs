//! The report's reconstruction metric of a compressed linear.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::Result;
use crate::matrix::Matrix;
use crate::model::to_host;

/// `‖(W − W′) Xᵀ‖ / ‖W Xᵀ‖` on the kept inputs `x` (`[tokens, d_in]`), computed on `device`.
pub fn relative_error(
    w: &Matrix,
    w_new: &Matrix,
    x: &Matrix,
    device: &Device,
) -> Result<Option<f64>> {
    if x.rows == 0 || x.cols != w.cols {
        return Ok(None);
    }
    let xt = Tensor::<2>::from_data(TensorData::new(x.data.clone(), [x.rows, x.cols]), device);
    let diff: Vec<f32> = w.data.iter().zip(&w_new.data).map(|(a, b)| a - b).collect();
    let wt = Tensor::<2>::from_data(TensorData::new(w.data.clone(), [w.rows, w.cols]), device);
    let dt = Tensor::<2>::from_data(TensorData::new(diff, [w.rows, w.cols]), device);
    let y = xt.clone().matmul(wt.transpose()).square().sum();
    let e = xt.matmul(dt.transpose()).square().sum();
    let den = to_host(y.reshape([1, 1]))?[0] as f64;
    let num = to_host(e.reshape([1, 1]))?[0] as f64;
    Ok((den > 0.0).then(|| (num / den).sqrt()))
}
