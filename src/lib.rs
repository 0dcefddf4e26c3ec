//! pare: post-training compression of large language models.
//!
//! The library does the work; `main.rs` parses the command line, runs, prints and sets the exit
//! code. Data flow (see README): checkpoint → plan → calibration → block loop with compressors →
//! writer → evaluation → report.

pub mod allocate;
pub mod arch;
pub mod calib;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod compress;
pub mod config;
pub mod error;
pub mod eval;
pub mod gguf;
pub mod gradients;
pub mod id;
pub mod inspect;
pub mod interrupt;
pub mod json;
pub mod kernels;
pub mod matrix;
pub mod mem;
pub mod model;
pub mod pipeline;
pub mod recipe;
pub mod report;
pub mod stats;
pub mod tokenizer;

pub use error::{PareError, Result};
pub use matrix::Matrix;

/// Tool version written into every output's provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
