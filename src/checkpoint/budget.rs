//! The writer's byte budget: every byte the checkpoint writer writes is counted, and the
//! full-disk test hook ([`super::writer::FAULT_WRITE_LIMIT_ENV`]) fails writes past its limit.

use std::io::Write;

use super::writer::FAULT_WRITE_LIMIT_ENV;
use crate::error::{PareError, Result};

/// Bytes written so far, against the optional injected limit.
#[derive(Debug, Default)]
pub(super) struct Budget {
    pub(super) written: u64,
    limit: Option<u64>,
}

impl Budget {
    pub(super) fn from_env() -> Result<Self> {
        let limit = match std::env::var(FAULT_WRITE_LIMIT_ENV) {
            Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                PareError::Usage(format!(
                    "{FAULT_WRITE_LIMIT_ENV}={v}: expected a byte count (test hook)"
                ))
            })?),
            Err(_) => None,
        };
        Ok(Self { written: 0, limit })
    }
}

/// A writer that counts bytes into a [`Budget`] and fails once its injected limit is reached.
pub(super) struct Counted<'a, W: Write> {
    pub(super) inner: W,
    pub(super) budget: &'a mut Budget,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut n = buf.len();
        if let Some(limit) = self.budget.limit {
            let left = limit.saturating_sub(self.budget.written);
            if left == 0 && n > 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "No space left on device (injected)",
                ));
            }
            n = n.min(usize::try_from(left).unwrap_or(usize::MAX));
        }
        let n = self.inner.write(&buf[..n])?;
        self.budget.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
