//! Fused residual add + LayerNorm over the last dimension: `y = (v − mean(v)) / sqrt(var(v) +
//! ε) · weight + bias` with `v = x + residual` (or `v = x`), the population variance, one pass
//! over each row instead of candle's add and norm. BERT's post-norm layers end in exactly this.
//!
//! f32, f16 or bf16; arithmetic in f32; weight and bias in the input's dtype. CPU and, in a
//! `cuda` build, CUDA (`kernels/layer_norm.cu`, one block per row).

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};

use super::elem::{contiguous, for_rows, storage, unsupported, Elem};

#[derive(Debug, Clone, Copy)]
struct AddLayerNorm {
    eps: f32,
    residual: bool,
}

impl CustomOp3 for AddLayerNorm {
    fn name(&self) -> &'static str {
        "layer_norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        r: &CpuStorage,
        rl: &Layout,
        wb: &CpuStorage,
        wbl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = match (x, r, wb) {
            (CpuStorage::F32(x), CpuStorage::F32(r), CpuStorage::F32(wb)) => {
                storage(self.cpu(x, xl, r, rl, wb, wbl)?)
            }
            (CpuStorage::F16(x), CpuStorage::F16(r), CpuStorage::F16(wb)) => {
                storage(self.cpu(x, xl, r, rl, wb, wbl)?)
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(r), CpuStorage::BF16(wb)) => {
                storage(self.cpu(x, xl, r, rl, wb, wbl)?)
            }
            _ => return unsupported("layer_norm", xl, x.dtype()),
        };
        Ok((out, xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        r: &candle_core::CudaStorage,
        rl: &Layout,
        wb: &candle_core::CudaStorage,
        wbl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice as S, WrapErr};

        let h = xl.dims()[xl.dims().len() - 1];
        let rows = xl.shape().elem_count() / h.max(1);
        let offsets = |l: &Layout| match l.contiguous_offsets() {
            Some(o) => Ok(o),
            None => bail!("layer_norm: {:?} must be contiguous", l.shape()),
        };
        let ((x0, x1), (r0, r1), (w0, w1)) = (offsets(xl)?, offsets(rl)?, offsets(wbl)?);
        let dev = x.device().clone();
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (super::ROW_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (rows32, h32, res) = (rows as u32, h as u32, u32::from(self.residual));
        macro_rules! launch {
            ($x:expr, $r:expr, $wb:expr, $t:ty, $name:literal, $variant:ident) => {{
                // SAFETY: the kernel writes every element.
                let out = unsafe { dev.alloc::<$t>(rows * h) }?;
                if rows > 0 {
                    let (xs, rs) = ($x.slice(x0..x1), $r.slice(r0..r1));
                    let (ws, bs) = ($wb.slice(w0..w0 + h), $wb.slice(w0 + h..w1));
                    let func = dev.get_or_load_custom_func($name, "tremble_layer_norm", PTX)?;
                    let mut b = func.builder();
                    b.arg(&xs);
                    b.arg(&rs);
                    b.arg(&ws);
                    b.arg(&bs);
                    b.arg(&out);
                    b.arg(&rows32);
                    b.arg(&h32);
                    b.arg(&res);
                    b.arg(&self.eps);
                    // SAFETY: argument types and order match the kernel's signature.
                    unsafe { b.launch(cfg) }.w()?;
                }
                S::$variant(out)
            }};
        }
        let slice = match (&x.slice, &r.slice, &wb.slice) {
            (S::F32(a), S::F32(b), S::F32(c)) => launch!(a, b, c, f32, "layer_norm_f32", F32),
            (S::F16(a), S::F16(b), S::F16(c)) => {
                launch!(a, b, c, half::f16, "layer_norm_f16", F16)
            }
            (S::BF16(a), S::BF16(b), S::BF16(c)) => {
                launch!(a, b, c, half::bf16, "layer_norm_bf16", BF16)
            }
            _ => return unsupported("layer_norm", xl, x.dtype()),
        };
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            xl.shape().clone(),
        ))
    }
}

/// The kernel's PTX, compiled by build.rs from `kernels/layer_norm.cu`.
#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/layer_norm.ptx"));

impl AddLayerNorm {
    fn cpu<T: Elem>(
        &self,
        x: &[T],
        xl: &Layout,
        r: &[T],
        rl: &Layout,
        wb: &[T],
        wbl: &Layout,
    ) -> Result<Vec<T>> {
        let x = contiguous(x, xl, "layer_norm: x")?;
        let r = contiguous(r, rl, "layer_norm: residual")?;
        let wb: Vec<f32> = contiguous(wb, wbl, "layer_norm: weight")?
            .iter()
            .map(|v| v.to_f32())
            .collect();
        let h = wb.len() / 2;
        let (w, b) = wb.split_at(h);
        let mut out = vec![T::zero(); x.len()];
        for_rows(&mut out, h, |i, o| {
            let xs = &x[i * h..(i + 1) * h];
            let rs = self.residual.then(|| &r[i * h..(i + 1) * h]);
            norm_row(o, xs, rs, w, b, self.eps);
        });
        Ok(out)
    }
}

