//! The encoder's fused ops against their reference twins (odd sizes, one row, fully masked
//! rows, large values, half precision, strided input, bad input) and their kernels' host twins
//! against the CPU ops.

use candle_core::{DType, Device, Tensor};

use super::emu;
use super::*;
use crate::rng::Rng;

pub(super) fn randn(dims: &[usize], scale: f32, seed: u64) -> Tensor {
    crate::testing::uniform_tensor(dims, scale, seed)
}

/// `[b, t]` u32 mask: row 0 full, the last row empty when `empty_row`, others a random prefix.
fn mask(b: usize, t: usize, empty_row: bool, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let mut v = Vec::with_capacity(b * t);
    for i in 0..b {
        let kept = if i == 0 {
            t
        } else if empty_row && i == b - 1 {
            0
        } else {
            1 + rng.below(t)
        };
        v.extend((0..t).map(|j| u32::from(j < kept)));
    }
    Tensor::from_vec(v, (b, t), &Device::Cpu).unwrap()
}

pub(super) fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub(super) fn max_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    flat(a)
        .iter()
        .zip(flat(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Shapes `[rows.., h]` with odd and one-row cases.
const ROW_SHAPES: [&[usize]; 5] = [
    &[1, 1, 3],
    &[1, 7],
    &[3, 5, 384],
    &[2, 9, 17],
    &[4, 1, 1536],
];

#[test]
fn layer_norm_matches_reference() {
    for (i, dims) in ROW_SHAPES.iter().enumerate() {
        let h = dims[dims.len() - 1];
        // Scale 1000: large values with a spread to match (LayerNorm is scale invariant).
        for scale in [1.0, 1000.0] {
            let x = randn(dims, scale, i as u64);
            let r = randn(dims, scale, 100 + i as u64);
            let w = randn(&[h], 2.0, 200 + i as u64);
            let b = randn(&[h], 1.0, 300 + i as u64);
            for res in [None, Some(&r)] {
                let fused = add_layer_norm(&x, res, &w, &b, 1e-12).unwrap();
                let reference = add_layer_norm_reference(&x, res, &w, &b, 1e-12).unwrap();
                let err = max_err(&fused, &reference);
                // A row of one element normalizes to exactly the bias in both.
                assert!(err <= 1e-5, "{dims:?} scale {scale}: {err}");
            }
        }
    }
}

#[test]
fn bias_gelu_matches_reference() {
    for (i, dims) in ROW_SHAPES.iter().enumerate() {
        let h = dims[dims.len() - 1];
        for scale in [1.0, 8.0, 1e4] {
            let x = randn(dims, scale, i as u64);
            let b = randn(&[h], 1.0, 50 + i as u64);
            let err = max_err(
                &bias_gelu(&x, &b).unwrap(),
                &bias_gelu_reference(&x, &b).unwrap(),
            );
            // At |x| = 1e4 both give x + b exactly (erf rounds to ±1).
            assert!(err <= 1e-5, "{dims:?} scale {scale}: {err}");
        }
    }
}

#[test]
fn bias_gelu_in_place_is_bias_gelu_bit_for_bit() {
    for (i, dims) in ROW_SHAPES.iter().enumerate() {
        let h = dims[dims.len() - 1];
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let x = randn(dims, 4.0, 70 + i as u64).to_dtype(dtype).unwrap();
            let b = randn(&[h], 1.0, 90 + i as u64).to_dtype(dtype).unwrap();
            let want = bias_gelu(&x, &b).unwrap();
            // A copy: the op writes over the storage it is given.
            let got = bias_gelu::bias_gelu_in_place(x.copy().unwrap(), &b).unwrap();
            assert_eq!(got.dims(), want.dims());
            let (got, want) = (
                got.to_dtype(DType::F32).unwrap().flatten_all().unwrap(),
                want.to_dtype(DType::F32).unwrap().flatten_all().unwrap(),
            );
            assert_eq!(
                got.to_vec1::<f32>().unwrap(),
                want.to_vec1::<f32>().unwrap(),
                "{dims:?} {dtype:?}"
            );
        }
    }
}

#[test]
fn erf_is_accurate_everywhere() {
    let mut worst = 0f64;
    for i in -60_000..=60_000 {
        let x = i as f32 * 1e-4;
        let e = (f64::from(bias_gelu::erf(x)) - candle_core::cpu::erf::erf_f64(f64::from(x))).abs();
        worst = worst.max(e);
    }
    assert!(worst < 5e-7, "max |erf error| {worst}");
    for x in [f32::INFINITY, 1e30, 4.0, 100.0] {
        assert_eq!(bias_gelu::erf(x), 1.0);
        assert_eq!(bias_gelu::erf(-x), -1.0);
    }
    assert_eq!(bias_gelu::gelu(0.0), 0.0);
}

#[test]
fn softmax_exp_is_accurate_where_softmax_uses_it() {
    let mut worst = 0f64;
    for i in 0..=870_000 {
        let x = -(i as f32) * 1e-4;
        let want = f64::from(x).exp();
        let got = f64::from(masked_softmax::exp(x));
        worst = worst.max((got - want).abs() / want);
    }
    assert!(worst < 5e-7, "max relative exp error {worst}");
    assert_eq!(masked_softmax::exp(0.0), 1.0);
    assert!(masked_softmax::exp(-1000.0) < 1e-37);
    let mut rng = Rng::new(8);
    for _ in 0..10_000 {
        let x = -(rng.next_f64() * 90.0) as f32;
        // SAFETY: a pure function.
        let twin = unsafe { emu::tremble_emu_exp(x) };
        assert_eq!(twin.to_bits(), masked_softmax::exp(x).to_bits(), "{x}");
    }
}

#[test]
fn masked_softmax_matches_reference_with_padding_and_empty_rows() {
    for (b, heads, tq, tk, seed) in [
        (1, 1, 1, 1, 1),
        (3, 2, 5, 5, 2),
        (2, 12, 7, 130, 3),
        (4, 3, 1, 9, 4),
    ] {
        for scale in [0.125f32, 1.0, 30.0] {
            let s = randn(&[b, heads, tq, tk], 8.0, seed);
            let m = mask(b, tk, b > 1, seed);
            let fused = masked_softmax(&s, &m, scale).unwrap();
            let reference = masked_softmax_reference(&s, &m, scale).unwrap();
            let err = max_err(&fused, &reference);
            assert!(err <= 1e-5, "{b}x{heads}x{tq}x{tk} scale {scale}: {err}");
            // Every row is a distribution; padded keys get nothing unless all keys are padding.
            let p = flat(&fused);
            let mv = flat(&m);
            for (row, chunk) in p.chunks(tk).enumerate() {
                let total: f32 = chunk.iter().sum();
                assert!((total - 1.0).abs() < 1e-5, "row {row} sums to {total}");
                let keep = &mv[(row / (heads * tq)) * tk..][..tk];
                if keep.iter().any(|&k| k != 0.0) {
                    for (pj, kj) in chunk.iter().zip(keep) {
                        assert!(*kj != 0.0 || *pj == 0.0);
                    }
                }
            }
        }
    }
}

#[test]
fn self_attention_matches_reference_with_padding_holes_and_empty_rows() {
    for (b, t, heads, d, seed) in [
        (1, 1, 1, 1, 1),
        (3, 5, 2, 4, 2),
        (2, 130, 12, 32, 3),
        (4, 9, 3, 7, 4),
    ] {
        let qkv = randn(&[b, t, 3 * heads * d], 3.0, seed);
        let m = mask(b, t, b > 1, seed);
        let fused = self_attention(&qkv, &m, heads).unwrap();
        let reference = self_attention_reference(&qkv, &m, heads).unwrap();
        let err = max_err(&fused, &reference);
        assert!(err <= 1e-5, "{b}x{t}, {heads} heads of {d}: {err}");
    }
    // A mask with holes (keys skipped inside the sequence), given as f32.
    let qkv = randn(&[2, 11, 3 * 2 * 5], 3.0, 9);
    let holes: Vec<f32> = (0..22).map(|i| f32::from(i % 3 != 1)).collect();
    let m = Tensor::from_vec(holes, (2, 11), &Device::Cpu).unwrap();
    let err = max_err(
        &self_attention(&qkv, &m, 2).unwrap(),
        &self_attention_reference(&qkv, &m, 2).unwrap(),
    );
    assert!(err <= 1e-5, "mask with holes: {err}");
}

#[test]
fn self_attention_refuses_what_it_cannot_split_or_run() {
    let m = Tensor::ones((2, 4), DType::U32, &Device::Cpu).unwrap();
    let qkv = randn(&[2, 4, 12], 1.0, 1);
    for (qkv, m, heads, what) in [
        (qkv.clone(), m.clone(), 3, "does not split"),
        (
            qkv.clone(),
            m.narrow(1, 0, 3).unwrap(),
            2,
            "needs a mask [2, 4]",
        ),
        (
            qkv.to_dtype(DType::F16).unwrap(),
            m.clone(),
            2,
            "must be f32",
        ),
    ] {
        let err = self_attention(&qkv, &m, heads).unwrap_err().to_string();
        assert!(
            err.contains(what) && err.contains("self_attention"),
            "{err}"
        );
    }
}

#[test]
fn mean_pool_matches_reference() {
    for (b, t, h, seed) in [(1, 1, 1, 1), (3, 7, 5, 2), (4, 129, 384, 3), (2, 3, 17, 4)] {
        for scale in [1.0, 1e4] {
            let x = randn(&[b, t, h], scale, seed);
            let m = mask(b, t, b > 1, seed);
            let err = max_err(
                &masked_mean_pool(&x, &m).unwrap(),
                &masked_mean_pool_reference(&x, &m).unwrap(),
            );
            assert!(err <= 1e-5 * scale, "{b}x{t}x{h} scale {scale}: {err}");
        }
        if b > 1 {
            let pooled = flat(
                &masked_mean_pool(&randn(&[b, t, h], 1.0, seed), &mask(b, t, true, seed)).unwrap(),
            );
            assert!(
                pooled[(b - 1) * h..].iter().all(|&v| v == 0.0),
                "empty row pools to 0"
            );
        }
    }
}

#[test]
fn half_precision_matches_reference_within_its_rounding() {
    let x = randn(&[2, 5, 64], 2.0, 9);
    let r = randn(&[2, 5, 64], 2.0, 10);
    let w = randn(&[64], 1.0, 11);
    let s = randn(&[2, 4, 5, 5], 4.0, 12);
    let m = mask(2, 5, false, 13);
    for dtype in [DType::F16, DType::BF16] {
        let c = |t: &Tensor| t.to_dtype(dtype).unwrap();
        let tol = if dtype == DType::F16 { 1e-2 } else { 6e-2 };
        let pairs = [
            (
                add_layer_norm(&c(&x), Some(&c(&r)), &c(&w), &c(&w), 1e-12).unwrap(),
                add_layer_norm_reference(&c(&x), Some(&c(&r)), &c(&w), &c(&w), 1e-12).unwrap(),
            ),
            (
                bias_gelu(&c(&x), &c(&w)).unwrap(),
                bias_gelu_reference(&c(&x), &c(&w)).unwrap(),
            ),
            (
                masked_softmax(&c(&s), &m, 0.5).unwrap(),
                masked_softmax_reference(&c(&s), &m, 0.5).unwrap(),
            ),
            (
                masked_mean_pool(&c(&x), &m).unwrap(),
                masked_mean_pool_reference(&c(&x), &m).unwrap(),
            ),
        ];
        for (i, (fused, reference)) in pairs.iter().enumerate() {
            assert_eq!(fused.dtype(), dtype);
            let err = max_err(fused, reference);
            assert!(err <= tol, "{dtype:?} op {i}: {err}");
        }
    }
}

#[test]
fn strided_input_and_float_masks_are_accepted() {
    let x = randn(&[3, 6, 8], 1.0, 21);
    let strided = x.transpose(0, 1).unwrap();
    assert!(!strided.is_contiguous());
    let w = randn(&[8], 1.0, 22);
    let a = add_layer_norm(&strided, None, &w, &w, 1e-5).unwrap();
    let b = add_layer_norm_reference(&strided.contiguous().unwrap(), None, &w, &w, 1e-5).unwrap();
    assert!(max_err(&a, &b) <= 1e-5);
    let m = mask(6, 3, true, 23);
    let mf = m.to_dtype(DType::F32).unwrap();
    let p1 = masked_mean_pool(&strided, &m).unwrap();
    let p2 = masked_mean_pool(&strided, &mf).unwrap();
    assert_eq!(flat(&p1), flat(&p2));
}

#[test]
fn bad_input_is_refused_naming_the_op_and_shapes() {
    let x = randn(&[2, 3, 4], 1.0, 1);
    let cases: Vec<(&str, candle_core::Result<Tensor>)> = vec![
        (
            "layer_norm",
            add_layer_norm(&x, None, &randn(&[3], 1.0, 2), &randn(&[4], 1.0, 2), 1e-5),
        ),
        (
            "layer_norm",
            add_layer_norm(
                &x,
                Some(&randn(&[2, 4], 1.0, 2)),
                &randn(&[4], 1.0, 2),
                &randn(&[4], 1.0, 2),
                1e-5,
            ),
        ),
        ("bias_gelu", bias_gelu(&x, &randn(&[3], 1.0, 3))),
        (
            "bias_gelu",
            bias_gelu(
                &x.to_dtype(DType::F64).unwrap(),
                &randn(&[4], 1.0, 3).to_dtype(DType::F64).unwrap(),
            ),
        ),
        (
            "masked_softmax",
            masked_softmax(&x, &mask(2, 4, false, 1), 1.0),
        ),
        (
            "masked_softmax",
            masked_softmax(&randn(&[2, 1, 3, 4], 1.0, 4), &mask(2, 3, false, 1), 1.0),
        ),
        (
            "masked_softmax",
            masked_softmax(
                &randn(&[2, 1, 3, 4], 1.0, 4),
                &mask(2, 4, false, 1),
                f32::NAN,
            ),
        ),
        ("mean_pool", masked_mean_pool(&x, &mask(2, 4, false, 1))),
    ];
    for (op, r) in cases {
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains(op), "{msg}");
        assert!(msg.contains('['), "names a shape: {msg}");
    }
}

