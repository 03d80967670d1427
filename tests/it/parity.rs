//! Architecture parity with the reference implementation (transformers), on the tiny formula
//! model always and on the real all-MiniLM-L6-v2 when its weights are present.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use tremble::models::bert::{mean_pool, BertConfig, BertModel};
use tremble::tokenize::{TextTokenizer, WindowSpec};

use crate::common::{load_golden, max_abs_diff, real_base, repo};

#[test]
fn tiny_bert_matches_transformers_on_a_padded_batch() {
    let golden = load_golden("tiny.safetensors");
    let cfg = tremble::testing::tiny_config();
    let tensors = tremble::testing::tiny_tensors_on(&Device::Cpu, DType::F32).unwrap();
    let model = BertModel::load(
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let ids = golden["ids"].to_dtype(DType::U32).unwrap();
    let mask = golden["mask"].to_dtype(DType::U32).unwrap();
    let hidden = model.forward(&ids, &mask).unwrap();
    let pooled = mean_pool(&hidden, &mask).unwrap();
    let dh = max_abs_diff(&hidden, &golden["hidden"]);
    let dp = max_abs_diff(&pooled, &golden["pooled"]);
    assert!(dh <= 1e-5 && dp <= 1e-5, "hidden Δ {dh}, pooled Δ {dp}");
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
    let model = BertModel::load(
        VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
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
        let pooled = mean_pool(&hidden, &mask).unwrap().squeeze(0).unwrap();
        let dh = max_abs_diff(&hidden.squeeze(0).unwrap(), &golden[&format!("hidden.{i}")]);
        let dp = max_abs_diff(&pooled, &golden[&format!("pooled.{i}")]);
        worst = (worst.0.max(dh), worst.1.max(dp));
        assert!(
            dh <= 1e-4 && dp <= 1e-4,
            "text {i}: hidden Δ {dh}, pooled Δ {dp}"
        );
    }
    eprintln!(
        "real MiniLM parity over {} texts: max |Δ| hidden {:.2e}, pooled {:.2e}",
        texts.len(),
        worst.0,
        worst.1
    );
}
