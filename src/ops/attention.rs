//! Multi-head self-attention on the CPU in one op: the fused projection `qkv [B, T, 3H]`
//! (queries, keys and values side by side, heads of `H / heads` columns each) and the key mask
//! `mask [B, T]` (nonzero = token) → the context `[B, T, H]`, heads side by side again.
//!
//! Why one op: candle's path copies Q, K and V into `[B, heads, T, d]`, runs 2 × B × heads
//! small matmuls one after another (each too small for its own threads), and writes and reads
//! a `[B, heads, T, T]` score tensor. Here each (sequence, head) pair is one task on rayon's
//! pool; on AVX-512 CPUs the head's keys (pre-scaled) and values are packed into 32-column
//! blocks and QKᵀ and PV run on [`super::packed_linear`]'s micro-kernel, reading Q and the
//! probabilities in place and writing the context straight into its columns (elsewhere they
//! are gemm calls on strided views); the scores of a head live in a per-thread buffer, their
//! softmax runs 16 keys at a time; keys after a sequence's last token are never computed.
//!
//! Same semantics as scores → [`super::masked_softmax`] → PV: padded keys get probability 0,
//! and a sequence without tokens attends uniformly to all `T` positions. f32 and CPU only: on
//! CUDA, and for f16/bf16, the encoder keeps candle's matmuls and the masked_softmax kernel.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::elem::{contiguous, u32_mask, OutPtr};
#[cfg(target_arch = "x86_64")]
use super::masked_softmax::exp16;
use super::masked_softmax::{exp, masked_softmax_reference};

#[derive(Debug, Clone, Copy)]
struct SelfAttention {
    heads: usize,
}

impl CustomOp2 for SelfAttention {
    fn name(&self) -> &'static str {
        "self_attention"
    }

    fn cpu_fwd(
        &self,
        s: &CpuStorage,
        sl: &Layout,
        m: &CpuStorage,
        ml: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(qkv), CpuStorage::U32(mask)) = (s, m) else {
            bail!(
                "self_attention: qkv {:?} must be f32 and the mask u32",
                sl.shape()
            );
        };
        let qkv = contiguous(qkv, sl, "self_attention: qkv")?;
        let mask = contiguous(mask, ml, "self_attention: mask")?;
        let (b, t, h3) = sl.shape().dims3()?;
        let out = self.cpu(qkv, mask, b, t, h3 / 3);
        Ok((CpuStorage::F32(out), Shape::from((b, t, h3 / 3))))
    }
}

/// A thread's buffers, reused across its tasks: the head's scores, and (AVX-512 path) its
/// keys and values packed for the micro-kernel.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// One (sequence, head) task: the head's rows of Q, K and V inside `qkv`, its key mask.
struct Head<'a> {
    /// From the head's first Q column of the sequence's first row; K and V follow `h` and
    /// `2h` columns later, rows `3h` apart.
    q: &'a [f32],
    keep: &'a [u32],
    t: usize,
    h: usize,
    d: usize,
}

