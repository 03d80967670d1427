//! Architecture parity with the reference implementation (transformers), on the tiny formula
//! model always and on the real all-MiniLM-L6-v2 when its weights are present.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tremble::models::bert::{
    AttentionMask, BertConfig, BertLayer, BertModel, EncoderOps, Precision,
};
use tremble::tokenize::{TextTokenizer, WindowSpec};

use crate::common::{load_golden, max_abs_diff, real_base, repo};

const ALL_OPS: [EncoderOps; 3] = [EncoderOps::Fused, EncoderOps::Candle, EncoderOps::Reference];

/// Every implementation, and the fused ops with the dense layers on packed f32 weights (what
/// the detector runs on AVX-512 CPUs).
fn implementations() -> impl Iterator<Item = (EncoderOps, bool)> {
    ALL_OPS
        .into_iter()
        .map(|o| (o, false))
        .chain([(EncoderOps::Fused, true)])
}

fn with_impl(model: BertModel, (ops, packed): (EncoderOps, bool)) -> BertModel {
    let model = model.with_ops(ops);
    match packed {
        true => model.with_precision(Precision::F32).unwrap(),
        false => model,
    }
}

#[test]
fn tiny_bert_matches_transformers_on_a_padded_batch_with_every_implementation() {
    let golden = load_golden("tiny.safetensors");
    let cfg = tremble::testing::tiny_config();
    for imp in implementations() {
        let tensors = tremble::testing::tiny_tensors_on(&Device::Cpu, DType::F32).unwrap();
        let model = BertModel::load(
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let model = with_impl(model, imp);
        let ids = golden["ids"].to_dtype(DType::U32).unwrap();
        let mask = golden["mask"].to_dtype(DType::U32).unwrap();
        let hidden = model.forward(&ids, &mask).unwrap();
        let pooled = model.pool(&hidden, &mask).unwrap();
        let dh = max_abs_diff(&hidden, &golden["hidden"]);
        let dp = max_abs_diff(&pooled, &golden["pooled"]);
        assert!(
            dh <= 1e-5 && dp <= 1e-5,
            "{imp:?}: hidden Δ {dh}, pooled Δ {dp}"
        );
    }
}

#[test]
fn only_the_reference_implementation_carries_gradients_to_every_layer_weight() {
    let cfg = tremble::testing::tiny_config();
    let ids = Tensor::new(&[[2u32, 5, 7, 3], [2, 6, 3, 0]], &Device::Cpu).unwrap();
    let mask = ids.ne(0u32).unwrap().to_dtype(DType::U32).unwrap();
    for ops in ALL_OPS {
        let varmap = candle_nn::VarMap::new();
        {
            let tensors = tremble::testing::tiny_tensors_on(&Device::Cpu, DType::F32).unwrap();
            let mut data = varmap.data().lock().unwrap();
            for (name, t) in tensors
                .iter()
                .filter(|(n, _)| n.starts_with("encoder.layer.0."))
            {
                data.insert(name.clone(), candle_core::Var::from_tensor(t).unwrap());
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let layer = BertLayer::load(vb.pp("encoder.layer.0"), &cfg)
            .unwrap()
            .with_ops(ops);
        let x = Tensor::randn(0f32, 1.0, (2, 4, cfg.hidden_size), &Device::Cpu).unwrap();
        let y = layer
            .forward(&x, &AttentionMask::new(&mask, DType::F32).unwrap())
            .unwrap();
        let w = Tensor::randn(0f32, 1.0, y.shape(), &Device::Cpu).unwrap();
        let grads = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let missing: Vec<&String> = data
            .iter()
            .filter(|(_, v)| grads.get(v.as_tensor()).is_none())
            .map(|(n, _)| n)
            .collect();
        if ops == EncoderOps::Reference {
            assert!(missing.is_empty(), "no gradient for {missing:?}");
        } else {
            // Fused ops (ours and candle's) have no backward: what training must not use.
            assert!(!missing.is_empty(), "{ops:?} unexpectedly differentiable");
        }
    }
}

/// The real all-MiniLM-L6-v2 beside its transformers golden outputs on 11 varied texts.
struct RealMinilm {
    texts: Vec<String>,
    golden: std::collections::HashMap<String, Tensor>,
    cfg: BertConfig,
    tensors: std::collections::HashMap<String, Tensor>,
    tok: TextTokenizer,
}

impl RealMinilm {
    /// `None` (the skip said by `real_base`) without the real weights.
    fn load(test: &str) -> Option<Self> {
        let dir = real_base(test)?;
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("tests/golden/minilm.json")).unwrap(),
        )
        .unwrap();
        let texts = meta["texts"].as_array().unwrap();
        Some(Self {
            texts: texts
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
            golden: load_golden("minilm.safetensors"),
            cfg: serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap(),
            tensors: candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)
                .unwrap(),
            tok: TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap(),
        })
    }

    fn model(&self) -> BertModel {
        BertModel::load(
            VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &Device::Cpu),
            &self.cfg,
        )
        .unwrap()
    }

    /// Text `i` through `model` as one window: (its token ids, hidden `[T, H]`, pooled `[H]`).
    fn run(&self, model: &BertModel, i: usize) -> (Vec<u32>, Tensor, Tensor) {
        let spec = WindowSpec {
            max_tokens: 512,
            overlap: 0,
        };
        let windows = self.tok.windows(&self.texts[i], spec).unwrap();
        assert_eq!(windows.len(), 1);
        let ids = Tensor::new(windows[0].as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = ids.ones_like().unwrap();
        let hidden = model.forward(&ids, &mask).unwrap();
        let pooled = model.pool(&hidden, &mask).unwrap().squeeze(0).unwrap();
        (windows[0].clone(), hidden.squeeze(0).unwrap(), pooled)
    }
}

