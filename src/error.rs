//! The library's one error type. Every variant names what was wrong and where (file, key path,
//! tensor, layer); `main.rs` prints it and maps it to an exit code.

use std::path::{Path, PathBuf};

use crate::id::LinearId;

/// Result alias used across the library.
pub type Result<T, E = PareError> = std::result::Result<T, E>;

/// Everything that can go wrong in pare.
#[derive(Debug, thiserror::Error)]
pub enum PareError {
    /// A file the user gave (model, text, task, ids) is missing or malformed.
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },

    /// A recipe is malformed or does not fit the model: `key` is the path inside the recipe.
    #[error("{}: {key}: {message}", path.display())]
    Recipe {
        path: PathBuf,
        key: String,
        message: String,
    },

    /// Reading or writing failed at the operating-system level (permissions, full disk …).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },

    /// A usage error not tied to a file (bad flag combination, unknown device …).
    #[error("{0}")]
    Usage(String),

    /// Numerical failure that could not be recovered (e.g. Cholesky after all retries).
    #[error("{0}")]
    Numerical(String),

    /// A broken internal invariant: a bug in pare, not something the user can fix.
    #[error("internal error: {0}")]
    Internal(String),

    /// The user pressed Ctrl-C (exit code 130); nothing was written.
    #[error("interrupted (Ctrl-C): stopped at a block boundary, no output was written")]
    Interrupted,

    /// Ctrl-C during `compress` after some blocks finished (exit code 130): no output was
    /// written; the finished blocks are kept for `--resume`.
    #[error("interrupted (Ctrl-C): stopped at a block boundary, no output was written; the finished blocks are kept in {}: re-run the same command with --resume to continue", .0.display())]
    InterruptedResumable(PathBuf),

    /// An error while compressing one linear layer, which it names.
    #[error("{id}: {source}")]
    Layer {
        id: LinearId,
        #[source]
        source: Box<PareError>,
    },
}

impl PareError {
    /// Input error about `path`.
    pub fn input(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        PareError::Input {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// Recipe error at `key` in `path`.
    pub fn recipe(
        path: impl AsRef<Path>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PareError::Recipe {
            path: path.as_ref().to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    /// I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        PareError::Io {
            context: context.into(),
            source,
        }
    }

    /// The same error, attributed to layer `id` (unless it already names a layer).
    pub fn in_layer(self, id: LinearId) -> Self {
        match self {
            e @ PareError::Layer { .. } => e,
            e => PareError::Layer {
                id,
                source: Box::new(e),
            },
        }
    }

    /// Process exit code: 2 for anything the user can fix (input, recipe, I/O, usage), 1 for a
    /// numerical failure or an internal fault.
    pub fn exit_code(&self) -> i32 {
        match self {
            PareError::Numerical(_) | PareError::Internal(_) => 1,
            PareError::Interrupted | PareError::InterruptedResumable(_) => 130,
            PareError::Layer { source, .. } => source.exit_code(),
            _ => 2,
        }
    }
}
