//! What the fused encoder ops share on the CPU: the element types they take (f32, and the half
//! types the encoder uses on GPUs, computed in f32), contiguous views of their inputs, and the
//! row-parallel loop.

use candle_core::{bail, CpuStorage, DType, Layout, Result, Tensor, WithDType};
use half::{bf16, f16};
use rayon::prelude::*;

/// An element type the fused ops read and write; arithmetic is always f32.
pub(crate) trait Elem: WithDType + Send + Sync {
    fn to_f32(self) -> f32;
    fn of_f32(v: f32) -> Self;
}

impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        v
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn of_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

/// The contiguous elements `layout` describes in `src`.
pub(crate) fn contiguous<'a, T>(src: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&src[start..end]),
        None => bail!("{what} {:?} must be contiguous", layout.shape()),
    }
}

/// Wraps `out` as the storage of its element type.
pub(crate) fn storage<T: Elem>(out: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(out)
}

/// Rows of `out` (each `row` long) filled by `f(index, row)` on rayon's pool. Work below about
/// 32 KiB stays on the calling thread: splitting it costs more than it saves.
pub(crate) fn for_rows<T: Send>(out: &mut [T], row: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if row == 0 {
        return;
    }
    if out.len() < 8192 {
        out.chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r));
    } else {
        let rows_per_task = (8192 / row).max(1);
        out.par_chunks_mut(row * rows_per_task)
            .enumerate()
            .for_each(|(t, block)| {
                for (j, r) in block.chunks_mut(row).enumerate() {
                    f(t * rows_per_task + j, r);
                }
            });
    }
}

/// `mask` (any dtype, nonzero = keep) as the contiguous u32 mask the CPU ops and kernels read.
pub(crate) fn u32_mask(mask: &Tensor) -> Result<Tensor> {
    if mask.dtype() == DType::U32 {
        mask.contiguous()
    } else {
        mask.ne(0f64)?.to_dtype(DType::U32)
    }
}

/// An output buffer shared by parallel tasks that each write their own disjoint elements (the
/// ops that fill strided blocks, which `par_chunks_mut` cannot hand out).
#[derive(Clone, Copy)]
pub(crate) struct OutPtr(pub(crate) *mut f32);
// SAFETY: users write disjoint elements from each task, and the buffer outlives the tasks.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, not a field access, so closures capture the `Sync` wrapper.
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// The dtype error every fused op gives for an unsupported input.
pub(crate) fn unsupported<T>(op: &str, layout: &Layout, dtype: candle_core::DType) -> Result<T> {
    dtype_error(op, "input", layout.dims(), dtype)
}

/// Refuses `t` (the op's input named `what`) unless it is f32, f16 or bf16.
pub(crate) fn check_float(op: &str, what: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => Ok(()),
        dtype => dtype_error(op, what, t.dims(), dtype),
    }
}

fn dtype_error<T>(op: &str, what: &str, dims: &[usize], dtype: DType) -> Result<T> {
    bail!("{op}: {what} {dims:?} has dtype {dtype:?}; expected f32, f16 or bf16")
}
