//! Fused scale + key-padding mask + softmax over attention scores: `scores [B, heads, Tq, Tk]`
//! and `mask [B, Tk]` (nonzero = token) → `softmax(scores · scale)` over the kept keys, 0 on
//! padded keys. A row whose keys are all padding is uniform (`1/Tk`), which is what the
//! reference's additive dtype-minimum bias gives (every logit equal), so a fully padded window
//! stays finite. One pass per row instead of candle's scale, bias add and softmax.
//!
//! f32, f16 or bf16 scores (arithmetic in f32); the mask is read as u32. CPU and, in a `cuda`
//! build, CUDA (`kernels/masked_softmax.cu`, one block per query row).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};

use super::elem::{check_float, contiguous, for_rows, storage, u32_mask, unsupported, Elem};

#[derive(Debug, Clone, Copy)]
struct MaskedSoftmax {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "masked_softmax"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        sl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::U32(m) = m else {
            bail!("masked_softmax: mask {:?} must be u32", ml.shape());
        };
        let m = contiguous(m, ml, "masked_softmax: mask")?;
        let out = match s {
            CpuStorage::F32(s) => storage(self.cpu(s, sl, m)?),
            CpuStorage::F16(s) => storage(self.cpu(s, sl, m)?),
            CpuStorage::BF16(s) => storage(self.cpu(s, sl, m)?),
            _ => return unsupported("masked_softmax", sl, s.dtype()),
        };
        Ok((out, sl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        sl: &Layout,
        m: &candle_core::CudaStorage,
        ml: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};

        let (b, heads, tq, tk) = sl.shape().dims4()?;
        let (Some((s0, s1)), Some((m0, m1)), S::U32(mask)) =
            (sl.contiguous_offsets(), ml.contiguous_offsets(), &m.slice)
        else {
            bail!(
                "masked_softmax: scores {:?} and a u32 mask must be contiguous",
                sl.shape()
            );
        };
        let rows = b * heads * tq;
        let dev = s.device().clone();
        let cfg = LaunchConfig {
            grid_dim: (rows.clamp(1, 65_535) as u32, 1, 1),
            block_dim: (super::ROW_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows32, tk32, per_batch) = (rows as u32, tk as u32, (heads * tq) as u32);
        macro_rules! launch {
            ($s:expr, $t:ty, $name:literal, $variant:ident) => {{
                // SAFETY: the kernel writes every element.
                let out = unsafe { dev.alloc::<$t>(rows * tk) }?;
                if rows * tk > 0 {
                    let (ss, ms) = ($s.slice(s0..s1), mask.slice(m0..m1));
                    let func = dev.get_or_load_custom_func($name, "tremble_masked_softmax", PTX)?;
                    let mut builder = func.builder();
                    builder.arg(&ss);
                    builder.arg(&ms);
                    builder.arg(&out);
                    builder.arg(&rows32);
                    builder.arg(&tk32);
                    builder.arg(&per_batch);
                    builder.arg(&self.scale);
                    // SAFETY: argument types and order match the kernel's signature.
                    unsafe { builder.launch(cfg) }.w()?;
                }
                S::$variant(out)
            }};
        }
        let slice = match &s.slice {
            S::F32(x) => launch!(x, f32, "masked_softmax_f32", F32),
            S::F16(x) => launch!(x, half::f16, "masked_softmax_f16", F16),
            S::BF16(x) => launch!(x, half::bf16, "masked_softmax_bf16", BF16),
            _ => return unsupported("masked_softmax", sl, s.dtype()),
        };
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            sl.shape().clone(),
        ))
    }
}

/// The kernel's PTX, compiled by build.rs from `kernels/masked_softmax.cu`.
#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/masked_softmax.ptx"));

impl MaskedSoftmax {
    fn cpu<T: Elem>(&self, s: &[T], sl: &Layout, mask: &[u32]) -> Result<Vec<T>> {
        let (_, heads, tq, tk) = sl.shape().dims4()?;
        let s = contiguous(s, sl, "masked_softmax: scores")?;
        let per_batch = heads * tq;
        let mut out = vec![T::zero(); s.len()];
        for_rows(&mut out, tk, |row, o| {
            let x = &s[row * tk..(row + 1) * tk];
            let m = &mask[(row / per_batch) * tk..(row / per_batch + 1) * tk];
            let mut max = f32::NEG_INFINITY;
            let mut kept = 0usize;
            for (&v, &k) in x.iter().zip(m) {
                if k != 0 {
                    max = max.max(v.to_f32() * self.scale);
                    kept += 1;
                }
            }
            if kept == 0 {
                o.fill(T::of_f32(1.0 / tk as f32));
                return;
            }
            // Exponentials kept in f32 until the sum is known; on the stack for BERT lengths.
            let (mut stack, mut heap) = ([0f32; 512], Vec::new());
            let e: &mut [f32] = if tk <= stack.len() {
                &mut stack[..tk]
            } else {
                heap.resize(tk, 0f32);
                &mut heap
            };
            // Branch-free and reduction-free, so this loop vectorizes; the sum follows in order.
            for ((e, &v), &k) in e.iter_mut().zip(x).zip(m) {
                let z = exp(v.to_f32() * self.scale - max);
                *e = if k != 0 { z } else { 0.0 };
            }
            let sum: f32 = e.iter().sum();
            let inv = 1.0 / sum;
            for (y, &e) in o.iter_mut().zip(e.iter()) {
                *y = T::of_f32(e * inv);
            }
        });
        Ok(out)
    }
}

