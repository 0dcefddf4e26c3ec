//! `Matrix`: a dense row-major f32 matrix in Hugging Face `[out, in]` orientation, the form in
//! which weights cross every module boundary (reader → compressor → writer).

/// Row-major `rows × cols` f32 matrix. For a linear layer `rows = d_out`, `cols = d_in`.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Wraps `data` (length must be `rows * cols`; checked in debug builds).
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        debug_assert_eq!(data.len(), rows * cols);
        Self { rows, cols, data }
    }

    /// Row `r` as a slice.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Row `r` as a mutable slice.
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Element `(r, c)`.
    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    /// Fraction of entries that are exactly zero.
    pub fn sparsity(&self) -> f64 {
        if self.data.is_empty() {
            return 0.0;
        }
        self.data.iter().filter(|v| **v == 0.0).count() as f64 / self.data.len() as f64
    }

    /// True when every aligned group of `m` columns in every row has at most `n` non-zeros.
    /// False when `m` does not divide `cols`.
    pub fn satisfies_n_of_m(&self, n: usize, m: usize) -> bool {
        if m == 0 || self.cols % m != 0 {
            return false;
        }
        self.data
            .chunks(m)
            .all(|g| g.iter().filter(|v| **v != 0.0).count() <= n)
    }

    /// Number of entries that are NaN or infinite.
    pub fn non_finite(&self) -> usize {
        self.data.iter().filter(|v| !v.is_finite()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn n_of_m_checks_every_group() {
        let m = Matrix::from_vec(1, 8, vec![1., 0., 2., 0., 0., 3., 4., 0.]);
        assert!(m.satisfies_n_of_m(2, 4));
        let bad = Matrix::from_vec(1, 4, vec![1., 1., 1., 0.]);
        assert!(!bad.satisfies_n_of_m(2, 4));
        assert!(!m.satisfies_n_of_m(2, 3));
        assert_eq!(m.sparsity(), 0.5);
    }
}
