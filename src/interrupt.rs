//! Ctrl-C during `pare compress`: the first SIGINT asks the block loop to stop at the next block
//! boundary, where it returns [`PareError::Interrupted`] (exit code 130); the writer's temporary
//! folder is removed on the way out, so nothing is left in place of `--out`. A second SIGINT
//! exits at once (its temporary folder is then removed by the next run for the same output).
//! Only on Linux with glibc (where `libc` is linked); elsewhere Ctrl-C keeps its default.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{PareError, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" fn on_sigint(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) }
    }
}

/// Installs the SIGINT handler (call once, early, in commands that write an output).
pub fn install() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(PareError::Interrupted);
    }
    Ok(())
}
