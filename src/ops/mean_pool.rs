//! Masked mean pooling: hidden states `[B, T, H]` and a mask `[B, T]` (nonzero = token) →
//! `[B, H]`, the mean over each row's tokens, as sentence-transformers pools. The token count
//! is clamped at 1e-9, so an all-padding row pools to zeros, not NaN. One pass instead of
//! candle's mask multiply, two sums and a division.
//!
//! f32, f16 or bf16 (arithmetic in f32); the mask is read as u32. CPU and, in a `cuda` build,
//! CUDA (`kernels/mean_pool.cu`, one thread per output element).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

use super::elem::{check_float, contiguous, for_rows, storage, u32_mask, unsupported, Elem};

struct MeanPool;

impl CustomOp2 for MeanPool {
    fn name(&self) -> &'static str {
        "mean_pool"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, _, h) = xl.shape().dims3()?;
        let CpuStorage::U32(m) = m else {
            bail!("mean_pool: mask {:?} must be u32", ml.shape());
        };
        let m = contiguous(m, ml, "mean_pool: mask")?;
        let out = match x {
            CpuStorage::F32(x) => storage(cpu(x, xl, m)?),
            CpuStorage::F16(x) => storage(cpu(x, xl, m)?),
            CpuStorage::BF16(x) => storage(cpu(x, xl, m)?),
            _ => return unsupported("mean_pool", xl, x.dtype()),
        };
        Ok((out, Shape::from_dims(&[b, h])))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        m: &candle_core::CudaStorage,
        ml: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};

        let (b, t, h) = xl.shape().dims3()?;
        let (Some((x0, x1)), Some((m0, m1)), S::U32(mask)) =
            (xl.contiguous_offsets(), ml.contiguous_offsets(), &m.slice)
        else {
            bail!(
                "mean_pool: hidden {:?} and a u32 mask must be contiguous",
                xl.shape()
            );
        };
        let dev = x.device().clone();
        let n = b * h;
        let cfg = LaunchConfig {
            grid_dim: ((n as u32).div_ceil(128).clamp(1, 65_535), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (b32, t32, h32) = (b as u32, t as u32, h as u32);
        macro_rules! launch {
            ($x:expr, $t:ty, $name:literal, $variant:ident) => {{
                // SAFETY: the kernel writes every element.
                let out = unsafe { dev.alloc::<$t>(n) }?;
                if n > 0 {
                    let (xs, ms) = ($x.slice(x0..x1), mask.slice(m0..m1));
                    let func = dev.get_or_load_custom_func($name, "tremble_mean_pool", PTX)?;
                    let mut builder = func.builder();
                    builder.arg(&xs);
                    builder.arg(&ms);
                    builder.arg(&out);
                    builder.arg(&b32);
                    builder.arg(&t32);
                    builder.arg(&h32);
                    // SAFETY: argument types and order match the kernel's signature.
                    unsafe { builder.launch(cfg) }.w()?;
                }
                S::$variant(out)
            }};
        }
        let slice = match &x.slice {
            S::F32(v) => launch!(v, f32, "mean_pool_f32", F32),
            S::F16(v) => launch!(v, half::f16, "mean_pool_f16", F16),
            S::BF16(v) => launch!(v, half::bf16, "mean_pool_bf16", BF16),
            _ => return unsupported("mean_pool", xl, x.dtype()),
        };
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            Shape::from_dims(&[b, h]),
        ))
    }
}

/// The kernel's PTX, compiled by build.rs from `kernels/mean_pool.cu`.
#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mean_pool.ptx"));

fn cpu<T: Elem>(x: &[T], xl: &Layout, mask: &[u32]) -> Result<Vec<T>> {
    let (b, t, h) = xl.shape().dims3()?;
    let x = contiguous(x, xl, "mean_pool: hidden")?;
    let mut out = vec![T::zero(); b * h];
    for_rows(&mut out, h, |row, o| {
        let mut sum = vec![0f32; h];
        let mut count = 0f32;
        for (ti, &k) in mask[row * t..(row + 1) * t].iter().enumerate() {
            if k != 0 {
                let xs = &x[(row * t + ti) * h..(row * t + ti + 1) * h];
                for (s, v) in sum.iter_mut().zip(xs) {
                    *s += v.to_f32();
                }
                count += 1.0;
            }
        }
        let count = count.max(1e-9);
        for (y, s) in o.iter_mut().zip(sum) {
            *y = T::of_f32(s / count);
        }
    });
    Ok(out)
}

fn check(hidden: &Tensor, mask: &Tensor) -> Result<()> {
    let dims = hidden.dims();
    if dims.len() != 3 || mask.dims() != [dims[0], dims[1]] {
        bail!(
            "mean_pool: hidden must be [B, T, H] with mask [B, T], got {dims:?} and {:?}",
            mask.dims()
        );
    }
    check_float("mean_pool", "hidden", hidden)
}

/// The mean of each row's token states; see the module docs. The mask may have any integer or
/// float dtype (nonzero = token).
///
/// # Errors
/// When the shapes disagree or the dtype is not f32, f16 or bf16.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tremble::ops::masked_mean_pool;
///
/// let hidden = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0], [100.0, 100.0]]], &Device::Cpu)?;
/// let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu)?;
/// assert_eq!(masked_mean_pool(&hidden, &mask)?.to_vec2::<f32>()?, [[2.0, 3.0]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn masked_mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check(hidden, mask)?;
    let mask = u32_mask(mask)?;
    hidden.contiguous()?.apply_op2_no_bwd(&mask, &MeanPool)
}

/// [`masked_mean_pool`] made of plain candle ops (mask multiply, sums, clamp, division):
/// differentiable, any device; the test oracle.
///
/// # Errors
/// As [`masked_mean_pool`].
pub fn masked_mean_pool_reference(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    check(hidden, mask)?;
    let dtype = hidden.dtype();
    let m = mask.ne(0f64)?.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let summed = hidden.to_dtype(DType::F32)?.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)?.to_dtype(dtype)
}
