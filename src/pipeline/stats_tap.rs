//! `StatsTap`: the tap used in a compression step's first pass. It feeds every observed linear
//! input to a statistics accumulator (one per tap point, shared by the linears that read it) and
//! keeps the first few sequences' inputs for measuring reconstruction error.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};

use crate::compress::hessian::StatsAccumulator;
use crate::compress::{InputStats, Needs};
use crate::error::Result;
use crate::matrix::Matrix;
use crate::model::{Tap, TapPoint, to_host};

/// Gathers statistics per tap point during one pass over the calibration batches.
pub struct StatsTap {
    needs: BTreeMap<TapPoint, (usize, Needs)>,
    acc: BTreeMap<TapPoint, StatsAccumulator>,
    /// Inputs kept for the error measurement: rows are tokens.
    kept: BTreeMap<TapPoint, Vec<f32>>,
    keep_tokens: usize,
    /// Sequences in the batch being run (set by the caller before each forward).
    pub batch_seqs: usize,
}

impl StatsTap {
    /// `needs`: tap point → (d_in, what to gather). `keep_tokens`: how many input rows to keep per
    /// point for the reconstruction-error measurement.
    pub fn new(needs: BTreeMap<TapPoint, (usize, Needs)>, keep_tokens: usize) -> Self {
        let acc = needs
            .iter()
            .filter(|(_, (_, n))| n.any())
            .map(|(p, (d, n))| (*p, StatsAccumulator::new(*d, *n)))
            .collect();
        Self {
            needs,
            acc,
            kept: BTreeMap::new(),
            keep_tokens,
            batch_seqs: 1,
        }
    }

    /// Consumes the tap: statistics per point, and the kept inputs as `[tokens, d_in]` matrices.
    pub fn finish(self) -> (BTreeMap<TapPoint, InputStats>, BTreeMap<TapPoint, Matrix>) {
        let stats = self.acc.into_iter().map(|(p, a)| (p, a.finish())).collect();
        let kept = self
            .kept
            .into_iter()
            .filter_map(|(p, v)| {
                let d = self.needs.get(&p)?.0;
                (d > 0 && !v.is_empty()).then(|| (p, Matrix::from_vec(v.len() / d, d, v)))
            })
            .collect();
        (stats, kept)
    }
}

impl Tap for StatsTap {
    fn wants(&self, point: TapPoint) -> bool {
        self.needs.contains_key(&point)
    }

    fn observe(&mut self, point: TapPoint, x: &Tensor<2>) -> Result<()> {
        let [tokens, d] = x.dims();
        let kept = self.kept.entry(point).or_default();
        let want_rows = (self.keep_tokens * d).saturating_sub(kept.len()) / d.max(1);
        match self.acc.get_mut(&point) {
            // The Hessian is built on the host (faer): copy the whole input once.
            Some(acc) if acc.needs().hessian => {
                let host = to_host(x.clone())?;
                acc.observe(&host, tokens, self.batch_seqs);
                kept.extend_from_slice(&host[..want_rows.min(tokens) * d]);
                return Ok(());
            }
            // Σx² only: reduce on the device, copy d floats.
            Some(acc) => {
                let sq = to_host(x.clone().square().sum_dim(0))?;
                acc.observe_sq(&sq, tokens, self.batch_seqs);
            }
            None => {}
        }
        let rows = want_rows.min(tokens);
        if rows > 0 {
            kept.extend(to_host(x.clone().slice([0..rows, 0..d]))?);
        }
        Ok(())
    }
}

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
