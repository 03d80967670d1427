//! The int8 format of [`super::packed_linear`]: weights quantized once per output column,
//! activations per row on every call, products summed exactly in i32 by `vpdpbusd`
//! (AVX512-VNNI), then scaled back to f32 with the bias.
//!
//! Why: on this project's Zen 4 class CPUs `vpdpbusd` does 64 multiply-adds per instruction
//! against 32 for bf16 and 16 for f32, and the encoder's dense layers are most of its time.
//! Symmetric scales (`max |v| / 127`, values in -127..=127, ties to even) keep the arithmetic
//! simple: `vpdpbusd` wants one unsigned operand, so x is stored as `q + 128` and
//! `128 · Σ q_w` (per column, computed at packing) is taken back out of the sum.
//!
//! The format is defined by [`quantize`] and [`int8_linear_reference`], the kernel's oracle:
//! integer sums are exact, so the kernel agrees with it to the bit.

use std::sync::Arc;

use candle_core::{bail, DType, Result, Tensor};
use rayon::prelude::*;

use super::elem::OutPtr;
use super::packed_linear::{int8_supported, tiles, NR};

/// Rows per activation-quantization task.
const QUANT_ROWS: usize = 64;

/// `v` as int8 and its scale: `v ≈ q · scale` with `scale = max |v| / 127` (0 for an all-zero
/// `v`), `q = round_ties_even(v · 127 / max |v|)` clamped to -127..=127.
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
    let q = v
        .iter()
        .map(|&x| (x * inv).round_ties_even().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, max / 127.0)
}

/// Weights `[n, k]` in the int8 format: per 32-column block, per group of four input features
/// (a quad), 32 columns of four i8 in one u32 each; zero-padded.
#[derive(Debug)]
pub(super) struct Int8Weights {
    quads: usize,
    packed: Vec<u32>,
    /// Per column (zero-padded to the blocks): the weight scale.
    scale: Vec<f32>,
    /// Per column: `128 · Σ_k q_w`, the offset of x's unsigned storage.
    offset: Vec<i32>,
}

impl Int8Weights {
    /// Quantizes and packs the `n` rows of `k` in `w`.
    pub(super) fn pack(w: &[f32], n: usize, k: usize) -> Arc<Self> {
        let quads = k.div_ceil(4);
        let cols = n.div_ceil(NR) * NR;
        let mut packed = vec![0u32; n.div_ceil(NR) * quads * NR];
        let (mut scale, mut offset) = (vec![0f32; cols], vec![0i32; cols]);
        for (col, row) in w.chunks(k.max(1)).enumerate().take(n) {
            let (q, s) = quantize(row);
            scale[col] = s;
            offset[col] = 128 * q.iter().map(|&v| i32::from(v)).sum::<i32>();
            let (block, j) = (col / NR, col % NR);
            for (g, quad) in q.chunks(4).enumerate() {
                let mut bytes = [0u8; 4];
                for (b, &v) in bytes.iter_mut().zip(quad) {
                    *b = v as u8;
                }
                packed[(block * quads + g) * NR + j] = u32::from_le_bytes(bytes);
            }
        }
        Arc::new(Self {
            quads,
            packed,
            scale,
            offset,
        })
    }
}

