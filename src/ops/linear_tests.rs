//! The dense layers' packed formats (f32, bf16, int8) against their references on odd shapes
//! (partial tiles and column blocks, padded pairs and quads, no bias, no features).

use candle_core::{DType, Device, Tensor};

use super::encoder_tests::{flat, max_err, randn};
use super::int8_linear::quantize;
use super::*;

#[test]
fn packed_f32_linear_matches_candle_on_odd_shapes() {
    if !packed_f32_supported() {
        eprintln!("skipping packed f32 test: this CPU lacks AVX-512F");
        return;
    }
    for (rows, n, k, bias, seed) in ODD_SHAPES {
        let x = randn(&[rows, k], 2.0, seed);
        let w = randn(&[n, k], 0.5, seed + 100);
        let b = bias.then(|| randn(&[n], 1.0, seed + 200));
        let fused = packed_linear(&x, &PackedWeights::f32(&w, b.as_ref()).unwrap()).unwrap();
        let reference = candle_nn::Linear::new(w, b);
        let reference = candle_core::Module::forward(&reference, &x).unwrap();
        let err = max_err(&fused, &reference);
        assert!(err <= 1e-5 * (k as f32).sqrt(), "{rows}x{n}x{k}: {err}");
    }
}

#[test]
fn bf16_linear_matches_its_reference_on_odd_shapes() {
    if !bf16_supported() {
        eprintln!("skipping bf16 packed_linear test: this CPU lacks AVX512-BF16");
        return;
    }
    for (rows, n, k, bias, seed) in ODD_SHAPES {
        let x = randn(&[rows, k], 2.0, seed);
        let w = randn(&[n, k], 0.5, seed + 100);
        let b = bias.then(|| randn(&[n], 1.0, seed + 200));
        let packed = PackedWeights::bf16(&w, b.as_ref()).unwrap();
        let fused = packed_linear(&x, &packed).unwrap();
        let reference = bf16_linear_reference(&x, &w, b.as_ref()).unwrap();
        // Same bf16 inputs and exact products; only the summation order differs.
        let err = max_err(&fused, &reference);
        assert!(err <= 1e-4 * (k as f32).sqrt(), "{rows}x{n}x{k}: {err}");
    }
    // No input features: every row is the bias.
    let b = randn(&[3], 1.0, 12);
    let w0 = Tensor::zeros((3, 0), DType::F32, &Device::Cpu).unwrap();
    let x0 = Tensor::zeros((2, 0), DType::F32, &Device::Cpu).unwrap();
    let y = packed_linear(&x0, &PackedWeights::bf16(&w0, Some(&b)).unwrap()).unwrap();
    assert_eq!(flat(&y), [flat(&b), flat(&b)].concat());
    // Leading dimensions are kept: [b, t, k] -> [b, t, n].
    let x = randn(&[2, 3, 8], 1.0, 9);
    let w = randn(&[5, 8], 1.0, 10);
    let y = packed_linear(&x, &PackedWeights::bf16(&w, None).unwrap()).unwrap();
    assert_eq!(y.dims(), [2, 3, 5]);
    let err = packed_linear(
        &randn(&[2, 7], 1.0, 11),
        &PackedWeights::bf16(&w, None).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("packed_linear") && err.contains("8 features"),
        "{err}"
    );
}

/// Odd shapes: rows past one tile and not a multiple of the micro-kernel; columns not a
/// multiple of 32 (masked stores); feature counts that pad the last pair or quad.
const ODD_SHAPES: [(usize, usize, usize, bool, u64); 6] = [
    (1, 1, 1, true, 1),
    (13, 33, 7, true, 2),
    (2, 130, 384, false, 3),
    (200, 384, 385, true, 4),
    (97, 48, 64, true, 5),
    (12, 17, 1538, true, 6),
];

#[test]
fn quantize_is_symmetric_round_to_even_and_handles_zeros() {
    let (q, s) = quantize(&[1.27, -0.635, 0.005, 0.0]);
    assert_eq!(q, [127, -64, 0, 0]); // -63.5 rounds to even
    assert!((s - 0.01).abs() < 1e-7, "{s}");
    assert_eq!(quantize(&[0.0, 0.0]), (vec![0, 0], 0.0));
    assert_eq!(quantize(&[]), (vec![], 0.0));
}

#[test]
fn int8_linear_matches_its_reference_to_the_bit() {
    if !int8_supported() {
        eprintln!("skipping int8 packed_linear test: this CPU lacks AVX512-VNNI");
        return;
    }
    for (rows, n, k, bias, seed) in ODD_SHAPES {
        let x = randn(&[rows, k], 2.0, seed);
        let w = randn(&[n, k], 0.5, seed + 100);
        let b = bias.then(|| randn(&[n], 1.0, seed + 200));
        let fused = packed_linear(&x, &PackedWeights::int8(&w, b.as_ref()).unwrap()).unwrap();
        // Exact integer sums and the same epilogue: no tolerance.
        let reference = int8_linear_reference(&x, &w, b.as_ref()).unwrap();
        assert_eq!(flat(&fused), flat(&reference), "{rows}x{n}x{k}");
        // And the format approximates the f32 product: per-element error within a few
        // quantization steps of both operands.
        let exact =
            candle_core::Module::forward(&candle_nn::Linear::new(w.clone(), b), &x).unwrap();
        let err = max_err(&fused, &exact);
        assert!(err <= 0.05 * (k as f32).sqrt(), "{rows}x{n}x{k}: {err}");
    }
    // A zero row of x gives the bias alone (scale 0, not a division by zero).
    let w = randn(&[5, 8], 1.0, 10);
    let b = randn(&[5], 1.0, 11);
    let x = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    let y = packed_linear(&x, &PackedWeights::int8(&w, Some(&b)).unwrap()).unwrap();
    assert_eq!(flat(&y), [flat(&b), flat(&b)].concat());
    // Leading dimensions are kept, and a wrong feature count is named.
    let x = randn(&[2, 3, 8], 1.0, 9);
    let packed = PackedWeights::int8(&w, None).unwrap();
    assert!(packed.is_int8() && !packed.is_bf16());
    assert_eq!(packed_linear(&x, &packed).unwrap().dims(), [2, 3, 5]);
    let err = packed_linear(&randn(&[2, 7], 1.0, 11), &packed)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("packed_linear") && err.contains("8 features"),
        "{err}"
    );
}