#[test]
fn real_minilm_matches_transformers() {
    let Some(real) = RealMinilm::load("real_minilm_matches_transformers") else {
        return;
    };
    let golden = &real.golden;
    for imp in implementations() {
        let model = with_impl(real.model(), imp);
        let mut worst = (0f32, 0f32);
        for i in 0..real.texts.len() {
            let (ids, hidden, pooled) = real.run(&model, i);
            let want_ids: Vec<u32> = golden[&format!("ids.{i}")]
                .to_vec1::<i64>()
                .unwrap()
                .into_iter()
                .map(|x| x as u32)
                .collect();
            assert_eq!(ids, want_ids, "token ids differ for text {i}");
            let dh = max_abs_diff(&hidden, &golden[&format!("hidden.{i}")]);
            let dp = max_abs_diff(&pooled, &golden[&format!("pooled.{i}")]);
            worst = (worst.0.max(dh), worst.1.max(dp));
            assert!(
                dh <= 1e-4 && dp <= 1e-4,
                "{imp:?} text {i}: hidden Δ {dh}, pooled Δ {dp}"
            );
        }
        eprintln!(
            "real MiniLM parity ({imp:?}) over {} texts: max |Δ| hidden {:.2e}, pooled {:.2e}",
            real.texts.len(),
            worst.0,
            worst.1
        );
    }
}

/// Cosine similarity of two same-shaped tensors, flattened.
fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(&a) * norm(&b))
}

/// The real MiniLM in a reduced `precision` against the transformers outputs: every text's
/// pooled embedding within `min_cos` cosine and `max_d` per element, skipped (with the reason)
/// where this CPU lacks the instructions.
fn real_minilm_in(precision: Precision, supported: bool, min_cos: f32, max_d: f32, test: &str) {
    if !supported {
        eprintln!("skipping {test}: this CPU lacks the instructions of {precision}");
        return;
    }
    let Some(real) = RealMinilm::load(test) else {
        return;
    };
    let model = real.model().with_precision(precision).unwrap();
    let mut worst = (1f32, 0f32);
    for i in 0..real.texts.len() {
        let (_, _, pooled) = real.run(&model, i);
        let want = &real.golden[&format!("pooled.{i}")];
        let (cos, d) = (cosine(&pooled, want), max_abs_diff(&pooled, want));
        worst = (worst.0.min(cos), worst.1.max(d));
        assert!(
            cos >= min_cos && d <= max_d,
            "{precision} text {i}: cosine {cos}, max |Δ| {d}"
        );
    }
    eprintln!(
        "real MiniLM in {precision}: worst pooled cosine {:.5}, max |Δ| {:.2e}",
        worst.0, worst.1
    );
}

#[test]
fn real_minilm_in_bf16_stays_within_its_rounding_of_transformers() {
    // bf16 keeps 8 significant bits: close in direction, not to 1e-4.
    real_minilm_in(
        Precision::Bf16,
        tremble::ops::bf16_supported(),
        0.999,
        0.05,
        "real_minilm_in_bf16_stays_within_its_rounding_of_transformers",
    );
}

#[test]
fn real_minilm_in_int8_stays_close_to_transformers() {
    // 8-bit activations per token: close in direction, further than bf16 in value (measured:
    // worst cosine 0.986, max |Δ| 0.18, on the shortest texts).
    real_minilm_in(
        Precision::Int8,
        tremble::ops::int8_supported(),
        0.98,
        0.25,
        "real_minilm_in_int8_stays_close_to_transformers",
    );
}

#[test]
fn reduced_precisions_are_refused_where_they_cannot_run() {
    let cfg = tremble::testing::tiny_config();
    for (precision, name) in [(Precision::Bf16, "bf16"), (Precision::Int8, "int8")] {
        let tensors = tremble::testing::tiny_tensors_on(&Device::Cpu, DType::F32).unwrap();
        let model = BertModel::load(
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap()
        .with_ops(EncoderOps::Reference);
        let err = model
            .with_precision(precision)
            .err()
            .expect("a reduced precision on the reference ops")
            .to_string();
        assert!(err.contains(name), "{err}");
    }
}
