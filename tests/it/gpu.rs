//! The GPU path. Without CUDA devices (CI, and any machine running on the link-time stubs of
//! `scripts/setup_cuda.sh`), a `cuda` build must still fall back to the CPU; the tests marked
//! `requires a CUDA device` compare every kernel with its CPU op on a real GPU
//! (`scripts/gpu-check.sh` runs them).

use candle_core::{DType, Device, Tensor};
use tremble::device::DeviceChoice;
use tremble::ops::{perturb_tokens, sensitivity, TokenCopies};
use tremble::perturb::{TokenEdit, TokenPerturbation, TokenSpace};
use tremble::rng::Rng;

#[test]
fn auto_falls_back_to_the_cpu_and_explicit_cuda_explains_itself() {
    let cuda_works = DeviceChoice::Cuda(0).open();
    let auto = DeviceChoice::Auto.open().unwrap();
    match cuda_works {
        Ok(_) => assert!(auto.is_cuda(), "a working GPU is what auto picks"),
        Err(e) => {
            assert!(auto.is_cpu());
            let e = e.to_string();
            assert!(e.contains("CUDA device 0"), "{e}");
        }
    }
}

fn random_probs(n: usize, k1: usize, l: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(n * k1 * l);
    for _ in 0..n * k1 {
        let row: Vec<f32> = (0..l).map(|_| rng.next_f64() as f32 + 1e-3).collect();
        let total: f32 = row.iter().sum();
        data.extend(row.iter().map(|x| x / total));
    }
    Tensor::from_vec(data, (n, k1, l), &Device::Cpu).unwrap()
}

fn cuda() -> Device {
    DeviceChoice::Cuda(0).open().expect("a CUDA device")
}

#[test]
#[ignore = "requires a CUDA device"]
fn sensitivity_kernel_matches_the_cpu_op() {
    let gpu = cuda();
    for (n, k1, l) in [(1, 2, 2), (7, 9, 4), (1000, 9, 4), (33, 11, 3)] {
        let probs = random_probs(n, k1, l, n as u64);
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::F64] {
            let p = probs.to_dtype(dtype).unwrap();
            let cpu = sensitivity(&p, 0.5).unwrap().to_dtype(DType::F32).unwrap();
            let dev = sensitivity(&p.to_device(&gpu).unwrap(), 0.5).unwrap();
            let dev = dev
                .to_dtype(DType::F32)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap();
            let err = (cpu - dev).unwrap().abs().unwrap().max_all().unwrap();
            let err = err.to_scalar::<f32>().unwrap();
            let tol = if dtype == DType::F32 || dtype == DType::F64 {
                1e-5
            } else {
                1e-2
            };
            assert!(err <= tol, "{dtype:?} n {n}: max error {err}");
        }
    }
}

#[test]
#[ignore = "requires a CUDA device"]
fn token_perturbation_kernel_reproduces_the_cpu_copies_bit_for_bit() {
    let gpu = cuda();
    let mut rng = Rng::new(5);
    let (n, s) = (16, 256);
    let ids: Vec<u32> = (0..n * s)
        .map(|i| match i % s {
            0 => 101,
            j if j == s - 1 => 102,
            _ => 1000 + rng.below(29_000) as u32,
        })
        .collect();
    let ids = Tensor::from_vec(ids, (n, s), &Device::Cpu).unwrap();
    for &edit in TokenEdit::ALL {
        let cfg = TokenCopies {
            perturbation: TokenPerturbation::new(edit, 0.1).unwrap(),
            space: TokenSpace::new(30522, 103, &[0, 100, 101, 102]).unwrap(),
            seed: 11,
            copies: 8,
            copy0: 0,
            pad_id: 0,
        };
        let cpu = perturb_tokens(&ids, &cfg)
            .unwrap()
            .to_vec3::<u32>()
            .unwrap();
        let dev = perturb_tokens(&ids.to_device(&gpu).unwrap(), &cfg).unwrap();
        assert_eq!(dev.to_vec3::<u32>().unwrap(), cpu, "{edit}");
    }
}

use crate::common::max_abs_diff as max_err;
use tremble::testing::uniform_tensor as randn;