/// The int8 format from plain loops: both sides through [`quantize`] (x per row, W per output
/// row), exact i32 sums, then `sum · (s_w · s_x) + b` as one fused multiply-add.
///
/// # Errors
/// When the shapes disagree.
pub fn int8_linear_reference(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    if x.dims().last() != Some(&k) {
        bail!(
            "int8_linear_reference: x {:?} does not fit weight [{n}, {k}]",
            x.dims()
        );
    }
    let flat =
        |t: &Tensor| -> Result<Vec<f32>> { t.to_dtype(DType::F32)?.flatten_all()?.to_vec1() };
    let w = flat(weight)?;
    let wq: Vec<(Vec<i8>, f32)> = w.chunks(k.max(1)).take(n).map(quantize).collect();
    let b = match bias {
        Some(b) => flat(b)?,
        None => vec![0.0; n],
    };
    let xs = flat(x)?;
    let m = x.elem_count() / k.max(1);
    let mut out = Vec::with_capacity(m * n);
    for row in 0..m {
        let (xq, sx) = quantize(&xs[row * k..(row + 1) * k]);
        for ((q, sw), &bias) in wq.iter().zip(&b) {
            let sum: i32 = xq
                .iter()
                .zip(q)
                .map(|(&a, &w)| i32::from(a) * i32::from(w))
                .sum();
            out.push((sum as f32).mul_add(sw * sx, bias));
        }
    }
    let mut dims = x.dims().to_vec();
    *dims.last_mut().expect("x has k features") = n;
    Tensor::from_vec(out, dims, x.device())
}

