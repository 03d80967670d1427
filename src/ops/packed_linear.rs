//! `y = x·Wᵀ + b` on AVX-512 CPUs with W packed once at load, in f32 or bf16: the encoder's
//! dense layers on the CPU.
//!
//! Why our own: candle's matmul (the `gemm` crate) packs the transposed weight on every call
//! and adds the bias in a second pass; at batch 1 × 128 tokens the packing alone took 13% of
//! the forward. Here W is packed once ([`PackedWeights::f32`], [`PackedWeights::bf16`]) into
//! blocks of 32 output columns, so one 512-bit load feeds 16 columns; the 12 × 32
//! micro-kernel keeps 24 accumulators in registers, starting from the bias; tasks are
//! (96-row, 32-column) tiles on rayon's pool.
//!
//! The bf16 format rounds x and W to bf16 (8 significant bits, round to nearest even) and sums
//! each pair of products in f32 (`vdpbf16ps`, AVX512-BF16): on this project's Zen 4 class
//! machine 300-350 GFLOP/s on the encoder's shapes with 2 threads against ~190 for f32. The
//! f32 format differs from candle's matmul only in summation order. The int8 format
//! ([`PackedWeights::int8`], AVX512-VNNI) lives in [`super::int8_linear`]. CPU only, no
//! gradients.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

use super::elem::{contiguous, OutPtr};
use super::int8_linear::{self, Int8Weights};

/// Output columns per packed block and micro-kernel (all formats).
pub(super) const NR: usize = 32;
/// Rows per micro-kernel call.
pub(super) const MR: usize = 12;
/// Rows per task: a tile's x rows stay in L2 while its W block streams from L1/L2.
const MB: usize = 96;
/// Input features (f32) or feature pairs (bf16) per pass over a tile: 16 KiB of the W block,
/// which then stays in L1 for all the tile's rows.
const KC: usize = 128;

/// Whether this CPU runs [`packed_linear`] with f32 weights (AVX-512F).
pub fn packed_f32_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs [`packed_linear`] with bf16 weights (AVX-512F and AVX512-BF16).
pub fn bf16_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        packed_f32_supported() && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs [`packed_linear`] with int8 weights (AVX-512F/BW and AVX512-VNNI).
pub fn int8_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        packed_f32_supported()
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The packed elements: per 32-column block, per input feature (f32) or feature pair (bf16,
/// two per u32), 32 columns; zero-padded. Int8 has its own layout (see [`super::int8_linear`]).
#[derive(Debug, Clone)]
enum Packed {
    F32(Arc<Vec<f32>>),
    Bf16(Arc<Vec<u32>>),
    Int8(Arc<Int8Weights>),
}

/// A `[n, k]` weight and its bias, packed for [`packed_linear`].
#[derive(Debug, Clone)]
pub struct PackedWeights {
    n: usize,
    k: usize,
    packed: Packed,
    /// `[⌈n / 32⌉ · 32]`, zero-padded.
    bias: Arc<Vec<f32>>,
}

fn bf16_bits(v: f32) -> u32 {
    u32::from(bf16::from_f32(v).to_bits())
}

/// `[n, k]` as f32 rows, and the zero-padded bias.
fn rows_and_bias(weight: &Tensor, bias: Option<&Tensor>) -> Result<(Vec<f32>, Vec<f32>)> {
    let (n, k) = weight.dims2()?;
    let w: Vec<f32> = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let mut b = vec![0f32; n.div_ceil(NR) * NR];
    if let Some(bias) = bias {
        if bias.dims() != [n] {
            bail!(
                "packed_linear: bias {:?} does not fit weight [{n}, {k}]",
                bias.dims()
            );
        }
        b[..n].copy_from_slice(&bias.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    Ok((w, b))
}

impl PackedWeights {
    /// Packs `weight [n, k]` (any float dtype and device) and `bias [n]` in f32.
    ///
    /// # Errors
    /// When the shapes disagree.
    pub fn f32(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let (w, b) = rows_and_bias(weight, bias)?;
        let mut packed = vec![0f32; n.div_ceil(NR) * k * NR];
        for (col, row) in w.chunks(k.max(1)).enumerate().take(n) {
            let (block, j) = (col / NR, col % NR);
            for (f, &v) in row.iter().enumerate() {
                packed[(block * k + f) * NR + j] = v;
            }
        }
        Ok(Self {
            n,
            k,
            packed: Packed::F32(Arc::new(packed)),
            bias: Arc::new(b),
        })
    }

    /// Packs `weight [n, k]` and `bias [n]` with the weight rounded to bf16 (the bias stays
    /// f32).
    ///
    /// # Errors
    /// When the shapes disagree.
    pub fn bf16(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let (w, b) = rows_and_bias(weight, bias)?;
        let pairs = k.div_ceil(2);
        let mut packed = vec![0u32; n.div_ceil(NR) * pairs * NR];
        for (col, row) in w.chunks(k.max(1)).enumerate().take(n) {
            let (block, j) = (col / NR, col % NR);
            for (p, pair) in row.chunks(2).enumerate() {
                let hi = pair.get(1).map_or(0, |&v| bf16_bits(v));
                packed[(block * pairs + p) * NR + j] = bf16_bits(pair[0]) | (hi << 16);
            }
        }
        Ok(Self {
            n,
            k,
            packed: Packed::Bf16(Arc::new(packed)),
            bias: Arc::new(b),
        })
    }

    /// Packs `weight [n, k]` and `bias [n]` in the int8 format (see
    /// [`super::int8_linear`]; the bias stays f32).
    ///
    /// # Errors
    /// When the shapes disagree.
    pub fn int8(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (n, k) = weight.dims2()?;
        let (w, b) = rows_and_bias(weight, bias)?;
        Ok(Self {
            n,
            k,
            packed: Packed::Int8(Int8Weights::pack(&w, n, k)),
            bias: Arc::new(b),
        })
    }

    /// Whether the products run in bf16.
    pub fn is_bf16(&self) -> bool {
        matches!(self.packed, Packed::Bf16(_))
    }

    /// Whether the products run in int8.
    pub fn is_int8(&self) -> bool {
        matches!(self.packed, Packed::Int8(_))
    }

    /// Whether this CPU has the instructions of the weights' format.
    fn supported(&self) -> bool {
        match self.packed {
            Packed::F32(_) => packed_f32_supported(),
            Packed::Bf16(_) => bf16_supported(),
            Packed::Int8(_) => int8_supported(),
        }
    }
}

#[derive(Debug)]
struct PackedLinear<'a>(&'a PackedWeights);

impl CustomOp1 for PackedLinear<'_> {
    fn name(&self) -> &'static str {
        "packed_linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(x) = s else {
            bail!("packed_linear: x {:?} must be f32", l.shape());
        };
        let x = contiguous(x, l, "packed_linear: x")?;
        let w = self.0;
        // From the shape, not the length, so that k = 0 still gives m rows of bias.
        let m = l.dims().iter().rev().skip(1).product();
        let mut dims = l.dims().to_vec();
        *dims.last_mut().expect("checked rank") = w.n;
        Ok((CpuStorage::F32(run(x, m, w)), Shape::from(dims)))
    }
}