/// One row, with 256-bit vectors where the CPU has AVX2 (the build targets baseline x86-64).
fn norm_row<T: Elem>(o: &mut [T], xs: &[T], rs: Option<&[T]>, w: &[f32], b: &[f32], eps: f32) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the feature was just detected.
        unsafe { norm_row_avx2(o, xs, rs, w, b, eps) };
        return;
    }
    norm_row_body(o, xs, rs, w, b, eps);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn norm_row_avx2<T: Elem>(
    o: &mut [T],
    xs: &[T],
    rs: Option<&[T]>,
    w: &[f32],
    b: &[f32],
    eps: f32,
) {
    norm_row_body(o, xs, rs, w, b, eps);
}

/// The row's `x + residual` goes to a per-thread f32 buffer first, so that the mean and the
/// variance are sums over one plain slice, which [`lane_sum`] splits into vector lanes.
#[inline(always)]
fn norm_row_body<T: Elem>(o: &mut [T], xs: &[T], rs: Option<&[T]>, w: &[f32], b: &[f32], eps: f32) {
    thread_local!(static V: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) });
    V.with_borrow_mut(|v| {
        v.clear();
        match rs {
            Some(rs) => v.extend(xs.iter().zip(rs).map(|(a, c)| a.to_f32() + c.to_f32())),
            None => v.extend(xs.iter().map(|a| a.to_f32())),
        }
        let h = v.len() as f32;
        let mean = lane_sum(v, |x| x) / h;
        let var = lane_sum(v, |x| (x - mean) * (x - mean)) / h;
        let inv = 1.0 / (var + eps).sqrt();
        for (((y, &x), &wj), &bj) in o.iter_mut().zip(v.iter()).zip(w).zip(b) {
            *y = T::of_f32((x - mean) * inv * wj + bj);
        }
    });
}

/// `Σ f(x)` in 16 running sums (one long chain of dependent adds kept LayerNorm at 3% of a
/// forward).
#[inline(always)]
fn lane_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    acc.iter().sum::<f32>() + tail
}

fn check(x: &Tensor, residual: Option<&Tensor>, weight: &Tensor, bias: &Tensor) -> Result<()> {
    let h = x.dim(D::Minus1)?;
    if h == 0 || weight.dims() != [h] || bias.dims() != [h] {
        bail!(
            "layer_norm: x {:?} needs weight and bias [{h}] (h > 0), got {:?} and {:?}",
            x.dims(),
            weight.dims(),
            bias.dims()
        );
    }
    if let Some(r) = residual {
        if r.dims() != x.dims() || r.dtype() != x.dtype() {
            bail!(
                "layer_norm: residual {:?} {:?} must match x {:?} {:?}",
                r.dims(),
                r.dtype(),
                x.dims(),
                x.dtype()
            );
        }
    }
    Ok(())
}

/// `LayerNorm(x + residual)` (or `LayerNorm(x)`) over the last dimension, in one pass.
///
/// # Errors
/// When the shapes disagree or the dtype is not f32, f16 or bf16.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tremble::ops::add_layer_norm;
///
/// let x = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu)?;
/// let r = Tensor::new(&[[1f32, 0.0, -1.0]], &Device::Cpu)?; // x + r is constant
/// let (w, b) = (Tensor::ones(3, candle_core::DType::F32, &Device::Cpu)?, Tensor::new(&[0f32, 1.0, 2.0], &Device::Cpu)?);
/// let y = add_layer_norm(&x, Some(&r), &w, &b, 1e-12)?.to_vec2::<f32>()?;
/// assert_eq!(y, [[0.0, 1.0, 2.0]]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn add_layer_norm(
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    check(x, residual, weight, bias)?;
    let x = x.contiguous()?;
    let r = match residual {
        Some(r) => r.contiguous()?,
        None => x.clone(),
    };
    let wb = Tensor::cat(&[weight, bias], 0)?.to_dtype(x.dtype())?;
    x.apply_op3_no_bwd(
        &r,
        &wb,
        &AddLayerNorm {
            eps: eps as f32,
            residual: residual.is_some(),
        },
    )
}

/// [`add_layer_norm`] made of plain candle ops (differentiable, any device): the test oracle
/// and what training runs.
///
/// # Errors
/// As [`add_layer_norm`].
pub fn add_layer_norm_reference(
    x: &Tensor,
    residual: Option<&Tensor>,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    check(x, residual, weight, bias)?;
    let dtype = x.dtype();
    let v = match residual {
        Some(r) => (x + r)?,
        None => x.clone(),
    }
    .to_dtype(DType::F32)?;
    let centered = v.broadcast_sub(&v.mean_keepdim(D::Minus1)?)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    normed
        .broadcast_mul(&weight.to_dtype(DType::F32)?)?
        .broadcast_add(&bias.to_dtype(DType::F32)?)?
        .to_dtype(dtype)
}
