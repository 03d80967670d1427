//! Entry points of the kernels' host twin (`kernels/emu.cpp`): the real `.cu` source compiled
//! by the host C++ compiler and run on emulated blocks of CPU threads. Tests compare it bit for
//! bit with the Rust ops, so the kernels' indexing, strides and arithmetic are checked on
//! machines without a GPU.

extern "C" {
    pub(crate) fn tremble_emu_sensitivity_f32(
        probs: *const f32,
        out: *mut f32,
        n: u32,
        k1: u32,
        l: u32,
        threshold: f32,
        grid: u32,
        block: u32,
    );
    pub(crate) fn tremble_emu_perturb_tokens(
        ids: *const u32,
        out: *mut u32,
        n: u32,
        len: u32,
        copies: u32,
        edit: u32,
        rate: f64,
        seed: u64,
        copy0: u32,
        special: *const u32,
        n_special: u32,
        mask_id: u32,
        vocab: u32,
        pad_id: u32,
        block: u32,
    );
    pub(crate) fn tremble_emu_layer_norm_f32(
        x: *const f32,
        r: *const f32,
        w: *const f32,
        b: *const f32,
        out: *mut f32,
        rows: u32,
        h: u32,
        residual: u32,
        eps: f32,
        grid: u32,
        block: u32,
    );
    pub(crate) fn tremble_emu_bias_gelu_f32(
        x: *const f32,
        bias: *const f32,
        out: *mut f32,
        n: u32,
        cols: u32,
        grid: u32,
        block: u32,
    );
    pub(crate) fn tremble_emu_masked_softmax_f32(
        scores: *const f32,
        mask: *const u32,
        out: *mut f32,
        rows: u32,
        len: u32,
        rows_per_batch: u32,
        scale: f32,
        grid: u32,
        block: u32,
    );
    pub(crate) fn tremble_emu_mean_pool_f32(
        x: *const f32,
        mask: *const u32,
        out: *mut f32,
        batch: u32,
        len: u32,
        h: u32,
        grid: u32,
        block: u32,
    );
    pub(crate) fn tremble_emu_gelu(x: f32) -> f32;
    pub(crate) fn tremble_emu_exp(x: f32) -> f32;
    pub(crate) fn tremble_emu_mix(z: u64) -> u64;
    pub(crate) fn tremble_emu_edit_count(rate: f64, n: u32) -> u32;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{mix, Rng};

    #[test]
    fn host_twin_helpers_match_the_rust_ones() {
        let mut rng = Rng::new(7);
        for _ in 0..1000 {
            let z = rng.next_u64();
            assert_eq!(unsafe { tremble_emu_mix(z) }, mix(z));
        }
        for rate in [0.0, 1e-6, 0.1, 0.3, 0.7, 1.0, 2.0, -1.0, f64::NAN] {
            for n in [0u32, 1, 7, 9, 10, 11, 30, 511] {
                assert_eq!(
                    unsafe { tremble_emu_edit_count(rate, n) } as usize,
                    crate::perturb::edit_count(rate, n as usize),
                    "rate {rate} n {n}"
                );
            }
        }
    }
}