/// `x [.., k] · Wᵀ + b → [.., n]` (see the module docs).
///
/// # Errors
/// When x is not f32 on the CPU, its last dimension is not `k`, or the CPU lacks the
/// instructions of the weights' format ([`packed_f32_supported`], [`bf16_supported`],
/// [`int8_supported`]).
pub fn packed_linear(x: &Tensor, w: &PackedWeights) -> Result<Tensor> {
    if x.dims().last() != Some(&w.k) || !x.device().is_cpu() || x.dtype() != DType::F32 {
        bail!(
            "packed_linear: x {:?} {:?} on {:?} must be f32 on the CPU with {} features",
            x.dims(),
            x.dtype(),
            x.device().location(),
            w.k
        );
    }
    if !w.supported() {
        bail!(
            "packed_linear: this CPU lacks AVX-512 (and AVX512-BF16 for bf16, AVX512-VNNI for int8)"
        );
    }
    x.contiguous()?.apply_op1_no_bwd(&PackedLinear(w))
}

/// The bf16 format from plain candle ops: x and W rounded to bf16, products summed in f32.
/// The test oracle (it differs only in summation order).
///
/// # Errors
/// When the shapes disagree.
pub fn bf16_linear_reference(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let round = |t: &Tensor| t.to_dtype(DType::BF16)?.to_dtype(DType::F32);
    let y = round(x)?.broadcast_matmul(&round(weight)?.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(&b.to_dtype(DType::F32)?),
        None => Ok(y),
    }
}

