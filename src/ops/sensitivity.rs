//! The sensitivity reduction: label probabilities of each input and its K perturbed variants,
//! `[inputs, 1+K, labels]`, reduced to fixed sensitivity features `[inputs, F]` in one pass.
//!
//! Index 0 along dim 1 is the original, 1..=K the variants. Label 0 is benign, so the attack
//! probability of a row is `a = 1 − p[0]` (every other label counts as some kind of attack).
//! An input counts as an attack at threshold `t` when `a ≥ t`. With `a₀` the original's and
//! `a₁…a_K` the variants', the features, in this order ([`SENSITIVITY_FEATURES`]), are:
//!
//! | # | name            | value                                                          |
//! |---|-----------------|----------------------------------------------------------------|
//! | 0 | `mean`          | mean of `a₁…a_K`                                               |
//! | 1 | `std`           | population standard deviation of `a₁…a_K` (divides by K)      |
//! | 2 | `flip_rate`     | fraction of variants with `(a_k ≥ t) ≠ (a₀ ≥ t)`               |
//! | 3 | `max_abs_delta` | `max_k abs(a_k − a₀)`                                          |
//! | 4 | `js_mean`       | mean over variants of JSD(p₀, p_k), in nats (at most ln 2)    |
//!
//! JSD(P, Q) = ½ Σ P ln((P+ε)/(M+ε)) + ½ Σ Q ln((Q+ε)/(M+ε)), M = (P+Q)/2, ε =
//! [`SENSITIVITY_JS_EPS`], clamped at 0 against rounding. ε keeps `0 · ln 0` at 0 instead of NaN
//! and shifts any other term by at most 3ε. Rows are taken as given (not renormalized);
//! probabilities must be finite.
//!
//! f32, f16, bf16 or f64 in, the same dtype out; all arithmetic is f32 (f64 input is rounded to
//! f32), so the fused op and its reference agree to f32 rounding.
//! This module must not know about models, signals or thresholds' meaning: it is arithmetic.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType};

/// The feature names, in column order of [`sensitivity`]'s output.
pub const SENSITIVITY_FEATURES: [&str; 5] =
    ["mean", "std", "flip_rate", "max_abs_delta", "js_mean"];

/// The ε guarding the logarithms of the Jensen–Shannon divergence (see the module docs).
pub const SENSITIVITY_JS_EPS: f32 = 1e-12;

const F: usize = SENSITIVITY_FEATURES.len();

/// The fused op; built only by [`sensitivity`], which has checked its input.
#[derive(Debug, Clone, Copy)]
struct Sensitivity {
    threshold: f32,
}

impl CustomOp1 for Sensitivity {
    fn name(&self) -> &'static str {
        "sensitivity"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        match storage {
            CpuStorage::F32(src) => reduce_cpu(src, layout, self.threshold),
            CpuStorage::F16(src) => reduce_cpu(src, layout, self.threshold),
            CpuStorage::BF16(src) => reduce_cpu(src, layout, self.threshold),
            CpuStorage::F64(src) => reduce_cpu(src, layout, self.threshold),
            other => bail!(
                "sensitivity: probs {:?} have dtype {:?}; expected f32, f16, bf16 or f64",
                layout.shape(),
                other.dtype()
            ),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};

        let (n, k1, l) = layout.shape().dims3()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("sensitivity: probs {:?} must be contiguous", layout.shape());
        };
        let dev = storage.device().clone();
        let (n32, k32, l32) = (n as u32, k1 as u32, l as u32);
        let cfg = LaunchConfig {
            grid_dim: (n32.div_ceil(128).max(1), 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        macro_rules! launch {
            ($src:expr, $t:ty, $name:literal, $variant:ident) => {{
                let src = $src.slice(start..end);
                // SAFETY: every element is written by the kernel below.
                let out = unsafe { dev.alloc::<$t>(n * F)? };
                let func = dev.get_or_load_custom_func($name, "tremble_sensitivity", PTX)?;
                let mut b = func.builder();
                b.arg(&src);
                b.arg(&out);
                b.arg(&n32);
                b.arg(&k32);
                b.arg(&l32);
                b.arg(&self.threshold);
                // SAFETY: argument types and order match the kernel's signature.
                unsafe { b.launch(cfg) }.w()?;
                CudaStorageSlice::$variant(out)
            }};
        }
        let slice = match &storage.slice {
            CudaStorageSlice::F32(s) => launch!(s, f32, "sensitivity_f32", F32),
            CudaStorageSlice::F64(s) => launch!(s, f64, "sensitivity_f64", F64),
            CudaStorageSlice::F16(s) => launch!(s, half::f16, "sensitivity_f16", F16),
            CudaStorageSlice::BF16(s) => launch!(s, half::bf16, "sensitivity_bf16", BF16),
            _ => bail!(
                "sensitivity: probs {:?} have dtype {:?}; expected f32, f16, bf16 or f64",
                layout.shape(),
                storage.dtype()
            ),
        };
        Ok((
            candle_core::CudaStorage { slice, device: dev },
            Shape::from_dims(&[n, F]),
        ))
    }
}