// The kernels' host twins: the real .cu source on emulated blocks against the CPU ops. Block
// reductions sum in a tree, the CPU ops in order, so these agree to rounding; bias + GELU has
// no reduction and agrees bit for bit.

#[test]
fn layer_norm_kernel_on_emulated_blocks_matches_the_cpu_op() {
    for (rows, h, block, grid) in [
        (1, 1, 1, 1),
        (5, 384, 8, 2),
        (3, 17, 32, 3),
        (2, 1000, 4, 1),
    ] {
        let x = randn(&[rows, h], 3.0, h as u64);
        let r = randn(&[rows, h], 3.0, 7);
        let (w, b) = (randn(&[h], 1.0, 8), randn(&[h], 1.0, 9));
        for residual in [false, true] {
            let cpu = add_layer_norm(&x, residual.then_some(&r), &w, &b, 1e-12).unwrap();
            let mut out = vec![f32::NAN; rows * h];
            let (xv, rv, wv, bv) = (flat(&x), flat(&r), flat(&w), flat(&b));
            // SAFETY: buffers sized as the kernel expects.
            unsafe {
                emu::tremble_emu_layer_norm_f32(
                    xv.as_ptr(),
                    rv.as_ptr(),
                    wv.as_ptr(),
                    bv.as_ptr(),
                    out.as_mut_ptr(),
                    rows as u32,
                    h as u32,
                    u32::from(residual),
                    1e-12,
                    grid,
                    block,
                );
            }
            let err = flat(&cpu)
                .iter()
                .zip(&out)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err <= 1e-5, "rows {rows} h {h} block {block}: {err}");
        }
    }
}

