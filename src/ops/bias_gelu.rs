//! Fused bias add + GELU(erf): `y = gelu(x + bias)` with the bias broadcast over the last
//! dimension, the activation of BERT's feed-forward block applied straight to a bias-free
//! matmul. One pass instead of candle's bias add and (single-threaded) `gelu_erf`.
//!
//! erf is [`erf`], a rational approximation (max abs error ≈ 4e-7) that needs no `exp`, so the
//! CPU loop vectorizes; the kernel (`kernels/bias_gelu.cu`) runs the same operations.
//! f32, f16 or bf16; arithmetic in f32.

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp2, DType, InplaceOp2, Layout, Result, Shape, Tensor, D,
};

use super::elem::{check_float, contiguous, for_rows, storage, unsupported, Elem};

/// [`BiasGelu`] overwriting its input: no output buffer to allocate and zero-fill (the zero
/// fill alone was 1.4% of a 1 × 128 forward).
struct BiasGeluInPlace;

impl InplaceOp2 for BiasGeluInPlace {
    fn name(&self) -> &'static str {
        "bias_gelu_in_place"
    }

    fn cpu_fwd(&self, x: &mut CpuStorage, xl: &Layout, b: &CpuStorage, bl: &Layout) -> Result<()> {
        match (x, b) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => cpu_in_place(x, xl, b, bl),
            (CpuStorage::F16(x), CpuStorage::F16(b)) => cpu_in_place(x, xl, b, bl),
            (CpuStorage::BF16(x), CpuStorage::BF16(b)) => cpu_in_place(x, xl, b, bl),
            (x, _) => unsupported("bias_gelu", xl, x.dtype()),
        }
    }
}

/// erf in f32 (the coefficients of Eigen's float erf: odd numerator of degree 13 over an even
/// denominator of degree 8, input clamped at ±4 where erf rounds to ±1). Same operations, in
/// the same order, as `tr_erf` in `kernels/common.cuh`.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the kernel's literals, digit for digit
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.72614225801306e-10_f32;
    p = p * x2 + 2.77068142495902e-08;
    p = p * x2 + -2.10102402082508e-06;
    p = p * x2 + -5.69250639462346e-05;
    p = p * x2 + -7.34990630326855e-04;
    p = p * x2 + -2.95459980854025e-03;
    p = p * x2 + -1.60960333262415e-02;
    let mut q = -1.45660718464996e-05_f32;
    q = q * x2 + -2.13374055278905e-04;
    q = q * x2 + -1.68282697438203e-03;
    q = q * x2 + -7.37332916720468e-03;
    q = q * x2 + -1.42647390514189e-02;
    x * p / q
}

/// GELU with the exact (erf) form, through [`erf`].
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

struct BiasGelu;

impl CustomOp2 for BiasGelu {
    fn name(&self) -> &'static str {
        "bias_gelu"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (x, b) {
            (CpuStorage::F32(x), CpuStorage::F32(b)) => storage(cpu(x, xl, b, bl)?),
            (CpuStorage::F16(x), CpuStorage::F16(b)) => storage(cpu(x, xl, b, bl)?),
            (CpuStorage::BF16(x), CpuStorage::BF16(b)) => storage(cpu(x, xl, b, bl)?),
            _ => return unsupported("bias_gelu", xl, x.dtype()),
        };
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};

        let n = xl.shape().elem_count();
        let cols = bl.shape().elem_count();
        let (Some((x0, x1)), Some((b0, b1))) = (xl.contiguous_offsets(), bl.contiguous_offsets())
        else {
            bail!("bias_gelu: x {:?} and bias must be contiguous", xl.shape());
        };
        let dev = x.device().clone();
        let cfg = LaunchConfig {
            grid_dim: ((n as u32).div_ceil(256).clamp(1, 65_535), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let (n32, c32) = (n as u32, cols as u32);
        macro_rules! launch {
            ($x:expr, $b:expr, $t:ty, $name:literal, $variant:ident) => {{
                // SAFETY: the kernel writes every element.
                let out = unsafe { dev.alloc::<$t>(n) }?;
                if n > 0 {
                    let (xs, bs) = ($x.slice(x0..x1), $b.slice(b0..b1));
                    let func = dev.get_or_load_custom_func($name, "tremble_bias_gelu", PTX)?;
                    let mut builder = func.builder();
                    builder.arg(&xs);
                    builder.arg(&bs);
                    builder.arg(&out);
                    builder.arg(&n32);
                    builder.arg(&c32);
                    // SAFETY: argument types and order match the kernel's signature.
                    unsafe { builder.launch(cfg) }.w()?;
                }
                S::$variant(out)
            }};
        }
        let slice = match (&x.slice, &b.slice) {
            (S::F32(x), S::F32(b)) => launch!(x, b, f32, "bias_gelu_f32", F32),
            (S::F16(x), S::F16(b)) => launch!(x, b, half::f16, "bias_gelu_f16", F16),
            (S::BF16(x), S::BF16(b)) => launch!(x, b, half::bf16, "bias_gelu_bf16", BF16),
            _ => return unsupported("bias_gelu", xl, x.dtype()),
        };
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            xl.shape().clone(),
        ))
    }
}

