//! Tiny models made in code for tests, examples and doctests: a small BERT with formula
//! weights (reproducible in any language: see `scripts/golden_tiny.py`), a small WordPiece
//! tokenizer, the same BERT as an e5-style `E5S1` base ([`e5`]), and complete detector model
//! directories around them. Not for production use.

pub mod e5;

pub use e5::write_tiny_e5_base;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::manifest::{BaseRef, Calibration, DetectorManifest, Thresholds, FORMAT};
use crate::models::base::BaseFormat;
use crate::models::bert::BertConfig;
use crate::tokenize::WindowSpec;
use crate::weights::sha256_file;

/// Words of the tiny vocabulary (after the special tokens, letters and `##` letters).
const WORDS: &[&str] = &[
    "ignore",
    "all",
    "previous",
    "instructions",
    "and",
    "reveal",
    "the",
    "system",
    "prompt",
    "you",
    "are",
    "now",
    "dan",
    "what",
    "is",
    "weather",
    "today",
    "please",
    "tell",
    "me",
    "a",
    "story",
    "about",
    "cats",
    "hello",
    "world",
    "secret",
    "password",
    "forget",
    "rules",
];

/// The tiny BERT's configuration (hidden 32, 2 layers, 4 heads, 64 positions).
pub fn tiny_config() -> BertConfig {
    BertConfig {
        vocab_size: tiny_vocab().len(),
        hidden_size: 32,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        intermediate_size: 64,
        hidden_act: "gelu".into(),
        max_position_embeddings: 64,
        type_vocab_size: 2,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
    }
}

/// Token strings in id order.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    v.extend(('a'..='z').map(String::from));
    v.extend(('a'..='z').map(|c| format!("##{c}")));
    v.extend(WORDS.iter().map(|w| w.to_string()));
    v.extend(['.', ',', '!', '?'].map(String::from));
    v
}

/// The formula every tiny weight follows: `scale · u + offset` with `u` uniform in [−1, 1)
/// from SplitMix64 of (FNV-1a of the tensor name + element index). Integer hashing, so Python
/// reproduces it exactly (`scripts/golden_tiny.py`); pseudo-random, so the tiny encoder tells
/// texts apart (a single sinusoid would leave its embeddings in a 2-D span).
pub fn formula_values(name: &str, len: usize) -> Vec<f32> {
    let seed = name.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    });
    let (scale, offset) = if name.ends_with("LayerNorm.weight") {
        (0.1, 1.0)
    } else if name.ends_with(".bias") {
        (0.02, 0.0)
    } else {
        (0.2, 0.0)
    };
    (0..len as u64)
        .map(|i| {
            let z = crate::rng::mix(seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let u = (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (scale * u + offset) as f32
        })
        .collect()
}

/// Every tensor of the tiny BERT (HF names and shapes), filled by [`formula_values`].
pub fn tiny_bert_tensors(c: &BertConfig) -> Result<HashMap<String, Tensor>> {
    let h = c.hidden_size;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![c.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![c.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![c.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        let p = format!("encoder.layer.{l}.");
        for (n, s) in [
            ("attention.self.query", [h, h]),
            ("attention.self.key", [h, h]),
            ("attention.self.value", [h, h]),
            ("attention.output.dense", [h, h]),
            ("intermediate.dense", [c.intermediate_size, h]),
            ("output.dense", [h, c.intermediate_size]),
        ] {
            shapes.push((format!("{p}{n}.weight"), s.to_vec()));
            shapes.push((format!("{p}{n}.bias"), vec![s[0]]));
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}{n}.weight"), vec![h]));
            shapes.push((format!("{p}{n}.bias"), vec![h]));
        }
    }
    formula_tensors(&shapes)
}

fn formula_tensors(shapes: &[(String, Vec<usize>)]) -> Result<HashMap<String, Tensor>> {
    shapes
        .iter()
        .map(|(name, shape)| {
            let len = shape.iter().product();
            let t = Tensor::from_vec(formula_values(name, len), shape.as_slice(), &Device::Cpu)?;
            Ok((name.clone(), t))
        })
        .collect()
}

/// A WordPiece `tokenizer.json` for [`tiny_vocab`], as the Hugging Face format spells it.
pub fn tiny_tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> = tiny_vocab()
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, serde_json::json!(i)))
        .collect();
    let special = |id: u32, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
                         special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    })
    .to_string()
}

