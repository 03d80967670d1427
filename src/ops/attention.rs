//! Multi-head self-attention on the CPU in one op: the fused projection `qkv [B, T, 3H]`
//! (queries, keys and values side by side, heads of `H / heads` columns each) and the key mask
//! `mask [B, T]` (nonzero = token) → the context `[B, T, H]`, heads side by side again.
//!
//! Why one op: candle's path copies Q, K and V into `[B, heads, T, d]`, runs 2 × B × heads
//! small matmuls one after another (each too small for its own threads), and writes and reads
//! a `[B, heads, T, T]` score tensor. Here each (sequence, head) pair is one task on rayon's
//! pool; QKᵀ and PV are gemm calls that read the heads in place through strides and write the
//! context straight into its columns; the scores of a head live in a per-thread buffer; keys
//! after a sequence's last token are never computed.
//!
//! Same semantics as scores → [`super::masked_softmax`] → PV: padded keys get probability 0,
//! and a sequence without tokens attends uniformly to all `T` positions. f32 and CPU only: on
//! CUDA, and for f16/bf16, the encoder keeps candle's matmuls and the masked_softmax kernel.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::elem::{contiguous, u32_mask, OutPtr};
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

impl SelfAttention {
    fn cpu(&self, qkv: &[f32], mask: &[u32], b: usize, t: usize, h: usize) -> Vec<f32> {
        let (heads, h3) = (self.heads, 3 * h);
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; b * t * h];
        // Each task writes only its own (sequence, head) block of rows × columns.
        let dst = OutPtr(out.as_mut_ptr());
        (0..b * heads)
            .into_par_iter()
            .for_each_init(Vec::<f32>::new, |scores, task| {
                let (bi, hi) = (task / heads, task % heads);
                let keep = &mask[bi * t..(bi + 1) * t];
                // Keys past the last token only ever get probability 0; an empty sequence
                // attends to all positions alike.
                let tk = keep
                    .iter()
                    .rposition(|&k| k != 0)
                    .map_or(t, |last| last + 1);
                let empty = tk == t && keep.iter().all(|&k| k == 0);
                scores.clear();
                scores.resize(t * tk, 0.0);
                let q = &qkv[bi * t * h3 + hi * d..];
                let (k, v) = (&q[h..], &q[2 * h..]);
                // SAFETY: every index gemm forms stays inside `qkv` (rows of h3 columns, head
                // columns hi*d..hi*d+d of the Q, K and V blocks) and `scores` ([t, tk]).
                unsafe {
                    gemm(
                        t,
                        tk,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        tk as isize,
                        false,
                        q.as_ptr(),
                        1,
                        h3 as isize,
                        k.as_ptr(),
                        h3 as isize,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                softmax_rows(scores, &keep[..tk], empty);
                // SAFETY: this task alone writes rows bi*t..bi*t+t, columns hi*d..hi*d+d of
                // `out`; `scores` is [t, tk] and V's rows are h3 apart inside `qkv`.
                unsafe {
                    gemm(
                        t,
                        d,
                        tk,
                        dst.at(bi * t * h + hi * d),
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
            });
        out
    }
}

/// Softmax of each `keep.len()`-long row of scaled scores over the kept keys, in place; with
/// AVX2 and FMA when the CPU has them (a third of the op's time went to the scalar loops
/// without).
fn softmax_rows(scores: &mut [f32], keep: &[u32], empty: bool) {
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
