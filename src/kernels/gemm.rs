//! The linear layer's GEMM on the host: `y = x·Wᵀ (+ b)` with faer's parallel f32 matmul.

use faer::{Accum, MatMut, MatRef, Par};

/// `y ← x·Wᵀ + b` (or `y += x·Wᵀ + b` with `accumulate`), all row-major: `x` `[t, d_in]`,
/// `w` `[d_out, d_in]` (the Hugging Face layout), `bias` `[d_out]`, `y` `[t, d_out]`.
pub fn linear(
    x: &[f32],
    w: &[f32],
    d_out: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    accumulate: bool,
) {
    let d_in = if d_out == 0 { 0 } else { w.len() / d_out };
    let t = if d_in == 0 { 0 } else { x.len() / d_in };
    if t == 0 || d_out == 0 {
        return;
    }
    let accum = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(
        MatMut::from_row_major_slice_mut(&mut y[..t * d_out], t, d_out),
        accum,
        MatRef::from_row_major_slice(&x[..t * d_in], t, d_in),
        MatRef::from_row_major_slice(&w[..d_out * d_in], d_out, d_in).transpose(),
        1.0f32,
        Par::rayon(0),
    );
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(d_out) {
            for (v, bb) in row.iter_mut().zip(b) {
                *v += bb;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_naive_product_with_bias_and_accumulation() {
        let (t, d_in, d_out) = (7, 13, 5);
        let x: Vec<f32> = (0..t * d_in)
            .map(|i| ((i * 7) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let w: Vec<f32> = (0..d_out * d_in)
            .map(|i| ((i * 3) % 7) as f32 * 0.2 - 0.6)
            .collect();
        let b: Vec<f32> = (0..d_out).map(|i| i as f32).collect();
        let mut y = vec![1.0f32; t * d_out];
        linear(&x, &w, d_out, Some(&b), &mut y, true);
        for i in 0..t {
            for o in 0..d_out {
                let dot: f32 = (0..d_in).map(|k| x[i * d_in + k] * w[o * d_in + k]).sum();
                let want = 1.0 + dot + b[o];
                assert!((y[i * d_out + o] - want).abs() < 1e-5, "({i},{o})");
            }
        }
        let mut z = vec![9.0f32; t * d_out];
        linear(&x, &w, d_out, None, &mut z, false);
        assert!((z[0] - (y[0] - 1.0 - b[0])).abs() < 1e-5);
    }
}
