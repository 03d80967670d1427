//! Fused tensor ops: each file one op, named like its CUDA kernel in `kernels/`, with a candle
//! `CustomOp` (CPU forward always, CUDA forward under the `cuda` feature), a checked pub wrapper,
//! and a `*_reference` twin made only of plain candle ops, which tests use as the oracle.
//!
//! Ops work in `candle_core::Result`, with messages naming the op, shape and dtype; conversion
//! to [`crate::Error`] happens at the public boundary, not here. Only this module and
//! `crate::device` know that CUDA exists.

#[allow(dead_code)] // used by tests only
mod emu;
pub mod perturb_tokens;
pub mod sensitivity;

pub use perturb_tokens::{perturb_tokens, TokenCopies, PERTURB_TOKENS_MAX_LEN};
pub use sensitivity::{
    sensitivity, sensitivity_reference, SENSITIVITY_FEATURES, SENSITIVITY_JS_EPS,
};