/// The kernel's PTX, compiled by build.rs from `kernels/bias_gelu.cu`.
#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/bias_gelu.ptx"));

/// The op on a copy of `x`: the in-place rows run on it, so both forms give the same bits.
fn cpu<T: Elem>(x: &[T], xl: &Layout, b: &[T], bl: &Layout) -> Result<Vec<T>> {
    let mut out = contiguous(x, xl, "bias_gelu: x")?.to_vec();
    gelu_rows(&mut out, b, bl)?;
    Ok(out)
}

fn cpu_in_place<T: Elem>(x: &mut [T], xl: &Layout, b: &[T], bl: &Layout) -> Result<()> {
    let Some((start, end)) = xl.contiguous_offsets() else {
        bail!("bias_gelu: x {:?} must be contiguous", xl.shape());
    };
    gelu_rows(&mut x[start..end], b, bl)
}

/// `gelu(x + bias)` over the rows of `x`, in place.
fn gelu_rows<T: Elem>(x: &mut [T], b: &[T], bl: &Layout) -> Result<()> {
    let b: Vec<f32> = contiguous(b, bl, "bias_gelu: bias")?
        .iter()
        .map(|v| v.to_f32())
        .collect();
    for_rows(x, b.len(), |_, row| gelu_row(row, &b));
    Ok(())
}

/// One row, in place, with 512- or 256-bit vectors where the CPU has AVX-512 or AVX2 (the
/// build targets baseline x86-64, whose 128-bit vectors left this op at 4% of a forward).
/// Same operations in the same order every way (no fused multiply-adds), so the results are
/// identical.
fn gelu_row<T: Elem>(o: &mut [T], b: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        unsafe { gelu_row_avx512(o, b) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected.
        unsafe { gelu_row_avx2(o, b) };
        return;
    }
    gelu_row_body(o, b);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gelu_row_avx512<T: Elem>(o: &mut [T], b: &[f32]) {
    gelu_row_body(o, b);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gelu_row_avx2<T: Elem>(o: &mut [T], b: &[f32]) {
    gelu_row_body(o, b);
}

#[inline(always)]
fn gelu_row_body<T: Elem>(o: &mut [T], b: &[f32]) {
    for (y, &c) in o.iter_mut().zip(b) {
        *y = T::of_f32(gelu(y.to_f32() + c));
    }
}

fn check(x: &Tensor, bias: &Tensor) -> Result<()> {
    let cols = x.dim(D::Minus1)?;
    if cols == 0 || bias.dims() != [cols] || bias.dtype() != x.dtype() {
        bail!(
            "bias_gelu: x {:?} {:?} needs a bias [{cols}] of its dtype (cols > 0), got {:?} {:?}",
            x.dims(),
            x.dtype(),
            bias.dims(),
            bias.dtype()
        );
    }
    check_float("bias_gelu", "x", x)
}

/// `gelu(x + bias)` over the last dimension, in one pass.
///
/// # Errors
/// When `bias` is not `[x.dim(-1)]` of `x`'s dtype, or the dtype is not f32, f16 or bf16.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tremble::ops::bias_gelu;
///
/// let x = Tensor::new(&[[-1f32, 0.0, 1.0]], &Device::Cpu)?;
/// let b = Tensor::new(&[1f32, 0.0, 2.0], &Device::Cpu)?;
/// let y = bias_gelu(&x, &b)?.to_vec2::<f32>()?;
/// assert_eq!(&y[0][..2], &[0.0, 0.0]);
/// assert!((y[0][2] - 2.995_95).abs() < 1e-5); // gelu(3)
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn bias_gelu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check(x, bias)?;
    x.contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &BiasGelu)
}

/// [`bias_gelu`] written over `x` on the CPU (other devices get a new tensor). For tensors
/// this crate has just made and holds alone: every tensor sharing `x`'s storage sees the
/// change.
///
/// # Errors
/// As [`bias_gelu`].
pub(crate) fn bias_gelu_in_place(x: Tensor, bias: &Tensor) -> Result<Tensor> {
    check(&x, bias)?;
    if !x.device().is_cpu() || !x.is_contiguous() {
        return bias_gelu(&x, bias);
    }
    x.inplace_op2(&bias.contiguous()?, &BiasGeluInPlace)?;
    Ok(x)
}

/// [`bias_gelu`] made of plain candle ops (`broadcast_add`, `gelu_erf`): differentiable, any
/// device; the test oracle.
///
/// # Errors
/// As [`bias_gelu`].
pub fn bias_gelu_reference(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    check(x, bias)?;
    let dtype = x.dtype();
    x.to_dtype(DType::F32)?
        .broadcast_add(&bias.to_dtype(DType::F32)?)?
        .gelu_erf()?
        .to_dtype(dtype)
}
