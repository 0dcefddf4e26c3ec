//! Process-wide time counters for the benchmark (e.g. the share of GPTQ spent in Cholesky).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

static CHOLESKY_NANOS: AtomicU64 = AtomicU64::new(0);

/// Adds the time since `start` to the Cholesky/inverse counter.
pub fn add_cholesky(start: Instant) {
    CHOLESKY_NANOS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
}

/// Seconds spent in Cholesky factorisations and inverses so far in this process.
pub fn cholesky_seconds() -> f64 {
    CHOLESKY_NANOS.load(Ordering::Relaxed) as f64 / 1e9
}
