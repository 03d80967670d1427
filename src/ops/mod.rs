//! Fused tensor ops: each file one op, named like its CUDA kernel in `kernels/`, with a candle
//! `CustomOp` (CPU forward always, CUDA forward under the `cuda` feature), a checked pub wrapper,
//! and a `*_reference` twin made only of plain candle ops, which tests use as the oracle.
//!
//! Ops work in `candle_core::Result`, with messages naming the op, shape and dtype; conversion
//! to [`crate::Error`] happens at the public boundary, not here. Only this module and
//! `crate::device` know that CUDA exists.

pub mod attention;
pub mod bias_gelu;
mod elem;
#[allow(dead_code)] // used by tests only
mod emu;
#[cfg(test)]
mod encoder_tests;
pub mod int8_linear;
pub mod layer_norm;
#[cfg(test)]
mod linear_tests;
pub mod masked_softmax;
pub mod mean_pool;
pub mod packed_linear;
pub mod perturb_tokens;
pub mod sensitivity;

pub use attention::{self_attention, self_attention_reference};
pub use bias_gelu::{bias_gelu, bias_gelu_reference};
pub use int8_linear::int8_linear_reference;
pub use layer_norm::{add_layer_norm, add_layer_norm_reference};
pub use masked_softmax::{masked_softmax, masked_softmax_reference};
pub use mean_pool::{masked_mean_pool, masked_mean_pool_reference};
pub use packed_linear::{
    bf16_linear_reference, bf16_supported, int8_supported, packed_f32_supported, packed_linear,
    PackedWeights,
};
pub use perturb_tokens::{perturb_tokens, TokenCopies, PERTURB_TOKENS_MAX_LEN};
pub use sensitivity::{
    sensitivity, sensitivity_reference, SENSITIVITY_FEATURES, SENSITIVITY_JS_EPS,
};

/// Threads per block of the row kernels (one block per row); a power of two for their tree
/// reductions.
#[cfg(feature = "cuda")]
const ROW_BLOCK: u32 = 128;