/// The first `len` elements of `v`, grown (zero-filled) only when too short: the buffers keep
/// what earlier tasks left, which each task overwrites before reading.
fn grow(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

impl SelfAttention {
    fn cpu(&self, qkv: &[f32], mask: &[u32], b: usize, t: usize, h: usize) -> Vec<f32> {
        let packed = super::packed_linear::packed_f32_supported();
        self.run(qkv, mask, (b, t, h), packed)
    }

    /// `packed`: the AVX-512 micro-kernel path (the CPU must have AVX-512F), else gemm.
    fn run(
        &self,
        qkv: &[f32],
        mask: &[u32],
        dims: (usize, usize, usize),
        packed: bool,
    ) -> Vec<f32> {
        let (b, t, h) = dims;
        let heads = self.heads;
        let d = h / heads;
        // Not zero-filled: each (sequence, head) task writes all of its block of rows ×
        // columns, and the blocks cover the output.
        let mut out = Vec::<f32>::with_capacity(b * t * h);
        let dst = OutPtr(out.as_mut_ptr());
        (0..b * heads)
            .into_par_iter()
            .for_each_init(Scratch::default, |scratch, task| {
                let (bi, hi) = (task / heads, task % heads);
                let head = Head {
                    q: &qkv[bi * t * 3 * h + hi * d..],
                    keep: &mask[bi * t..(bi + 1) * t],
                    t,
                    h,
                    d,
                };
                let out = dst.at(bi * t * h + hi * d);
                // SAFETY: this task alone writes rows bi*t..bi*t+t, columns hi*d..hi*d+d of
                // `out` (rows h apart); AVX-512F was checked for the packed path.
                unsafe {
                    if packed {
                        head.run_packed(scratch, out);
                    } else {
                        head.run_gemm(scratch, out);
                    }
                }
            });
        // SAFETY: every element was written by its task above.
        unsafe { out.set_len(b * t * h) };
        out
    }
}

impl Head<'_> {
    /// Keys to compute (those past the last token only ever get probability 0; an empty
    /// sequence attends to all positions alike), and whether the sequence is empty.
    fn keys(&self) -> (usize, bool) {
        let last = self.keep.iter().rposition(|&k| k != 0);
        (last.map_or(self.t, |l| l + 1), last.is_none())
    }

    fn scale(&self) -> f32 {
        1.0 / (self.d as f32).sqrt()
    }

    /// QKᵀ and PV on the packed-linear micro-kernel: the head's keys (scaled) and values are
    /// packed into 32-column blocks once per task, so each 512-bit load feeds 16 columns.
    ///
    /// # Safety
    /// AVX-512F; `out` has the head's t rows, h apart, d columns writable.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_packed(&self, s: &mut Scratch, out: *mut f32) {
        use super::packed_linear::kernels::tile_f32;
        use super::packed_linear::{MR, NR};
        static ZERO: [f32; NR] = [0.0; NR];
        let (t, h, d, h3) = (self.t, self.h, self.d, 3 * self.h);
        let (tk, empty) = self.keys();
        let scale = self.scale();
        let (kb, vb) = (tk.div_ceil(NR), d.div_ceil(NR));
        // Lanes past tk keys or d columns hold stale values: they only reach the lanes the
        // masked stores drop.
        grow(&mut s.keys, kb * d * NR);
        grow(&mut s.values, vb * tk * NR);
        for key in 0..tk {
            let row = &self.q[key * h3..];
            let (k, v) = (&row[h..h + d], &row[2 * h..2 * h + d]);
            let (blk, j) = (key / NR, key % NR);
            for (f, &x) in k.iter().enumerate() {
                s.keys[(blk * d + f) * NR + j] = x * scale;
            }
            for (c, &x) in v.iter().enumerate() {
                s.values[((c / NR) * tk + key) * NR + c % NR] = x;
            }
        }
        // Every score is written by QKᵀ before it is read.
        let scores = grow(&mut s.scores, t * tk);
        let q = self.q.as_ptr();
        for r in (0..t).step_by(MR) {
            let rows = (t - r).min(MR);
            for blk in 0..kb {
                tile_f32(
                    rows,
                    q.add(r * h3),
                    h3,
                    d,
                    s.keys.as_ptr().add(blk * d * NR),
                    Some(ZERO.as_ptr()),
                    scores.as_mut_ptr().add(r * tk + blk * NR),
                    tk,
                    (tk - blk * NR).min(NR),
                );
            }
        }
        softmax_rows(scores, &self.keep[..tk], empty);
        for r in (0..t).step_by(MR) {
            let rows = (t - r).min(MR);
            for blk in 0..vb {
                tile_f32(
                    rows,
                    scores.as_ptr().add(r * tk),
                    tk,
                    tk,
                    s.values.as_ptr().add(blk * tk * NR),
                    Some(ZERO.as_ptr()),
                    out.add(r * h + blk * NR),
                    h,
                    (d - blk * NR).min(NR),
                );
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    unsafe fn run_packed(&self, _: &mut Scratch, _: *mut f32) {
        unreachable!("packed attention needs AVX-512F")
    }

    /// QKᵀ and PV as gemm calls on strided views (CPUs without AVX-512F).
    ///
    /// # Safety
    /// `out` has the head's t rows, h apart, d columns writable.
    unsafe fn run_gemm(&self, s: &mut Scratch, out: *mut f32) {
        let (t, h, d, h3) = (self.t, self.h, self.d, 3 * self.h);
        let (tk, empty) = self.keys();
        // gemm overwrites every score (beta = 0).
        let scores = grow(&mut s.scores, t * tk);
        let (k, v) = (&self.q[h..], &self.q[2 * h..]);
        // Every index gemm forms stays inside `qkv` (rows of h3 columns, head columns
        // d wide of the Q, K and V blocks) and `scores` ([t, tk]).
        gemm(
            t,
            tk,
            d,
            scores.as_mut_ptr(),
            1,
            tk as isize,
            false,
            self.q.as_ptr(),
            1,
            h3 as isize,
            k.as_ptr(),
            h3 as isize,
            1,
            0.0,
            self.scale(),
            false,
            false,
            false,
            Parallelism::None,
        );
        softmax_rows(scores, &self.keep[..tk], empty);
        gemm(
            t,
            d,
            tk,
            out,
            1,
            h as isize,
            false,
            scores.as_ptr(),
            1,
            tk as isize,
            v.as_ptr(),
            1,
            h3 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Softmax of each `keep.len()`-long row of scaled scores over the kept keys, in place; with
/// AVX2 and FMA when the CPU has them (a third of the op's time went to the scalar loops
/// without).
fn softmax_rows(scores: &mut [f32], keep: &[u32], empty: bool) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected.
        unsafe { softmax_rows_avx512(scores, keep, empty) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the features were just detected.
        unsafe { softmax_rows_avx2(scores, keep, empty) };
        return;
    }
    softmax_rows_body(scores, keep, empty);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], keep: &[u32], empty: bool) {
    softmax_rows_body(scores, keep, empty);
}

/// [`softmax_rows_body`] 16 keys at a time with the key mask as lane masks and
/// [`super::masked_softmax::exp16`]: the auto-vectorized loops ran at ~6 cycles per score, half
/// of the op's time at 128 tokens.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows_avx512(scores: &mut [f32], keep: &[u32], empty: bool) {
    use std::arch::x86_64::*;
    let n = keep.len();
    if empty {
        scores.fill(1.0 / n as f32);
        return;
    }
    // Per 16 keys: the lanes inside the row, and those that are tokens.
    let chunks = n.div_ceil(16);
    let mut lanes = Vec::with_capacity(chunks);
    for (c, k) in keep.chunks(16).enumerate() {
        let inside: __mmask16 = if k.len() == 16 {
            0xffff
        } else {
            (1 << k.len()) - 1
        };
        let kept = k
            .iter()
            .enumerate()
            .fold(0u16, |m, (i, &v)| m | (u16::from(v != 0) << i));
        lanes.push((c * 16, inside, kept));
    }
    for row in scores.chunks_mut(n) {
        let p = row.as_mut_ptr();
        let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
        for &(c, _, kept) in &lanes {
            let v = _mm512_maskz_loadu_ps(kept, p.add(c));
            vmax = _mm512_mask_max_ps(vmax, kept, vmax, v);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
        let mut vsum = _mm512_setzero_ps();
        for &(c, inside, kept) in &lanes {
            let v = _mm512_maskz_loadu_ps(kept, p.add(c));
            let e = _mm512_maskz_mov_ps(kept, exp16(_mm512_sub_ps(v, max)));
            _mm512_mask_storeu_ps(p.add(c), inside, e);
            vsum = _mm512_add_ps(vsum, e);
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(vsum));
        for &(c, inside, _) in &lanes {
            let v = _mm512_maskz_loadu_ps(inside, p.add(c));
            _mm512_mask_storeu_ps(p.add(c), inside, _mm512_mul_ps(v, inv));
        }
    }
}

/// Lanes of the max and sum accumulators: enough independent chains for the loops to vectorize.
const LANES: usize = 8;

#[inline(always)]
fn softmax_rows_body(scores: &mut [f32], keep: &[u32], empty: bool) {
    let n = keep.len();
    if empty {
        scores.fill(1.0 / n as f32);
        return;
    }
    // Padded keys read as -inf for the max and are zeroed after the exponential.
    let mut kept_max = [f32::NEG_INFINITY; LANES];
    for row in scores.chunks_mut(n) {
        kept_max.fill(f32::NEG_INFINITY);
        let (body, tail) = row.split_at(n - n % LANES);
        for (c, k) in body.chunks_exact(LANES).zip(keep.chunks_exact(LANES)) {
            for i in 0..LANES {
                let v = if k[i] != 0 { c[i] } else { f32::NEG_INFINITY };
                kept_max[i] = if v > kept_max[i] { v } else { kept_max[i] };
            }
        }
        let mut max = kept_max.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        for (&v, &k) in tail.iter().zip(&keep[n - n % LANES..]) {
            if k != 0 {
                max = max.max(v);
            }
        }
        let mut sums = [0f32; LANES];
        let (body, tail) = row.split_at_mut(n - n % LANES);
        for (c, k) in body.chunks_exact_mut(LANES).zip(keep.chunks_exact(LANES)) {
            for i in 0..LANES {
                let e = exp(c[i] - max);
                c[i] = if k[i] != 0 { e } else { 0.0 };
                sums[i] += c[i];
            }
        }
        let mut sum: f32 = sums.iter().sum();
        for (v, &k) in tail.iter_mut().zip(&keep[n - n % LANES..]) {
            *v = if k != 0 { exp(*v - max) } else { 0.0 };
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

fn check(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<(usize, usize, usize)> {
    let (b, t, h3) = qkv.dims3()?;
    if mask.dims() != [b, t] {
        bail!(
            "self_attention: qkv {:?} needs a mask [{b}, {t}], got {:?}",
            qkv.dims(),
            mask.dims()
        );
    }
    if heads == 0 || h3 % (3 * heads) != 0 {
        bail!(
            "self_attention: qkv {:?} does not split into 3 × {heads} heads",
            qkv.dims()
        );
    }
    Ok((b, t, h3 / 3))
}

/// Self-attention of the fused projection `qkv [B, T, 3H]` under the key mask `mask [B, T]`
/// (any dtype, nonzero = token), with `heads` heads and scale `1/√(H/heads)`: `[B, T, H]`.
/// See the module docs. f32 on the CPU only.
///
/// # Errors
/// When the shapes disagree, `qkv` is not f32 or not on the CPU.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tremble::ops::self_attention;
///
/// // One sequence of two tokens, one head of width 1: q, k, v per token.
/// let qkv = Tensor::new(&[[[0f32, 1.0, 2.0], [0.0, 1.0, 4.0]]], &Device::Cpu)?;
/// let mask = Tensor::new(&[[1u32, 1]], &Device::Cpu)?;
/// let ctx = self_attention(&qkv, &mask, 1)?.flatten_all()?.to_vec1::<f32>()?;
/// assert_eq!(ctx, [3.0, 3.0]); // the queries are 0, so both keys weigh 1/2
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn self_attention(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    check(qkv, mask, heads)?;
    if !qkv.device().is_cpu() || qkv.dtype() != DType::F32 {
        bail!(
            "self_attention: qkv {:?} must be f32 on the CPU, got {:?} on {:?}",
            qkv.dims(),
            qkv.dtype(),
            qkv.device().location()
        );
    }
    qkv.contiguous()?
        .apply_op2_no_bwd(&u32_mask(mask)?, &SelfAttention { heads })
}

/// [`self_attention`] from plain candle ops (split heads, matmuls, the masked softmax's
/// reference): any device and dtype, differentiable; the test oracle.
///
/// # Errors
/// When the shapes disagree.
pub fn self_attention_reference(qkv: &Tensor, mask: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, h) = check(qkv, mask, heads)?;
    let d = h / heads;
    let split = |i: usize| -> Result<Tensor> {
        qkv.narrow(2, i * h, h)?
            .reshape((b, t, heads, d))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (split(0)?, split(1)?, split(2)?);
    let scores = q.matmul(&k.t()?)?;
    let probs = masked_softmax_reference(&scores, mask, 1.0 / (d as f32).sqrt())?;
    probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two CPU paths (micro-kernel and gemm) on odd shapes: keys not a multiple of 32,
    /// heads wider than 32, padding and an empty sequence.
    #[test]
    fn packed_and_gemm_paths_agree() {
        if !super::super::packed_linear::packed_f32_supported() {
            eprintln!("skipping: this CPU lacks AVX-512F, only the gemm path runs");
            return;
        }
        for (b, t, h, heads, seed) in [(1, 1, 2, 1, 1), (3, 45, 24, 2, 2), (2, 70, 80, 2, 3)] {
            let mut rng = crate::rng::Rng::new(seed);
            let qkv: Vec<f32> = (0..b * t * 3 * h)
                .map(|_| (rng.next_f64() as f32) * 4.0 - 2.0)
                .collect();
            let mask: Vec<u32> = (0..b * t)
                .map(|i| u32::from(i / t != b - 1 || b == 1) * u32::from(i % t < t - i / t))
                .collect();
            let op = SelfAttention { heads };
            let fast = op.run(&qkv, &mask, (b, t, h), true);
            let slow = op.run(&qkv, &mask, (b, t, h), false);
            let err = fast
                .iter()
                .zip(&slow)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(err <= 1e-5, "{b}x{t}x{h}/{heads}: {err}");
        }
    }
}
