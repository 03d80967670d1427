//! Architecture parity with the reference implementation (transformers), on the tiny formula
//! model always and on the real all-MiniLM-L6-v2 when its weights are present.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tremble::models::bert::{AttentionMask, BertConfig, BertLayer, BertModel, EncoderOps};
use tremble::tokenize::{TextTokenizer, WindowSpec};

use crate::common::{load_golden, max_abs_diff, real_base, repo};

const ALL_OPS: [EncoderOps; 3] = [EncoderOps::Fused, EncoderOps::Candle, EncoderOps::Reference];

#[test]
fn tiny_bert_matches_transformers_on_a_padded_batch_with_every_implementation() {
    let golden = load_golden("tiny.safetensors");
    let cfg = tremble::testing::tiny_config();
    for ops in ALL_OPS {
        let tensors = tremble::testing::tiny_tensors_on(&Device::Cpu, DType::F32).unwrap();
        let model = BertModel::load(
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap()
        .with_ops(ops);
        let ids = golden["ids"].to_dtype(DType::U32).unwrap();
        let mask = golden["mask"].to_dtype(DType::U32).unwrap();
        let hidden = model.forward(&ids, &mask).unwrap();
        let pooled = model.pool(&hidden, &mask).unwrap();
        let dh = max_abs_diff(&hidden, &golden["hidden"]);
        let dp = max_abs_diff(&pooled, &golden["pooled"]);
        assert!(
            dh <= 1e-5 && dp <= 1e-5,
            "{ops:?}: hidden Δ {dh}, pooled Δ {dp}"
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

#[test]
fn real_minilm_matches_transformers() {
    let Some(dir) = real_base("real_minilm_matches_transformers") else {
        return;
    };
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/golden/minilm.json")).unwrap(),
    )
    .unwrap();
    let golden = load_golden("minilm.safetensors");
    let cfg: BertConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    for ops in ALL_OPS {
        let model = BertModel::load(
            VarBuilder::from_tensors(tensors.clone(), DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap()
        .with_ops(ops);
        let spec = WindowSpec {
            max_tokens: 512,
            overlap: 0,
        };
        let texts = meta["texts"].as_array().unwrap();
        let mut worst = (0f32, 0f32);
        for (i, text) in texts.iter().enumerate() {
            let windows = tok.windows(text.as_str().unwrap(), spec).unwrap();
            assert_eq!(windows.len(), 1);
            let want_ids: Vec<u32> = golden[&format!("ids.{i}")]
                .to_vec1::<i64>()
                .unwrap()
                .into_iter()
                .map(|x| x as u32)
                .collect();
            assert_eq!(windows[0], want_ids, "token ids differ for text {i}");
            let ids = Tensor::new(windows[0].as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let mask = ids.ones_like().unwrap();
            let hidden = model.forward(&ids, &mask).unwrap();
            let pooled = model.pool(&hidden, &mask).unwrap().squeeze(0).unwrap();
            let dh = max_abs_diff(&hidden.squeeze(0).unwrap(), &golden[&format!("hidden.{i}")]);
            let dp = max_abs_diff(&pooled, &golden[&format!("pooled.{i}")]);
            worst = (worst.0.max(dh), worst.1.max(dp));
            assert!(
                dh <= 1e-4 && dp <= 1e-4,
                "{ops:?} text {i}: hidden Δ {dh}, pooled Δ {dp}"
            );
        }
        eprintln!(
            "real MiniLM parity ({ops:?}) over {} texts: max |Δ| hidden {:.2e}, pooled {:.2e}",
            texts.len(),
            worst.0,
            worst.1
        );
    }
}
