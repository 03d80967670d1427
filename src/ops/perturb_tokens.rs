//! Seeded token-level perturbation of a batch of id rows: `[inputs, seq] u32` → `[inputs,
//! copies, seq] u32`, copy `j` of row `i` being [`crate::perturb::perturb_ids`] of the row with
//! copy number `copy0 + j`. Drop makes a copy shorter; its kept ids are moved left and the tail
//! is filled with `pad_id`, so every copy keeps the row's length.
//!
//! The CPU forward is the Rust scheme itself (the reference); the CUDA forward is
//! `kernels/perturb_tokens.cu`, which implements the same counter-based scheme, so the same
//! seed gives the same variants on both devices (checked here on the kernel's host twin).

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

use crate::perturb::{perturb_ids, TokenPerturbation, TokenSpace};

/// Longest row the kernel takes (its shared key table); the CPU forward has no limit.
pub const PERTURB_TOKENS_MAX_LEN: usize = 1024;

/// What to make of each row.
#[derive(Debug, Clone)]
pub struct TokenCopies {
    pub perturbation: TokenPerturbation,
    pub space: TokenSpace,
    pub seed: u64,
    /// Copies per row.
    pub copies: usize,
    /// Copy number of the first copy (copy numbers pick the stream, see `perturb_ids`).
    pub copy0: usize,
    /// Fills the tail of dropped copies.
    pub pad_id: u32,
}

impl TokenCopies {
    /// The kernel's edit argument.
    #[cfg(any(test, feature = "cuda"))]
    fn edit_code(&self) -> u32 {
        use crate::perturb::TokenEdit;
        match self.perturbation.edit() {
            TokenEdit::Substitute => 0,
            TokenEdit::Drop => 1,
            TokenEdit::Mask => 2,
        }
    }

    /// Copies of one row, each padded to the row's length.
    fn row(&self, ids: &[u32], out: &mut Vec<u32>) {
        for j in 0..self.copies {
            let v = perturb_ids(
                ids,
                self.perturbation,
                self.seed,
                self.copy0 + j,
                &self.space,
            );
            let kept = v.len();
            out.extend(v);
            out.extend(std::iter::repeat_n(self.pad_id, ids.len() - kept));
        }
    }
}

struct PerturbTokens<'a>(&'a TokenCopies);

impl CustomOp1 for PerturbTokens<'_> {
    fn name(&self) -> &'static str {
        "perturb_tokens"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, s) = layout.shape().dims2()?;
        let (CpuStorage::U32(src), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            bail!(
                "perturb_tokens: ids {:?} must be contiguous u32",
                layout.shape()
            );
        };
        let cfg = self.0;
        let mut out = Vec::with_capacity(n * cfg.copies * s);
        if s > 0 {
            for row in src[start..end].chunks_exact(s) {
                cfg.row(row, &mut out);
            }
        }
        Ok((CpuStorage::U32(out), Shape::from_dims(&[n, cfg.copies, s])))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};

        let (n, s) = layout.shape().dims2()?;
        let (CudaStorageSlice::U32(src), Some((start, end))) =
            (&storage.slice, layout.contiguous_offsets())
        else {
            bail!(
                "perturb_tokens: ids {:?} must be contiguous u32",
                layout.shape()
            );
        };
        let cfg = self.0;
        let dev = storage.device().clone();
        let total = n * cfg.copies * s;
        let out = dev.alloc_zeros::<u32>(total.max(1))?;
        if total > 0 {
            let src = src.slice(start..end);
            // An empty slice cannot be uploaded; one unused element keeps the pointer valid.
            let special: Vec<u32> = if cfg.space.special().is_empty() {
                vec![u32::MAX]
            } else {
                cfg.space.special().to_vec()
            };
            let special_dev = dev.clone_htod(special.as_slice())?;
            let func =
                dev.get_or_load_custom_func("perturb_tokens", "tremble_perturb_tokens", PTX)?;
            let (n32, s32, c32) = (n as u32, s as u32, cfg.copies as u32);
            let (edit, rate, seed, copy0) = (
                cfg.edit_code(),
                cfg.perturbation.rate(),
                cfg.seed,
                cfg.copy0 as u32,
            );
            let n_special = cfg.space.special().len() as u32;
            let (mask, vocab, pad) = (cfg.space.mask_id(), cfg.space.vocab_size(), cfg.pad_id);
            let mut b = func.builder();
            b.arg(&src);
            b.arg(&out);
            b.arg(&n32);
            b.arg(&s32);
            b.arg(&c32);
            b.arg(&edit);
            b.arg(&rate);
            b.arg(&seed);
            b.arg(&copy0);
            b.arg(&special_dev);
            b.arg(&n_special);
            b.arg(&mask);
            b.arg(&vocab);
            b.arg(&pad);
            let launch = LaunchConfig {
                grid_dim: (n32 * c32, 1, 1),
                block_dim: (128, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: argument types and order match the kernel's signature; `out` holds
            // n·copies·s ids and the kernel writes each once.
            unsafe { b.launch(launch) }.w()?;
        }
        Ok((
            candle_core::CudaStorage {
                slice: CudaStorageSlice::U32(out),
                device: dev,
            },
            Shape::from_dims(&[n, cfg.copies, s]),
        ))
    }
}

/// The kernel's PTX, compiled by build.rs from `kernels/perturb_tokens.cu`.
#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/perturb_tokens.ptx"));

