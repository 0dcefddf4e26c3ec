//! Shared pieces of the method folders, so that no method folder imports another: selection
//! (top-k, N:M and its tail group), round-to-nearest of a whole matrix, and the OBS kit (inverse
//! Hessian factor, lazy-batch update).

pub mod obs;
pub mod rtn;
pub mod select;