#[test]
fn bias_gelu_kernel_on_emulated_blocks_matches_the_cpu_op_bit_for_bit() {
    for (rows, cols, block, grid) in [(1, 1, 1, 1), (7, 33, 16, 2), (3, 1536, 64, 5)] {
        let x = randn(&[rows, cols], 6.0, cols as u64);
        let b = randn(&[cols], 1.0, 3);
        let cpu = flat(&bias_gelu(&x, &b).unwrap());
        let mut out = vec![f32::NAN; rows * cols];
        let (xv, bv) = (flat(&x), flat(&b));
        // SAFETY: buffers sized as the kernel expects.
        unsafe {
            emu::tremble_emu_bias_gelu_f32(
                xv.as_ptr(),
                bv.as_ptr(),
                out.as_mut_ptr(),
                (rows * cols) as u32,
                cols as u32,
                grid,
                block,
            );
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&cpu), "rows {rows} cols {cols}");
    }
    let mut rng = Rng::new(4);
    for _ in 0..10_000 {
        let x = ((rng.next_f64() * 2.0 - 1.0) * 12.0) as f32;
        // SAFETY: a pure function.
        assert_eq!(
            unsafe { emu::tremble_emu_gelu(x) }.to_bits(),
            bias_gelu::gelu(x).to_bits(),
            "{x}"
        );
    }
}