/// `cfg.copies` perturbed copies of every row of `ids` (`[inputs, seq]` u32), as
/// `[inputs, copies, seq]` u32 on the same device; see the module docs.
///
/// # Errors
/// When `ids` is not rank-2 u32, or, on CUDA, rows are longer than
/// [`PERTURB_TOKENS_MAX_LEN`].
pub fn perturb_tokens(ids: &Tensor, cfg: &TokenCopies) -> Result<Tensor> {
    let (shape, dtype) = (ids.shape(), ids.dtype());
    if shape.rank() != 2 || dtype != DType::U32 {
        bail!("perturb_tokens: ids must be [inputs, seq] u32, got {shape:?} {dtype:?}");
    }
    if ids.device().is_cuda() && shape.dims()[1] > PERTURB_TOKENS_MAX_LEN {
        bail!(
            "perturb_tokens: rows of {} ids exceed the kernel's {PERTURB_TOKENS_MAX_LEN}",
            shape.dims()[1]
        );
    }
    ids.contiguous()?.apply_op1_no_bwd(&PerturbTokens(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::perturb::TokenEdit;
    use crate::rng::Rng;
    use candle_core::Device;

    fn bert() -> TokenSpace {
        TokenSpace::new(30522, 103, &[0, 100, 101, 102]).unwrap()
    }

    /// Rows framed like a tokenizer's: CLS, words, SEP, then padding of varying length.
    fn rows(n: usize, s: usize, seed: u64) -> Vec<u32> {
        let mut rng = Rng::new(seed);
        let mut out = Vec::with_capacity(n * s);
        for _ in 0..n {
            let used = 2 + rng.below(s - 1);
            let row: Vec<u32> = (0..s)
                .map(|i| match i {
                    0 => 101,
                    _ if i + 1 < used => 1000 + rng.below(29_000) as u32,
                    _ if i + 1 == used => 102,
                    _ => 0,
                })
                .collect();
            out.extend(row);
        }
        out
    }

    fn emulated(ids: &[u32], n: usize, s: usize, cfg: &TokenCopies, block: u32) -> Vec<u32> {
        let special = cfg.space.special();
        let mut out = vec![u32::MAX; n * cfg.copies * s];
        // SAFETY: buffers sized as the kernel expects.
        unsafe {
            crate::ops::emu::tremble_emu_perturb_tokens(
                ids.as_ptr(),
                out.as_mut_ptr(),
                n as u32,
                s as u32,
                cfg.copies as u32,
                cfg.edit_code(),
                cfg.perturbation.rate(),
                cfg.seed,
                cfg.copy0 as u32,
                special.as_ptr(),
                special.len() as u32,
                cfg.space.mask_id(),
                cfg.space.vocab_size(),
                cfg.pad_id,
                block,
            );
        }
        out
    }

    #[test]
    fn kernel_source_on_emulated_threads_reproduces_the_cpu_copies_bit_for_bit() {
        for (n, s, block) in [(3, 24, 8), (2, 1, 4), (1, 2, 1), (4, 67, 32)] {
            let ids = rows(n, s.max(2), 9 + n as u64);
            let s = s.max(2);
            for &edit in TokenEdit::ALL {
                for rate in [0.0, 0.1, 0.5, 1.0] {
                    let cfg = TokenCopies {
                        perturbation: TokenPerturbation::new(edit, rate).unwrap(),
                        space: bert(),
                        seed: 42,
                        copies: 3,
                        copy0: 5,
                        pad_id: 0,
                    };
                    let t = Tensor::from_vec(ids.clone(), (n, s), &Device::Cpu).unwrap();
                    let cpu = perturb_tokens(&t, &cfg).unwrap();
                    assert_eq!(cpu.dims(), &[n, 3, s]);
                    let cpu = cpu.flatten_all().unwrap().to_vec1::<u32>().unwrap();
                    let emu = emulated(&ids, n, s, &cfg, block);
                    assert_eq!(emu, cpu, "{edit} rate {rate} n {n} s {s} block {block}");
                }
            }
        }
    }

    #[test]
    fn copies_are_the_scalar_scheme_padded() {
        let ids = rows(2, 16, 3);
        let cfg = TokenCopies {
            perturbation: TokenPerturbation::new(TokenEdit::Drop, 0.3).unwrap(),
            space: bert(),
            seed: 7,
            copies: 2,
            copy0: 0,
            pad_id: 0,
        };
        let t = Tensor::from_vec(ids.clone(), (2, 16), &Device::Cpu).unwrap();
        let out = perturb_tokens(&t, &cfg).unwrap().to_vec3::<u32>().unwrap();
        for (i, row) in ids.chunks(16).enumerate() {
            for (j, copy) in out[i].iter().enumerate() {
                let want = perturb_ids(row, cfg.perturbation, 7, j, &cfg.space);
                assert!(want.len() < 16, "drop at 0.3 shortens the row");
                assert_eq!(&copy[..want.len()], want.as_slice());
                assert!(copy[want.len()..].iter().all(|&x| x == 0));
            }
        }
    }

    #[test]
    fn empty_batches_and_bad_input() {
        let cfg = TokenCopies {
            perturbation: TokenPerturbation::new(TokenEdit::Mask, 0.1).unwrap(),
            space: bert(),
            seed: 1,
            copies: 4,
            copy0: 0,
            pad_id: 0,
        };
        let empty = Tensor::zeros((0, 8), DType::U32, &Device::Cpu).unwrap();
        assert_eq!(perturb_tokens(&empty, &cfg).unwrap().dims(), &[0, 4, 8]);
        let f = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
        let e = perturb_tokens(&f, &cfg).unwrap_err().to_string();
        assert!(e.contains("perturb_tokens") && e.contains("u32"), "{e}");
    }
}