#[test]
#[ignore = "requires a CUDA device"]
fn encoder_op_kernels_match_the_cpu_ops() {
    use tremble::ops::{add_layer_norm, bias_gelu, masked_mean_pool, masked_softmax};
    let gpu = cuda();
    let x = randn(&[3, 130, 384], 3.0, 1);
    let r = randn(&[3, 130, 384], 3.0, 2);
    let (w, b) = (randn(&[384], 1.0, 3), randn(&[384], 1.0, 4));
    let s = randn(&[3, 12, 130, 130], 8.0, 5);
    let keep: Vec<u32> = (0..3 * 130)
        .map(|i| u32::from(i / 130 == 0 || i % 130 < 70 * (i / 130 % 2)))
        .collect();
    let m = Tensor::from_vec(keep, (3, 130), &Device::Cpu).unwrap(); // full, empty, padded rows
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let tol = match dtype {
            DType::F32 => 1e-5,
            DType::F16 => 2e-2,
            _ => 1e-1,
        };
        let on = |t: &Tensor, d: &Device| t.to_dtype(dtype).unwrap().to_device(d).unwrap();
        let cpu = Device::Cpu;
        let cases = [
            (
                "layer_norm",
                add_layer_norm(
                    &on(&x, &cpu),
                    Some(&on(&r, &cpu)),
                    &on(&w, &cpu),
                    &on(&b, &cpu),
                    1e-12,
                )
                .unwrap(),
                add_layer_norm(
                    &on(&x, &gpu),
                    Some(&on(&r, &gpu)),
                    &on(&w, &gpu),
                    &on(&b, &gpu),
                    1e-12,
                )
                .unwrap(),
            ),
            (
                "bias_gelu",
                bias_gelu(&on(&x, &cpu), &on(&b, &cpu)).unwrap(),
                bias_gelu(&on(&x, &gpu), &on(&b, &gpu)).unwrap(),
            ),
            (
                "masked_softmax",
                masked_softmax(&on(&s, &cpu), &m, 0.125).unwrap(),
                masked_softmax(&on(&s, &gpu), &m.to_device(&gpu).unwrap(), 0.125).unwrap(),
            ),
            (
                "mean_pool",
                masked_mean_pool(&on(&x, &cpu), &m).unwrap(),
                masked_mean_pool(&on(&x, &gpu), &m.to_device(&gpu).unwrap()).unwrap(),
            ),
        ];
        for (name, c, g) in &cases {
            let err = max_err(c, g);
            assert!(err <= tol, "{name} {dtype:?}: max error {err}");
        }
    }
}

#[test]
#[ignore = "requires a CUDA device"]
fn the_encoder_on_the_gpu_matches_the_cpu() {
    use candle_nn::VarBuilder;
    use tremble::models::bert::{BertModel, EncoderOps};
    let gpu = cuda();
    let cfg = tremble::testing::tiny_config();
    let ids = Tensor::new(&[[2u32, 5, 7, 9, 3], [2, 6, 3, 0, 0]], &Device::Cpu).unwrap();
    let mask = ids.ne(0u32).unwrap().to_dtype(DType::U32).unwrap();
    let load = |dev: &Device, dtype: DType, ops: EncoderOps| {
        let t = tremble::testing::tiny_tensors_on(dev, dtype).unwrap();
        BertModel::load(VarBuilder::from_tensors(t, dtype, dev), &cfg)
            .unwrap()
            .with_ops(ops)
    };
    let run = |m: &BertModel, dev: &Device| {
        let (i, k) = (ids.to_device(dev).unwrap(), mask.to_device(dev).unwrap());
        m.pool(&m.forward(&i, &k).unwrap(), &k).unwrap()
    };
    let want = run(
        &load(&Device::Cpu, DType::F32, EncoderOps::Fused),
        &Device::Cpu,
    );
    for (dtype, ops, tol) in [
        (DType::F32, EncoderOps::Fused, 1e-4),
        (DType::F32, EncoderOps::Candle, 1e-4),
        (DType::F16, EncoderOps::Fused, 2e-2),
        (DType::BF16, EncoderOps::Fused, 1e-1),
    ] {
        let err = max_err(&run(&load(&gpu, dtype, ops), &gpu), &want);
        assert!(err <= tol, "{dtype:?} {ops:?}: max error {err}");
    }
}