/// Runs every (96-row, 32-column) tile of the `[m, n]` output at `dst` in passes of `pass`
/// over the `depth` features, pairs or quads: `kernel(rows, first_row, block, first_feature,
/// features, out)`. The first pass writes every element of its tile (from the bias), the
/// others add.
pub(super) fn tiles(
    m: usize,
    n: usize,
    depth: usize,
    pass: usize,
    dst: OutPtr,
    kernel: impl Fn(usize, usize, usize, usize, usize, *mut f32) + Sync,
) {
    let blocks = n.div_ceil(NR);
    (0..blocks * m.div_ceil(MB))
        .into_par_iter()
        .for_each(|tile| {
            let (rows, block) = ((tile / blocks) * MB, tile % blocks);
            let end = (rows + MB).min(m);
            // One pass when depth is 0, so the bias is still written.
            for f0 in (0..depth.max(1)).step_by(pass) {
                let len = (depth - f0.min(depth)).min(pass);
                let mut r = rows;
                while r < end {
                    let take = (end - r).min(MR);
                    kernel(take, r, block, f0, len, dst.at(r * n + block * NR));
                    r += take;
                }
            }
        });
}

#[cfg(target_arch = "x86_64")]
fn run(x: &[f32], m: usize, w: &PackedWeights) -> Vec<f32> {
    let (n, k) = (w.n, w.k);
    if let Packed::Int8(p) = &w.packed {
        return int8_linear::run(x, m, n, k, p, &w.bias);
    }
    // Not zero-filled: the tiles' first passes write every element before anything reads it
    // (zero-filling cost 2-5% of a forward).
    let mut out = Vec::<f32>::with_capacity(m * n);
    let dst = OutPtr(out.as_mut_ptr());
    match &w.packed {
        Packed::F32(p) => {
            assert!(
                packed_f32_supported(),
                "packed_linear: checked by the wrapper"
            );
            tiles(m, n, k, KC, dst, |rows, r, block, f0, len, c| {
                // SAFETY: AVX-512F was checked; x holds m rows of k, the block k × 32 f32 and
                // the bias 32 f32 at these offsets; the kernel reads and writes rows
                // r..r+rows, columns block*32.. (at most n) of the [m, n] output, which only
                // this tile touches, after the pass at f0 = 0 has written them.
                unsafe {
                    kernels::tile_f32(
                        rows,
                        x.as_ptr().add(r * k + f0),
                        k,
                        len,
                        p.as_ptr().add((block * k + f0) * NR),
                        (f0 == 0).then(|| w.bias.as_ptr().add(block * NR)),
                        c,
                        n,
                        (n - block * NR).min(NR),
                    )
                }
            });
        }
        Packed::Bf16(p) => {
            assert!(bf16_supported(), "packed_linear: checked by the wrapper");
            let pairs = k.div_ceil(2);
            // SAFETY: the features were checked above.
            let a = unsafe { kernels::to_pairs(x, m, k, pairs) };
            tiles(m, n, pairs, KC, dst, |rows, r, block, f0, len, c| {
                // SAFETY: as for f32, with x as m rows of `pairs` u32.
                unsafe {
                    kernels::tile_bf16(
                        rows,
                        a.as_ptr().add(r * pairs + f0),
                        pairs,
                        len,
                        p.as_ptr().add((block * pairs + f0) * NR),
                        (f0 == 0).then(|| w.bias.as_ptr().add(block * NR)),
                        c,
                        n,
                        (n - block * NR).min(NR),
                    )
                }
            });
        }
        Packed::Int8(_) => unreachable!("returned above"),
    }
    // SAFETY: every element of the m × n output was written above (see `tiles`).
    unsafe { out.set_len(m * n) };
    out
}

#[cfg(not(target_arch = "x86_64"))]
fn run(_: &[f32], _: usize, _: &PackedWeights) -> Vec<f32> {
    unreachable!("packed_linear: refused by the wrapper without AVX-512")
}

#[cfg(target_arch = "x86_64")]
pub(super) mod kernels {
    use std::arch::x86_64::*;

    use super::{bf16_bits, MR, NR};