/// Writes the tiny base encoder (`config.json`, `tokenizer.json`, `model.safetensors`) to `dir`.
///
/// # Errors
/// [`Error::Io`] when `dir` is not writable.
pub fn write_tiny_base(dir: &Path) -> Result<()> {
    let io = |e| {
        Error::io(
            format!("cannot write the tiny model to {}", dir.display()),
            e,
        )
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let c = tiny_config();
    let config = serde_json::to_string_pretty(&c).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(dir.join("config.json"), config).map_err(io)?;
    std::fs::write(dir.join("tokenizer.json"), tiny_tokenizer_json()).map_err(io)?;
    candle_core::safetensors::save(&tiny_bert_tensors(&c)?, dir.join("model.safetensors"))?;
    Ok(())
}

/// Writes a complete tiny detector model to `dir`: the base encoder in `dir/base`, a formula
/// head and a manifest pinning every file. Window: 16 tokens, overlap 4, so that short texts
/// already exercise windowing.
///
/// # Errors
/// [`Error::Io`] when `dir` is not writable.
pub fn write_tiny_model(dir: &Path) -> Result<()> {
    write_tiny_base(&dir.join("base"))?;
    write_head_model(
        dir,
        Path::new("base"),
        tiny_config().hidden_size,
        "",
        TINY_WINDOW,
    )
}

/// [`write_tiny_model`] on the tiny e5 base ([`write_tiny_e5_base`]), with the `query: ` input
/// prefix an e5 base takes.
///
/// # Errors
/// [`Error::Io`] when `dir` is not writable.
pub fn write_tiny_e5_model(dir: &Path) -> Result<()> {
    write_tiny_e5_base(&dir.join("base"))?;
    let hidden = e5::tiny_e5_config().hidden_size;
    let prefix = BaseFormat::E5s1.default_input_prefix();
    write_head_model(dir, Path::new("base"), hidden, prefix, TINY_WINDOW)
}

/// The window of the tiny models: short texts already span several.
const TINY_WINDOW: WindowSpec = WindowSpec {
    max_tokens: 16,
    overlap: 4,
};

/// Writes a detector model to `dir` around the base encoder in `base` (relative to `dir`
/// unless absolute; either form): a formula head for `hidden`-wide embeddings and a manifest
/// pinning every file, with `input_prefix` and `window`. The real e5 test builds its
/// detector-shaped encoder with it.
///
/// # Errors
/// [`Error::ModelFile`] when `base` holds no base encoder, [`Error::Io`] when `dir` is not
/// writable.
pub fn write_head_model(
    dir: &Path,
    base: &Path,
    hidden: usize,
    input_prefix: &str,
    window: WindowSpec,
) -> Result<()> {
    let base_dir = dir.join(base);
    let format = BaseFormat::detect(&base_dir)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    let categories: Vec<String> = ["injection", "jailbreak", "adversarial"]
        .map(String::from)
        .to_vec();
    let head = formula_tensors(&[
        ("head.attack.weight".into(), vec![1, hidden]),
        ("head.attack.bias".into(), vec![1]),
        (
            "head.category.weight".into(),
            vec![categories.len(), hidden],
        ),
        ("head.category.bias".into(), vec![categories.len()]),
    ])?;
    candle_core::safetensors::save(&head, dir.join("head.safetensors"))?;
    let pins = |d: &Path, names: &[&str]| -> Result<BTreeMap<String, String>> {
        names
            .iter()
            .map(|n| Ok((n.to_string(), sha256_file(&d.join(n))?)))
            .collect()
    };
    let manifest = DetectorManifest {
        fusion: None,
        lm_surprise: None,
        format: FORMAT,
        name: "tiny-test".into(),
        base: BaseRef {
            name: match format {
                BaseFormat::Safetensors => "tiny-bert".into(),
                BaseFormat::E5s1 => "tiny-e5".into(),
            },
            dir: Some(base.to_path_buf()),
            hf_repo: None,
            files: pins(&base_dir, format.files())?,
            input_prefix: input_prefix.into(),
        },
        files: pins(dir, &["head.safetensors"])?,
        categories,
        window,
        calibration: Calibration::default(),
        thresholds: Thresholds {
            strict: 0.6,
            balanced: 0.5,
            permissive: 0.4,
        },
        route: None,
        info: None,
    };
    manifest.write(dir)
}

/// Loads the formula tensors as a `VarBuilder`-ready map in `dtype` on `device`.
pub fn tiny_tensors_on(device: &Device, dtype: DType) -> Result<HashMap<String, Tensor>> {
    tiny_bert_tensors(&tiny_config())?
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(dtype)?.to_device(device)?)))
        .collect()
}