/// The kernel's PTX, compiled by build.rs from `kernels/sensitivity.cu`.
#[cfg(feature = "cuda")]
const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/sensitivity.ptx"));

fn reduce_cpu<T: WithDType>(
    src: &[T],
    layout: &Layout,
    threshold: f32,
) -> Result<(CpuStorage, Shape)> {
    let (n, k1, l) = layout.shape().dims3()?;
    if k1 < 2 || l < 2 {
        bail!(
            "sensitivity: probs {:?} {:?} need 1+K ≥ 2 rows and ≥ 2 labels",
            layout.shape(),
            T::DTYPE
        );
    }
    let Some((start, end)) = layout.contiguous_offsets() else {
        bail!(
            "sensitivity: probs {:?} {:?} must be contiguous",
            layout.shape(),
            T::DTYPE
        );
    };
    let mut row = vec![0f32; k1 * l];
    let mut out = Vec::with_capacity(n * F);
    for block in src[start..end].chunks_exact(k1 * l) {
        for (r, &x) in row.iter_mut().zip(block) {
            *r = x.to_f64() as f32;
        }
        let feats = features(&row, k1, l, threshold);
        out.extend(feats.iter().map(|&v| T::from_f64(f64::from(v))));
    }
    Ok((T::to_cpu_storage_owned(out), Shape::from_dims(&[n, F])))
}

/// The features of one input: `p` is its `[1+K, L]` block, row-major.
fn features(p: &[f32], k1: usize, l: usize, threshold: f32) -> [f32; F] {
    let k = (k1 - 1) as f32;
    let attack = |v: usize| 1.0 - p[v * l];
    let a0 = attack(0);
    let decision0 = a0 >= threshold;
    let original = &p[..l];
    let (mut sum_delta, mut flips, mut max_delta, mut js) = (0f32, 0f32, 0f32, 0f32);
    for v in 1..k1 {
        let a = attack(v);
        sum_delta += a - a0;
        flips += f32::from(u8::from((a >= threshold) != decision0));
        max_delta = max_delta.max((a - a0).abs());
        js += jsd(original, &p[v * l..(v + 1) * l]);
    }
    // Moments of the deltas from the original rather than of the raw probabilities: variants
    // equal to the original then give a std of exactly 0, not rounding noise.
    let mean_delta = sum_delta / k;
    let var = (1..k1)
        .map(|v| (attack(v) - a0 - mean_delta).powi(2))
        .sum::<f32>()
        / k;
    [a0 + mean_delta, var.sqrt(), flips / k, max_delta, js / k]
}

fn jsd(p: &[f32], q: &[f32]) -> f32 {
    let (mut kl_p, mut kl_q) = (0f32, 0f32);
    for (&a, &b) in p.iter().zip(q) {
        let ln_m = ((a + b) * 0.5 + SENSITIVITY_JS_EPS).ln();
        kl_p += a * ((a + SENSITIVITY_JS_EPS).ln() - ln_m);
        kl_q += b * ((b + SENSITIVITY_JS_EPS).ln() - ln_m);
    }
    ((kl_p + kl_q) * 0.5).max(0.0)
}

