//! Progress callbacks the library calls during long work; the binary shows them with indicatif,
//! tests use [`Silent`].

/// Receives progress of long-running stages.
pub trait Progress: Sync {
    /// A stage with `total` steps begins.
    fn start(&self, label: &str, total: u64);
    /// One step of the current stage is done.
    fn step(&self);
    /// The current stage ended.
    fn finish(&self);
    /// A warning to show the user (NaN weights, Cholesky retries …).
    fn warn(&self, message: &str);
}

/// Shows nothing, keeps nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn step(&self) {}
    fn finish(&self) {}
    fn warn(&self, _: &str) {}
}