/// `x [m, k] · Wᵀ + b` in the int8 format; `bias` holds the blocks' padded columns.
#[cfg(target_arch = "x86_64")]
pub(super) fn run(
    x: &[f32],
    m: usize,
    n: usize,
    k: usize,
    w: &Int8Weights,
    bias: &[f32],
) -> Vec<f32> {
    assert!(int8_supported(), "int8 format: checked by the wrapper");
    let quads = w.quads;
    let mut a = vec![0u32; m * quads];
    let mut sx = vec![0f32; m];
    a.par_chunks_mut((QUANT_ROWS * quads).max(1))
        .zip(sx.par_chunks_mut(QUANT_ROWS))
        .enumerate()
        .for_each(|(t, (a, sx))| {
            for (i, s) in sx.iter_mut().enumerate() {
                let row = t * QUANT_ROWS + i;
                // SAFETY: the features were checked; the row has k f32 and quads u32.
                *s = unsafe {
                    kernels::quantize_row(
                        &x[row * k..(row + 1) * k],
                        &mut a[i * quads..(i + 1) * quads],
                    )
                };
            }
        });
    // Not zero-filled: every (row, column < n) element is written by its tile below.
    let mut out = Vec::<f32>::with_capacity(m * n);
    let dst = OutPtr(out.as_mut_ptr());
    // One pass over all quads: the sums stay exact in i32 registers until the epilogue.
    tiles(m, n, quads, usize::MAX, dst, |rows, r, block, _, _, c| {
        let col = block * NR;
        // SAFETY: VNNI was checked; `a` holds m rows of `quads` u32, the block quads × 32
        // u32, scale/offset/bias 32 columns from `col`; the kernel writes rows r..r+rows,
        // columns col..min(col+32, n) of the [m, n] output, which only this tile touches.
        unsafe {
            kernels::tile(
                rows,
                a.as_ptr().add(r * quads),
                quads,
                w.packed.as_ptr().add(block * quads * NR),
                sx.as_ptr().add(r),
                kernels::Columns {
                    scale: w.scale.as_ptr().add(col),
                    offset: w.offset.as_ptr().add(col),
                    bias: bias.as_ptr().add(col),
                    count: (n - col).min(NR),
                },
                c,
                n,
            )
        }
    });
    // SAFETY: every element of the m × n output was written above.
    unsafe { out.set_len(m * n) };
    out
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) fn run(_: &[f32], _: usize, _: usize, _: usize, _: &Int8Weights, _: &[f32]) -> Vec<f32> {
    unreachable!("int8 format: refused by the wrapper without AVX512-VNNI")
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    use super::super::packed_linear::kernels::masks;
    use super::super::packed_linear::{MR, NR};

    /// One row of x quantized like [`super::quantize`], stored as `q + 128` bytes in `dst`
    /// (zero-padded to whole quads); returns the row's scale.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row(x: &[f32], dst: &mut [u32]) -> f32 {
        let k = x.len();
        let full = k / 16 * 16;
        let mut vmax = _mm512_setzero_ps();
        for f in (0..full).step_by(16) {
            vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x.as_ptr().add(f))));
        }
        let max = (full..k).fold(_mm512_reduce_max_ps(vmax), |m, f| m.max(x[f].abs()));
        let inv = if max > 0.0 { 127.0 / max } else { 0.0 };
        let bytes = dst.as_mut_ptr().cast::<u8>();
        let (vinv, lo, hi, shift) = (
            _mm512_set1_ps(inv),
            _mm512_set1_epi32(-127),
            _mm512_set1_epi32(127),
            _mm512_set1_epi32(128),
        );
        for f in (0..full).step_by(16) {
            // cvtps rounds to nearest even, as `round_ties_even` in `quantize`.
            let q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x.as_ptr().add(f)), vinv));
            let q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), shift);
            _mm_storeu_si128(bytes.add(f).cast(), _mm512_cvtepi32_epi8(q));
        }
        for (f, &v) in x.iter().enumerate().skip(full) {
            let q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i32;
            *bytes.add(f) = (q + 128) as u8;
        }
        // Padding bytes meet zero weights; any value would do.
        for f in k..dst.len() * 4 {
            *bytes.add(f) = 128;
        }
        max / 127.0
    }

    /// Per-column data of a block: `count` valid columns.
    pub(super) struct Columns {
        pub scale: *const f32,
        pub offset: *const i32,
        pub bias: *const f32,
        pub count: usize,
    }

    /// `rows` (≤ 12) quantized rows of x (`lda` quads apart) × one 32-column block, written to
    /// C as f32.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        rows: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        sx: *const f32,
        cols: Columns,
        c: *mut f32,
        ldc: usize,
    ) {
        macro_rules! by_rows {
            ($($r:literal)*) => {
                match rows {
                    $($r => micro::<$r>(a, lda, b, sx, &cols, c, ldc),)*
                    _ => unreachable!("at most {MR} rows"),
                }
            };
        }
        by_rows!(1 2 3 4 5 6 7 8 9 10 11 12)
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn micro<const R: usize>(
        a: *const u32,
        lda: usize,
        b: *const u32,
        sx: *const f32,
        cols: &Columns,
        c: *mut f32,
        ldc: usize,
    ) {
        let mut acc0 = [_mm512_setzero_si512(); R];
        let mut acc1 = [_mm512_setzero_si512(); R];
        for g in 0..lda {
            let b0 = _mm512_loadu_si512(b.add(g * NR).cast());
            let b1 = _mm512_loadu_si512(b.add(g * NR + 16).cast());
            for i in 0..R {
                let x = _mm512_set1_epi32(*a.add(i * lda + g) as i32);
                acc0[i] = _mm512_dpbusd_epi32(acc0[i], x, b0);
                acc1[i] = _mm512_dpbusd_epi32(acc1[i], x, b1);
            }
        }
        let (m0, m1) = masks(cols.count);
        let (s0, s1) = (
            _mm512_loadu_ps(cols.scale),
            _mm512_loadu_ps(cols.scale.add(16)),
        );
        let (o0, o1) = (
            _mm512_loadu_si512(cols.offset.cast()),
            _mm512_loadu_si512(cols.offset.add(16).cast()),
        );
        let (z0, z1) = (
            _mm512_loadu_ps(cols.bias),
            _mm512_loadu_ps(cols.bias.add(16)),
        );
        for i in 0..R {
            let s = _mm512_set1_ps(*sx.add(i));
            let y0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc0[i], o0));
            let y1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc1[i], o1));
            let y0 = _mm512_fmadd_ps(y0, _mm512_mul_ps(s0, s), z0);
            let y1 = _mm512_fmadd_ps(y1, _mm512_mul_ps(s1, s), z1);
            _mm512_mask_storeu_ps(c.add(i * ldc), m0, y0);
            _mm512_mask_storeu_ps(c.add(i * ldc + 16), m1, y1);
        }
    }
}