    /// x `[m, k]` as bf16 pairs `[m, pairs]` (zero-padded).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_pairs(x: &[f32], m: usize, k: usize, pairs: usize) -> Vec<u32> {
        let mut out = vec![0u32; m * pairs];
        for (src, dst) in x.chunks(k.max(1)).zip(out.chunks_mut(pairs.max(1))).take(m) {
            let mut p = 0;
            while 2 * p + 32 <= k {
                let lo = _mm512_loadu_ps(src.as_ptr().add(2 * p));
                let hi = _mm512_loadu_ps(src.as_ptr().add(2 * p + 16));
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(p).cast(), v);
                p += 16;
            }
            for (p, pair) in src.chunks(2).enumerate().skip(p) {
                let hi = pair.get(1).map_or(0, |&v| bf16_bits(v));
                dst[p] = bf16_bits(pair[0]) | (hi << 16);
            }
        }
        out
    }

    macro_rules! by_rows {
        ($rows:expr, $micro:ident, $($arg:expr),*) => {
            match $rows {
                1 => $micro::<1>($($arg),*),
                2 => $micro::<2>($($arg),*),
                3 => $micro::<3>($($arg),*),
                4 => $micro::<4>($($arg),*),
                5 => $micro::<5>($($arg),*),
                6 => $micro::<6>($($arg),*),
                7 => $micro::<7>($($arg),*),
                8 => $micro::<8>($($arg),*),
                9 => $micro::<9>($($arg),*),
                10 => $micro::<10>($($arg),*),
                11 => $micro::<11>($($arg),*),
                12 => $micro::<12>($($arg),*),
                _ => unreachable!("at most {MR} rows"),
            }
        };
    }

    /// `rows` (≤ 12) rows of f32 x (`lda` apart, `len` features) × one 32-column block of
    /// f32 W, added to C, or to the bias when given (the first pass).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::ops) unsafe fn tile_f32(
        rows: usize,
        a: *const f32,
        lda: usize,
        len: usize,
        b: *const f32,
        bias: Option<*const f32>,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        by_rows!(rows, micro_f32, a, lda, len, b, bias, c, ldc, cols)
    }

    /// `rows` (≤ 12) rows of bf16 pairs × one 32-column block of bf16 W; as [`tile_f32`].
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile_bf16(
        rows: usize,
        a: *const u32,
        lda: usize,
        len: usize,
        b: *const u32,
        bias: Option<*const f32>,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        by_rows!(rows, micro_bf16, a, lda, len, b, bias, c, ldc, cols)
    }

    /// The column masks of a block with `cols` valid columns.
    #[inline(always)]
    pub(in crate::ops) fn masks(cols: usize) -> (__mmask16, __mmask16) {
        let m0: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        let m1: __mmask16 = match cols {
            NR.. => 0xffff,
            17.. => ((1u32 << (cols - 16)) - 1) as u16,
            _ => 0,
        };
        (m0, m1)
    }

    /// R rows of two accumulators each: the bias, or what C holds.
    #[inline(always)]
    unsafe fn load<const R: usize>(
        bias: Option<*const f32>,
        c: *const f32,
        ldc: usize,
        cols: usize,
    ) -> ([__m512; R], [__m512; R]) {
        match bias {
            Some(b) => ([_mm512_loadu_ps(b); R], [_mm512_loadu_ps(b.add(16)); R]),
            None => {
                let (m0, m1) = masks(cols);
                let mut acc = ([_mm512_setzero_ps(); R], [_mm512_setzero_ps(); R]);
                for i in 0..R {
                    acc.0[i] = _mm512_maskz_loadu_ps(m0, c.add(i * ldc));
                    acc.1[i] = _mm512_maskz_loadu_ps(m1, c.add(i * ldc + 16));
                }
                acc
            }
        }
    }

    /// Stores R rows of two accumulators each, masked to `cols` columns.
    #[inline(always)]
    unsafe fn store<const R: usize>(
        acc0: &[__m512; R],
        acc1: &[__m512; R],
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let (m0, m1) = masks(cols);
        for i in 0..R {
            _mm512_mask_storeu_ps(c.add(i * ldc), m0, acc0[i]);
            _mm512_mask_storeu_ps(c.add(i * ldc + 16), m1, acc1[i]);
        }
    }

    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro_f32<const R: usize>(
        a: *const f32,
        lda: usize,
        len: usize,
        b: *const f32,
        bias: Option<*const f32>,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let (mut acc0, mut acc1) = load::<R>(bias, c, ldc, cols);
        for f in 0..len {
            let b0 = _mm512_loadu_ps(b.add(f * NR));
            let b1 = _mm512_loadu_ps(b.add(f * NR + 16));
            for i in 0..R {
                let x = _mm512_set1_ps(*a.add(i * lda + f));
                acc0[i] = _mm512_fmadd_ps(x, b0, acc0[i]);
                acc1[i] = _mm512_fmadd_ps(x, b1, acc1[i]);
            }
        }
        store(&acc0, &acc1, c, ldc, cols);
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn micro_bf16<const R: usize>(
        a: *const u32,
        lda: usize,
        len: usize,
        b: *const u32,
        bias: Option<*const f32>,
        c: *mut f32,
        ldc: usize,
        cols: usize,
    ) {
        let (mut acc0, mut acc1) = load::<R>(bias, c, ldc, cols);
        for p in 0..len {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            for i in 0..R {
                let x: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(i * lda + p) as i32));
                acc0[i] = _mm512_dpbf16_ps(acc0[i], x, b0);
                acc1[i] = _mm512_dpbf16_ps(acc1[i], x, b1);
            }
        }
        store(&acc0, &acc1, c, ldc, cols);
    }
}
