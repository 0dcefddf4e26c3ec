//! The block loop and the model runner: streaming calibration and evaluation through the model
//! one decoder block at a time.

pub mod progress;
pub mod runner;

pub use progress::{Progress, Silent};
pub use runner::ModelRunner;
pub mod backward;
pub mod compress;
pub mod gradients;
pub mod lm;
pub mod mask_training;
pub mod profile;

pub use compress::{CompressOutcome, compress};
pub use profile::allocate;