/// exp(x) in f32 for softmax logits (x ≤ 0; larger x is taken as 0, below −87 as −87): Cody–Waite
/// reduction by ln 2 and the degree-6 polynomial of Cephes' `expf`, the exponent written into
/// the bits; relative error ≈ 2e-7. Same operations, in the same order, as `tr_exp` in
/// `kernels/common.cuh`; unlike libm's `expf` it inlines and vectorizes.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the kernel's literals, digit for digit
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 0.0);
    let n = (x * std::f32::consts::LOG2_E + 12582912.0) - 12582912.0;
    let r = x - n * 0.693359375;
    let r = r - n * -2.12194440e-4;
    let mut p = 1.9875691500e-4_f32;
    p = p * r + 1.3981999507e-3;
    p = p * r + 8.3334519073e-3;
    p = p * r + 4.1665795894e-2;
    p = p * r + 1.6666665459e-1;
    p = p * r + 5.0000001201e-1;
    let y = p * (r * r) + r + 1.0;
    y * f32::from_bits((((n as i32) + 127) << 23) as u32)
}

/// [`exp`] on 16 lanes, operation for operation (no fused multiply-adds, so each lane gives
/// exactly what [`exp`] gives).
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::excessive_precision)] // the kernel's literals, digit for digit
pub unsafe fn exp16(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let c = _mm512_set1_ps;
    let x = _mm512_max_ps(_mm512_min_ps(x, c(0.0)), c(-87.0));
    let shift = c(12582912.0);
    let n = _mm512_sub_ps(
        _mm512_add_ps(_mm512_mul_ps(x, c(std::f32::consts::LOG2_E)), shift),
        shift,
    );
    let r = _mm512_sub_ps(x, _mm512_mul_ps(n, c(0.693359375)));
    let r = _mm512_sub_ps(r, _mm512_mul_ps(n, c(-2.12194440e-4)));
    let mut p = c(1.9875691500e-4);
    for k in [
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c(k));
    }
    let y = _mm512_add_ps(
        _mm512_add_ps(_mm512_mul_ps(p, _mm512_mul_ps(r, r)), r),
        c(1.0),
    );
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvttps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(bits))
}

fn check(scores: &Tensor, mask: &Tensor, scale: f32) -> Result<()> {
    let dims = scores.dims();
    let ok_shape = dims.len() == 4 && mask.dims() == [dims[0], dims[3]];
    if !ok_shape {
        bail!(
            "masked_softmax: scores must be [B, heads, Tq, Tk] with mask [B, Tk], got {dims:?} \
             and {:?}",
            mask.dims()
        );
    }
    check_float("masked_softmax", "scores", scores)?;
    if !scale.is_finite() {
        bail!("masked_softmax: scale must be finite, got {scale} (scores {dims:?})");
    }
    Ok(())
}

/// `softmax(scores · scale)` over the last axis, restricted to the keys `mask` keeps; see the
/// module docs. The mask may have any integer or float dtype (nonzero = keep).
///
/// # Errors
/// When the shapes disagree, the dtype is not f32, f16 or bf16, or `scale` is not finite.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tremble::ops::masked_softmax;
///
/// let scores = Tensor::new(&[[[[0f32, 0.0, 9.0]]]], &Device::Cpu)?; // [1, 1, 1, 3]
/// let mask = Tensor::new(&[[1u32, 1, 0]], &Device::Cpu)?; // the third key is padding
/// let p = masked_softmax(&scores, &mask, 1.0)?.flatten_all()?.to_vec1::<f32>()?;
/// assert_eq!(p, [0.5, 0.5, 0.0]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f32) -> Result<Tensor> {
    check(scores, mask, scale)?;
    let mask = u32_mask(mask)?;
    scores
        .contiguous()?
        .apply_op2_no_bwd(&mask, &MaskedSoftmax { scale })
}

/// [`masked_softmax`] as BERT implementations write it, from plain candle ops: scale, add the
/// additive bias (0 for tokens, the f32 minimum for padding), softmax from `max`, `exp`, `sum`
/// and `div`. Differentiable, any device; the test oracle.
///
/// # Errors
/// As [`masked_softmax`].
pub fn masked_softmax_reference(scores: &Tensor, mask: &Tensor, scale: f32) -> Result<Tensor> {
    check(scores, mask, scale)?;
    let (b, _, _, tk) = scores.dims4()?;
    let dtype = scores.dtype();
    let keep = mask.ne(0f64)?.to_dtype(DType::F32)?;
    let bias = ((keep.ones_like()? - keep)? * f64::from(f32::MIN))?.reshape((b, 1, 1, tk))?;
    let logits = (scores.to_dtype(DType::F32)? * f64::from(scale))?.broadcast_add(&bias)?;
    let shifted = logits.broadcast_sub(&logits.max_keepdim(D::Minus1)?)?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?.to_dtype(dtype)
}

#[cfg(test)]
mod tests {
    /// exp16 gives exactly what exp gives, lane for lane, across and beyond the clamped range.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp16_matches_exp_bit_for_bit() {
        use std::arch::x86_64::*;
        if !is_x86_feature_detected!("avx512f") {
            eprintln!("skipping: this CPU lacks AVX-512F");
            return;
        }
        let xs: Vec<f32> = (0..4096).map(|i| -100.0 + i as f32 * 0.0259).collect();
        for chunk in xs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F was detected; 16 floats in and out.
            unsafe {
                let v = super::exp16(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(got.as_mut_ptr(), v);
            }
            for (x, g) in chunk.iter().zip(got) {
                assert_eq!(g.to_bits(), super::exp(*x).to_bits(), "exp({x})");
            }
        }
    }
}