#[test]
fn masked_softmax_kernel_on_emulated_blocks_matches_the_cpu_op() {
    for (b, heads, tq, tk, block, grid) in [
        (1, 1, 1, 1, 1, 1),
        (3, 2, 3, 9, 4, 5),
        (2, 3, 4, 130, 16, 7),
    ] {
        let s = randn(&[b, heads, tq, tk], 8.0, tk as u64);
        let m = mask(b, tk, b > 1, 5);
        let cpu = flat(&masked_softmax(&s, &m, 0.125).unwrap());
        let rows = b * heads * tq;
        let mut out = vec![f32::NAN; rows * tk];
        let (sv, mv) = (flat(&s), m.flatten_all().unwrap().to_vec1::<u32>().unwrap());
        // SAFETY: buffers sized as the kernel expects.
        unsafe {
            emu::tremble_emu_masked_softmax_f32(
                sv.as_ptr(),
                mv.as_ptr(),
                out.as_mut_ptr(),
                rows as u32,
                tk as u32,
                (heads * tq) as u32,
                0.125,
                grid,
                block,
            );
        }
        let err = cpu
            .iter()
            .zip(&out)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(err <= 1e-6, "{b}x{heads}x{tq}x{tk}: {err}");
    }
}

#[test]
fn mean_pool_kernel_on_emulated_blocks_matches_the_cpu_op_bit_for_bit() {
    // One thread per output sums its tokens in order, as the CPU op does.
    for (b, t, h, block, grid) in [(1, 1, 1, 1, 1), (3, 7, 5, 4, 2), (4, 33, 384, 64, 3)] {
        let x = randn(&[b, t, h], 2.0, h as u64);
        let m = mask(b, t, b > 1, 6);
        let cpu = flat(&masked_mean_pool(&x, &m).unwrap());
        let mut out = vec![f32::NAN; b * h];
        let (xv, mv) = (flat(&x), m.flatten_all().unwrap().to_vec1::<u32>().unwrap());
        // SAFETY: buffers sized as the kernel expects.
        unsafe {
            emu::tremble_emu_mean_pool_f32(
                xv.as_ptr(),
                mv.as_ptr(),
                out.as_mut_ptr(),
                b as u32,
                t as u32,
                h as u32,
                grid,
                block,
            );
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&cpu), "{b}x{t}x{h}");
    }
}