/// A `dims` f32 tensor on the CPU, uniform in `[-scale, scale)` from our seeded RNG: test data
/// that is the same on every machine.
///
/// # Panics
/// Never for valid dims (the element count matches by construction).
pub fn uniform_tensor(dims: &[usize], scale: f32, seed: u64) -> Tensor {
    let mut rng = crate::rng::Rng::new(seed);
    let n: usize = dims.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) as f32) * scale)
        .collect();
    Tensor::from_vec(v, dims, &Device::Cpu).expect("element count matches dims")
}

/// Writes a tiny Llama GGUF (the [`tiny_vocab`], hidden 16, 2 layers, 4 heads over 2 kv heads,
/// FF 24, context 64) with [`formula_values`] weights, or every weight zero when `zero` (the
/// LM then predicts the uniform distribution: each token's surprise is exactly ln V).
///
/// # Errors
/// I/O and tensor errors.
pub fn write_tiny_llama(path: &Path, zero: bool) -> Result<()> {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let (vocab, hidden, ff, layers) = (tiny_vocab().len(), 16usize, 24usize, 2usize);
    let kv_dim = hidden / 2;
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        ("token_embd.weight".into(), vec![vocab, hidden]),
        ("output_norm.weight".into(), vec![hidden]),
    ];
    for i in 0..layers {
        for (n, s) in [
            ("attn_norm", vec![hidden]),
            ("attn_q", vec![hidden, hidden]),
            ("attn_k", vec![kv_dim, hidden]),
            ("attn_v", vec![kv_dim, hidden]),
            ("attn_output", vec![hidden, hidden]),
            ("ffn_norm", vec![hidden]),
            ("ffn_gate", vec![ff, hidden]),
            ("ffn_up", vec![ff, hidden]),
            ("ffn_down", vec![hidden, ff]),
        ] {
            shapes.push((format!("blk.{i}.{n}.weight"), s));
        }
    }
    let mut tensors = Vec::new();
    for (name, dims) in &shapes {
        let n: usize = dims.iter().product();
        let values = if zero {
            vec![0.0; n]
        } else if name.contains("norm") {
            formula_values(&format!("{name}.LayerNorm.weight"), n)
        } else {
            formula_values(name, n).iter().map(|v| v * 5.0).collect()
        };
        let t = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?;
        tensors.push((name.clone(), QTensor::quantize(&t, GgmlDType::F32)?));
    }
    use gguf_file::Value as V;
    let meta: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("llama".into())),
        ("llama.vocab_size", V::U32(vocab as u32)),
        ("llama.embedding_length", V::U32(hidden as u32)),
        ("llama.block_count", V::U32(layers as u32)),
        ("llama.attention.head_count", V::U32(4)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.feed_forward_length", V::U32(ff as u32)),
        ("llama.context_length", V::U32(64)),
        ("llama.rope.freq_base", V::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
    ];
    let meta_refs: Vec<(&str, &V)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f =
        std::fs::File::create(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    gguf_file::write(&mut f, &meta_refs, &tensor_refs)?;
    Ok(())
}

/// Gives the model in `model_dir` an LM-surprise rule over a tiny LM written to `lm_dir`
/// ([`write_tiny_llama`] and the tiny tokenizer). The rule's logit is `mean − ln V`, so with
/// `zero` weights every non-empty input gets probability exactly 0.5.
///
/// # Errors
/// I/O and tensor errors.
pub fn add_tiny_lm(model_dir: &Path, lm_dir: &Path, zero: bool) -> Result<()> {
    use crate::signals::lm_surprise::{LmRef, LmRule, LM_GGUF, LM_INPUT_NAMES};
    std::fs::create_dir_all(lm_dir).map_err(|e| Error::io(lm_dir.display().to_string(), e))?;
    write_tiny_llama(&lm_dir.join(LM_GGUF), zero)?;
    let tok = lm_dir.join("tokenizer.json");
    std::fs::write(&tok, tiny_tokenizer_json())
        .map_err(|e| Error::io(tok.display().to_string(), e))?;
    let mut files = BTreeMap::new();
    for name in [LM_GGUF, "tokenizer.json"] {
        files.insert(name.to_string(), sha256_file(&lm_dir.join(name))?);
    }
    let mut m = DetectorManifest::read(model_dir)?;
    m.lm_surprise = Some(LmRule {
        lm: LmRef {
            name: "tiny-lm".into(),
            dir: lm_dir.to_path_buf(),
            files,
        },
        max_tokens: 16,
        min_tokens: 0,
        inputs: LM_INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        center: vec![0.0; 5],
        scale: vec![1.0; 5],
        weights: vec![1.0, 0.0, 0.0, 0.0, 0.0],
        bias: -(tiny_vocab().len() as f32).ln(),
    });
    m.write(model_dir)
}