/// Sensitivity features `[N, 5]` of label probabilities `probs` `[N, 1+K, L]` at attack
/// threshold `threshold`; see the module docs for the layout, the features and their order.
/// The output has the input's dtype; non-contiguous input is copied first.
///
/// # Errors
/// When `probs` is not rank 3, has K < 1 variants or L < 2 labels, is not f32, f16, bf16 or f64,
/// or `threshold` is not finite. CPU and, in a `cuda` build, CUDA devices
/// (`kernels/sensitivity.cu`).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use tremble::ops::sensitivity;
///
/// // One input, benign (attack 0.2); variants at attack 0.6 and 0.2.
/// let probs = Tensor::new(&[[[0.8f32, 0.2], [0.4, 0.6], [0.8, 0.2]]], &Device::Cpu)?;
/// let f = sensitivity(&probs, 0.5)?.to_vec2::<f32>()?;
/// let [mean, std, flip_rate, max_abs_delta, _js] = [f[0][0], f[0][1], f[0][2], f[0][3], f[0][4]];
/// assert!((mean - 0.4).abs() < 1e-6 && (std - 0.2).abs() < 1e-6);
/// assert_eq!(flip_rate, 0.5);
/// assert!((max_abs_delta - 0.4).abs() < 1e-6);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn sensitivity(probs: &Tensor, threshold: f32) -> Result<Tensor> {
    check(probs, threshold)?;
    probs
        .contiguous()?
        .apply_op1_no_bwd(&Sensitivity { threshold })
}

/// [`sensitivity`] made of plain candle ops, on any device: the test oracle for the fused op.
///
/// # Errors
/// As [`sensitivity`], except that every device works.
pub fn sensitivity_reference(probs: &Tensor, threshold: f32) -> Result<Tensor> {
    check(probs, threshold)?;
    let dtype = probs.dtype();
    let p = probs.to_dtype(DType::F32)?;
    let (_, k1, _) = p.dims3()?;
    let k = k1 - 1;
    let attack = p.narrow(2, 0, 1)?.squeeze(2)?.affine(-1.0, 1.0)?;
    let a0 = attack.narrow(1, 0, 1)?;
    let av = attack.narrow(1, 1, k)?;

    let delta = av.broadcast_sub(&a0)?;
    let mean_delta = delta.mean_keepdim(1)?;
    let mean = (&a0 + &mean_delta)?;
    let std = delta
        .broadcast_sub(&mean_delta)?
        .sqr()?
        .mean_keepdim(1)?
        .sqrt()?;
    let flip_rate = av
        .ge(threshold)?
        .broadcast_ne(&a0.ge(threshold)?)?
        .to_dtype(DType::F32)?
        .mean_keepdim(1)?;
    let max_abs_delta = delta.abs()?.max_keepdim(1)?;

    let p0 = p.narrow(1, 0, 1)?;
    let pv = p.narrow(1, 1, k)?;
    let ln = |t: &Tensor| (t + f64::from(SENSITIVITY_JS_EPS))?.log();
    let ln_m = ln(&pv.broadcast_add(&p0)?.affine(0.5, 0.0)?)?;
    let kl_p = p0.broadcast_mul(&ln(&p0)?.broadcast_sub(&ln_m)?)?.sum(2)?;
    let kl_q = (&pv * (ln(&pv)? - &ln_m)?)?.sum(2)?;
    let js_mean = (kl_p + kl_q)?.affine(0.5, 0.0)?.relu()?.mean_keepdim(1)?;

    Tensor::cat(&[mean, std, flip_rate, max_abs_delta, js_mean], 1)?.to_dtype(dtype)
}

