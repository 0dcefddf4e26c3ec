//! Aggregates with uncertainty: mean ± standard error, and a seeded bootstrap for aggregates
//! that are not means (lm-evaluation-harness's convention, CRATES.md §2.3).

use crate::report::MetricValue;

/// Resamples used by [`bootstrap_stderr`] by default.
pub const BOOTSTRAP_ITERS: usize = 1000;
/// Seed used by [`bootstrap_stderr`] by default, so reports are reproducible.
pub const BOOTSTRAP_SEED: u64 = 1234;

/// Mean and its standard error `s/√n` (sample standard deviation, n−1 in the denominator).
/// Empty input gives 0 with no stderr; a single value gives no stderr.
pub fn mean_stderr(xs: &[f64]) -> MetricValue {
    let n = xs.len();
    if n == 0 {
        return MetricValue {
            value: 0.0,
            stderr: None,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return MetricValue {
            value: mean,
            stderr: None,
        };
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    MetricValue {
        value: mean,
        stderr: Some((var / n as f64).sqrt()),
    }
}

/// Median (average of the two middle values for even n; 0 for empty input).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// xorshift64* generator: tiny, deterministic, good enough for resampling indices.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is mapped to a fixed non-zero state).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform index in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize % n.max(1)
    }
}

/// `statistic(xs)` with a bootstrap standard error: the sample standard deviation of the statistic
/// over `iters` resamples (with replacement) drawn by a xorshift generator seeded with `seed`.
pub fn bootstrap_stderr(
    xs: &[f64],
    statistic: fn(&[f64]) -> f64,
    iters: usize,
    seed: u64,
) -> MetricValue {
    let value = statistic(xs);
    if xs.len() < 2 || iters < 2 {
        return MetricValue {
            value,
            stderr: None,
        };
    }
    let mut rng = XorShift::new(seed);
    let mut buf = vec![0.0; xs.len()];
    let stats: Vec<f64> = (0..iters)
        .map(|_| {
            for b in buf.iter_mut() {
                *b = xs[rng.below(xs.len())];
            }
            statistic(&buf)
        })
        .collect();
    let m = stats.iter().sum::<f64>() / iters as f64;
    let var = stats.iter().map(|s| (s - m) * (s - m)).sum::<f64>() / (iters - 1) as f64;
    MetricValue {
        value,
        stderr: Some(var.sqrt()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_stderr_by_hand() {
        // mean 2.5, sample var = (2.25+0.25+0.25+2.25)/3 = 5/3, stderr = sqrt(5/3/4)
        let m = mean_stderr(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.value, 2.5);
        assert!((m.stderr.unwrap() - (5.0f64 / 12.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_stderr(&[7.0]).stderr, None);
        assert_eq!(mean_stderr(&[]).value, 0.0);
        // binary accuracy 3/4: stderr = sqrt(p(1-p)/(n-1)) · ... = sqrt(0.25/4)
        let acc = mean_stderr(&[1.0, 1.0, 1.0, 0.0]);
        assert!((acc.stderr.unwrap() - (0.25f64 / 4.0).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn bootstrap_is_seeded_and_sensible() {
        let xs: Vec<f64> = (0..50).map(|i| (i % 7) as f64).collect();
        let a = bootstrap_stderr(&xs, median, BOOTSTRAP_ITERS, BOOTSTRAP_SEED);
        let b = bootstrap_stderr(&xs, median, BOOTSTRAP_ITERS, BOOTSTRAP_SEED);
        assert_eq!(a, b);
        assert_eq!(a.value, 3.0);
        let se = a.stderr.unwrap();
        assert!(se > 0.0 && se < 2.0, "{se}");
        // the bootstrap stderr of the mean is close to the analytic one
        let boot = bootstrap_stderr(&xs, |v| v.iter().sum::<f64>() / v.len() as f64, 1000, 7);
        let analytic = mean_stderr(&xs).stderr.unwrap();
        assert!((boot.stderr.unwrap() / analytic - 1.0).abs() < 0.15);
        // constant data has zero spread
        assert_eq!(
            bootstrap_stderr(&[2.0; 10], median, 100, 1).stderr,
            Some(0.0)
        );
    }

    #[test]
    fn xorshift_indices_in_range() {
        let mut r = XorShift::new(0);
        let mut seen = [0usize; 5];
        for _ in 0..1000 {
            seen[r.below(5)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
    }
}