fn check(probs: &Tensor, threshold: f32) -> Result<()> {
    let (shape, dtype) = (probs.shape(), probs.dtype());
    let dims = shape.dims();
    if dims.len() != 3 || dims[1] < 2 || dims[2] < 2 {
        bail!(
            "sensitivity: probs must be [inputs, 1+K, labels] with K ≥ 1 and labels ≥ 2, got \
             {shape:?} {dtype:?}"
        );
    }
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
        bail!("sensitivity: probs {shape:?} have dtype {dtype:?}; expected f32, f16, bf16 or f64");
    }
    if !threshold.is_finite() {
        bail!("sensitivity: threshold must be finite, got {threshold} (probs {shape:?} {dtype:?})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    /// `[n, 1+k, l]` random distributions, some rows with exact zeros and ones.
    fn random_probs(n: usize, k1: usize, l: usize, seed: u64, dev: &Device) -> Tensor {
        let mut rng = Rng::new(seed);
        let mut data = Vec::with_capacity(n * k1 * l);
        for _ in 0..n * k1 {
            let mut row: Vec<f32> = match rng.below(6) {
                0 => (0..l).map(|i| f32::from(u8::from(i == 0))).collect(),
                1 => (0..l).map(|i| f32::from(u8::from(i == l - 1))).collect(),
                _ => (0..l).map(|_| rng.next_f64() as f32).collect(),
            };
            let total: f32 = row.iter().sum();
            if total > 0.0 {
                row.iter_mut().for_each(|x| *x /= total);
            } else {
                row[0] = 1.0;
            }
            data.extend(row);
        }
        Tensor::from_vec(data, (n, k1, l), dev).unwrap()
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_dtype(DType::F32).unwrap().to_vec2().unwrap()
    }

    fn assert_close(a: &Tensor, b: &Tensor, tol: f32, what: &str) {
        assert_eq!(a.dims(), b.dims(), "{what}");
        for (ra, rb) in rows(a).iter().zip(rows(b)) {
            for (j, (x, y)) in ra.iter().zip(rb).enumerate() {
                assert!(
                    (x - y).abs() <= tol,
                    "{what}: {} {x} vs {y}",
                    SENSITIVITY_FEATURES[j]
                );
            }
        }
    }

    fn matches_reference_on_odd_shapes(dev: &Device) {
        let shapes = [(1, 2, 2), (7, 6, 4), (3, 11, 3), (2, 2, 9), (16, 3, 2)];
        for (i, &(n, k1, l)) in shapes.iter().enumerate() {
            let probs = random_probs(n, k1, l, i as u64, dev);
            for t in [0.0, 0.3, 0.5, 0.9, 1.0] {
                let fused = sensitivity(&probs, t).unwrap();
                let reference = sensitivity_reference(&probs, t).unwrap();
                assert_eq!(fused.dims(), &[n, F]);
                assert_close(&fused, &reference, 1e-6, &format!("{n}x{k1}x{l} t={t}"));
            }
        }
    }

    #[test]
    fn matches_reference_on_odd_shapes_cpu() {
        matches_reference_on_odd_shapes(&Device::Cpu);
    }

    fn half_precision_matches_reference(dev: &Device) {
        let probs = random_probs(5, 4, 3, 77, dev);
        for dtype in [DType::F16, DType::BF16, DType::F64] {
            let p = probs.to_dtype(dtype).unwrap();
            let fused = sensitivity(&p, 0.5).unwrap();
            assert_eq!(fused.dtype(), dtype);
            let reference = sensitivity_reference(&p, 0.5).unwrap();
            // One rounding of the f32 result to the output dtype apart at most.
            assert_close(&fused, &reference, 1e-2, &format!("{dtype:?}"));
        }
    }

    #[test]
    fn half_precision_matches_reference_cpu() {
        half_precision_matches_reference(&Device::Cpu);
    }

    #[test]
    fn hand_computed_case() {
        // a0 = 0.2 (benign at 0.5); variants 0.6 (flips) and 0.2 (same as the original).
        let probs = Tensor::new(&[[[0.8f32, 0.2], [0.4, 0.6], [0.8, 0.2]]], &Device::Cpu).unwrap();
        // JSD([.8,.2], [.4,.6]) = 0.0863046 nats, averaged with the identical variant's 0.
        let expected = [0.4, 0.2, 0.5, 0.4, 0.043_152_31];
        for f in [sensitivity, sensitivity_reference] {
            let got = &rows(&f(&probs, 0.5).unwrap())[0];
            for (j, (g, e)) in got.iter().zip(expected).enumerate() {
                assert!(
                    (g - e).abs() < 1e-6,
                    "{}: {g} vs {e}",
                    SENSITIVITY_FEATURES[j]
                );
            }
        }
    }

    #[test]
    fn identical_variants_are_insensitive() {
        let row = [0.3f32, 0.5, 0.2];
        let data: Vec<f32> = row.iter().copied().cycle().take(3 * 5).collect();
        let probs = Tensor::from_vec(data, (1, 5, 3), &Device::Cpu).unwrap();
        for f in [sensitivity, sensitivity_reference] {
            let got = &rows(&f(&probs, 0.7).unwrap())[0];
            assert!((got[0] - 0.7).abs() < 1e-6);
            assert_eq!(&got[1..], &[0.0, 0.0, 0.0, 0.0]);
        }
    }

    #[test]
    fn certain_opposites_are_maximally_sensitive() {
        let probs = Tensor::new(&[[[1f32, 0.0], [0.0, 1.0]]], &Device::Cpu).unwrap();
        for f in [sensitivity, sensitivity_reference] {
            let got = &rows(&f(&probs, 0.5).unwrap())[0];
            assert_eq!(&got[..4], &[1.0, 0.0, 1.0, 1.0]);
            assert!((got[4] - std::f32::consts::LN_2).abs() < 1e-6, "{}", got[4]);
        }
    }

    #[test]
    fn threshold_is_inclusive() {
        // Attack probability exactly at the threshold counts as an attack.
        let probs = Tensor::new(&[[[0.5f32, 0.5], [0.75, 0.25]]], &Device::Cpu).unwrap();
        for f in [sensitivity, sensitivity_reference] {
            assert_eq!(rows(&f(&probs, 0.5).unwrap())[0][2], 1.0);
            assert_eq!(rows(&f(&probs, 0.6).unwrap())[0][2], 0.0);
        }
    }

    #[test]
    fn strided_and_offset_inputs_are_read_correctly() {
        let dev = Device::Cpu;
        let probs = random_probs(4, 3, 5, 3, &dev);
        let expected = sensitivity_reference(&probs, 0.4).unwrap();
        let transposed = probs.transpose(1, 2).unwrap().contiguous().unwrap();
        let strided = transposed.transpose(1, 2).unwrap();
        assert!(!strided.is_contiguous());
        assert_close(
            &sensitivity(&strided, 0.4).unwrap(),
            &expected,
            1e-6,
            "strided",
        );
        let padded = Tensor::cat(&[&random_probs(2, 3, 5, 9, &dev), &probs], 0).unwrap();
        let offset = padded.narrow(0, 2, 4).unwrap();
        assert_close(
            &sensitivity(&offset, 0.4).unwrap(),
            &expected,
            1e-6,
            "offset",
        );
    }

    #[test]
    fn rows_are_independent() {
        let dev = Device::Cpu;
        let probs = random_probs(6, 4, 3, 12, &dev);
        let all = rows(&sensitivity(&probs, 0.5).unwrap());
        for (i, row) in all.iter().enumerate() {
            let one = sensitivity(&probs.narrow(0, i, 1).unwrap(), 0.5).unwrap();
            assert_eq!(&rows(&one)[0], row);
        }
    }

    #[test]
    fn empty_batch_gives_empty_features() {
        let probs = Tensor::zeros((0, 3, 2), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(sensitivity(&probs, 0.5).unwrap().dims(), &[0, F]);
    }

    #[test]
    fn bad_input_is_refused_with_op_shape_and_dtype() {
        let dev = Device::Cpu;
        let cases = [
            Tensor::zeros((2, 3), DType::F32, &dev).unwrap(),
            Tensor::zeros((2, 1, 3), DType::F32, &dev).unwrap(),
            Tensor::zeros((2, 3, 1), DType::F32, &dev).unwrap(),
            Tensor::zeros((2, 3, 2), DType::U32, &dev).unwrap(),
        ];
        for probs in &cases {
            for f in [sensitivity, sensitivity_reference] {
                let msg = f(probs, 0.5).unwrap_err().to_string();
                assert!(msg.contains("sensitivity"), "{msg}");
                assert!(msg.contains(&format!("{:?}", probs.dims())), "{msg}");
            }
        }
        let ok = random_probs(1, 2, 2, 0, &dev);
        let msg = sensitivity(&ok, f32::NAN).unwrap_err().to_string();
        assert!(msg.contains("threshold"), "{msg}");
    }

    #[test]
    fn kernel_source_on_emulated_threads_matches_the_cpu_op_bit_for_bit() {
        // Grids smaller than n exercise the grid-stride loop; one row, odd sizes, two labels.
        for (n, k1, l, seed, grid, block) in [
            (1, 2, 2, 1, 1, 1),
            (7, 9, 4, 2, 1, 4),
            (130, 3, 5, 3, 2, 16),
            (33, 11, 2, 4, 3, 8),
        ] {
            let probs = random_probs(n, k1, l, seed, &Device::Cpu);
            let flat = probs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for t in [0.5f32, 0.0, 1.0, 0.37] {
                let cpu = sensitivity(&probs, t).unwrap();
                let cpu = cpu.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut out = vec![f32::NAN; n * F];
                // SAFETY: buffers sized [n, k1, l] and [n, F] as the kernel expects.
                unsafe {
                    crate::ops::emu::tremble_emu_sensitivity_f32(
                        flat.as_ptr(),
                        out.as_mut_ptr(),
                        n as u32,
                        k1 as u32,
                        l as u32,
                        t,
                        grid,
                        block,
                    );
                }
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out), bits(&cpu), "n {n} k1 {k1} l {l} t {t}");
            }
        }
    }
}
