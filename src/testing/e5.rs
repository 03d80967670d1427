//! Tiny multilingual-e5-style bases made in code: an `E5S1` blob writer (the layout
//! [`crate::models::e5`] reads), a SentencePiece-style Unigram tokenizer with `<s>`/`</s>`/
//! `<pad>` tokens, and a base directory of the two. Not for production use.

use std::path::Path;

use crate::error::{Error, Result};
use crate::models::bert::BertConfig;
use crate::models::e5::{tensor_names, BLOB_FILE, MAGIC, QK, VERSION};

/// One tensor as an `E5S1` blob stores it.
#[derive(Debug, Clone)]
pub struct E5Tensor {
    /// The blob's name (`emb.word`, `l0.q.w`, …).
    pub name: String,
    /// 0 = f32, 1 = Q4_0.
    pub dtype: u8,
    /// Element count.
    pub len: usize,
    /// The stored bytes.
    pub data: Vec<u8>,
}

/// An f32 tensor.
pub fn e5_f32(name: &str, values: &[f32]) -> E5Tensor {
    E5Tensor {
        name: name.into(),
        dtype: 0,
        len: values.len(),
        data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// A Q4_0 tensor from its blocks: `(f16 scale bits, 16 bytes of nibbles)`.
pub fn e5_q4_0(name: &str, blocks: &[(u16, [u8; 16])]) -> E5Tensor {
    let mut data = Vec::with_capacity(blocks.len() * (2 + QK / 2));
    for (scale, nibbles) in blocks {
        data.extend_from_slice(&scale.to_le_bytes());
        data.extend_from_slice(nibbles);
    }
    E5Tensor {
        name: name.into(),
        dtype: 1,
        len: blocks.len() * QK,
        data,
    }
}

/// Q4_0 blocks of `values` (a multiple of 32): per block the scale maps its largest magnitude
/// to ±7, each weight rounds to the nearest of the 15 levels around 8. Symmetric and simple,
/// which is all a test model needs (the real blob's own quantizer is ggml's).
pub fn quantize_q4_0(values: &[f32]) -> Vec<(u16, [u8; 16])> {
    values
        .chunks_exact(QK)
        .map(|block| {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = half::f16::from_f32(max / 7.0);
            let inv = match scale.to_f32() {
                s if s > 0.0 => 1.0 / s,
                _ => 0.0,
            };
            let level = |v: f32| ((v * inv).round().clamp(-8.0, 7.0) + 8.0) as u8;
            // The low nibbles hold the block's first 16 weights, the high nibbles its last 16.
            let nibbles =
                std::array::from_fn(|j| level(block[j]) | (level(block[j + QK / 2]) << 4));
            (scale.to_bits(), nibbles)
        })
        .collect()
}

/// Writes an `E5S1` blob of the model `c` describes (version 1, the engine's tokenizer section
/// reduced to two pieces with the real special ids: `<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3);
/// returns it and the offset of its tensor directory.
pub fn e5s1_blob(c: &BertConfig, tensors: &[E5Tensor]) -> (Vec<u8>, usize) {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    for v in [
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.vocab_size,
        c.max_position_embeddings,
        c.type_vocab_size,
    ] {
        b.extend_from_slice(&(v as i32).to_le_bytes());
    }
    b.extend_from_slice(&(c.layer_norm_eps as f32).to_le_bytes());
    b.extend_from_slice(&(QK as i32).to_le_bytes());
    // Tokenizer: piece count, bos, eos, pad, unk; pieces "a" and "b" with their scores; a
    // normalisation map of one entry (U+00A0 → U+0020).
    for v in [2i32, 0, 2, 1, 3] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&2u64.to_le_bytes());
    for v in [0u32, 1, 2] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for v in [-1.0f32, -2.0] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"ab");
    b.extend_from_slice(&1i32.to_le_bytes());
    b.extend_from_slice(&9u32.to_le_bytes());
    b.extend_from_slice(&0xa0u32.to_le_bytes());
    b.push(1);
    b.extend_from_slice(&0x20u32.to_le_bytes());
    let dir_at = b.len();
    let dir_len: usize = 4 + tensors.iter().map(|t| 2 + t.name.len() + 21).sum::<usize>();
    // The data starts 64-aligned, as in the real blob.
    let mut offset = (dir_at + dir_len).div_ceil(64) * 64;
    b.extend_from_slice(&(tensors.len() as i32).to_le_bytes());
    for t in tensors {
        b.extend_from_slice(&(t.name.len() as u16).to_le_bytes());
        b.extend_from_slice(t.name.as_bytes());
        b.push(t.dtype);
        b.extend_from_slice(&(t.len as u32).to_le_bytes());
        b.extend_from_slice(&(offset as u64).to_le_bytes());
        b.extend_from_slice(&(t.data.len() as u64).to_le_bytes());
        offset += t.data.len();
    }
    b.resize(b.len().div_ceil(64) * 64, 0);
    for t in tensors {
        b.extend_from_slice(&t.data);
    }
    (b, dir_at)
}

/// Pieces of the tiny Unigram vocabulary with their scores, in id order: the special tokens,
/// the lone word mark, `▁`-marked words (the tiny vocabulary's and `query`) that beat spelling
/// out, the `:` of the e5 prefix and punctuation, then letters with and without the mark so
/// that any lowercase ASCII word tokenizes.
pub fn tiny_e5_vocab() -> Vec<(String, f64)> {
    let mut v: Vec<(String, f64)> = ["<s>", "<pad>", "</s>", "<unk>"]
        .map(|s| (s.to_string(), 0.0))
        .to_vec();
    v.push(("▁".into(), -4.0));
    v.extend(
        super::WORDS
            .iter()
            .chain(&["query"])
            .map(|w| (format!("▁{w}"), -2.0)),
    );
    v.extend([":", ".", ",", "!", "?"].map(|p| (p.to_string(), -3.0)));
    v.extend(('a'..='z').map(|c| (format!("▁{c}"), -6.0)));
    v.extend(('a'..='z').map(|c| (c.to_string(), -5.0)));
    v
}

/// A `tokenizer.json` for [`tiny_e5_vocab`] shaped like multilingual-e5-small's: Unigram over
/// metaspace pre-tokenization, `<s> $A </s>` framing (lowercasing stands in for its
/// precompiled normaliser).
pub fn tiny_e5_tokenizer_json() -> String {
    let special = |id: u32, s: &str| {
        serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "▁",
        "prepend_scheme": "always", "split": true});
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"),
                         special(3, "<unk>")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": metaspace,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}},
                     {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "byte_fallback": false,
                  "vocab": tiny_e5_vocab()}
    })
    .to_string()
}

/// The tiny e5 base's configuration: the tiny BERT's shape (hidden 32, 2 layers, 4 heads, FF
/// 64, 64 positions) over [`tiny_e5_vocab`], padding id 1 as in XLM-R.
pub fn tiny_e5_config() -> BertConfig {
    BertConfig {
        vocab_size: tiny_e5_vocab().len(),
        pad_token_id: 1,
        ..super::tiny_config()
    }
}

/// The tiny e5 model's tensors as the blob stores them: [`super::formula_values`] of each HF
/// name, the weight matrices and word embeddings in Q4_0, everything else in f32 (the real
/// blob's split).
pub fn tiny_e5_tensors(c: &BertConfig) -> Vec<E5Tensor> {
    tensor_names(c)
        .into_iter()
        .map(|(blob, hf, shape)| {
            let values = super::formula_values(&hf, shape.iter().product());
            let matrix = shape.len() == 2 && !matches!(blob.as_str(), "emb.pos" | "emb.type");
            match matrix {
                true => e5_q4_0(&blob, &quantize_q4_0(&values)),
                false => e5_f32(&blob, &values),
            }
        })
        .collect()
}

/// Writes the tiny e5 base (`e5-small-q4.bin`, `tokenizer.json`) to `dir`.
///
/// # Errors
/// [`Error::Io`] when `dir` is not writable.
pub fn write_tiny_e5_base(dir: &Path) -> Result<()> {
    let io = |e| {
        Error::io(
            format!("cannot write the tiny e5 base to {}", dir.display()),
            e,
        )
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let c = tiny_e5_config();
    let (blob, _) = e5s1_blob(&c, &tiny_e5_tensors(&c));
    std::fs::write(dir.join(BLOB_FILE), blob).map_err(io)?;
    std::fs::write(dir.join("tokenizer.json"), tiny_e5_tokenizer_json()).map_err(io)
}

/// The package engine's embeddings of `query: `-prefixed texts
/// (`tests/golden/e5_small_embeddings.json`): each text with its language, token count and
/// embedding.
pub fn e5_golden() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/e5_small_embeddings.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Checks pooled embeddings `ours` (one per golden text, in order) against the engine's: a
/// cosine of at least 0.9998 for each text and 0.9999 on average. The engine quantizes
/// activations to int8 in its matmuls and we do not, which alone costs 0.99989–0.99993 on
/// these texts (an independent fp32 forward of the blob lands on our values); a position
/// table read two rows off gives 0.995–0.998, an unprefixed input 0.98–0.996. `what` names the
/// path under test in the printed cosines.
pub fn assert_matches_e5_golden(golden: &serde_json::Value, ours: &[Vec<f32>], what: &str) {
    let texts = golden["texts"].as_array().expect("golden texts");
    assert_eq!(ours.len(), texts.len());
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mut cosines = Vec::new();
    for (ours, t) in ours.iter().zip(texts) {
        let theirs: Vec<f32> = t["embedding"]
            .as_array()
            .expect("golden embedding")
            .iter()
            .map(|v| v.as_f64().expect("a number") as f32)
            .collect();
        let dot: f32 = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
        let cosine = dot / (norm(ours) * norm(&theirs));
        eprintln!("e5 {what} {}: cosine {cosine:.6}", t["lang"]);
        assert!(cosine >= 0.9998, "{what} {}: cosine {cosine}", t["lang"]);
        cosines.push(cosine);
    }
    let mean = cosines.iter().sum::<f32>() / cosines.len() as f32;
    assert!(mean >= 0.9999, "{what}: mean cosine {mean}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TextTokenizer;

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 30.0) / 9.0).collect();
        let blocks = quantize_q4_0(&values);
        for (block, vals) in blocks.iter().zip(values.chunks(QK)) {
            let scale = half::f16::from_bits(block.0).to_f32();
            for (j, v) in vals.iter().enumerate() {
                let byte = block.1[j % 16];
                let nibble = if j < 16 { byte & 0x0f } else { byte >> 4 };
                let w = (f32::from(nibble) - 8.0) * scale;
                assert!((w - v).abs() <= scale / 2.0 + 1e-6, "{j}: {w} vs {v}");
            }
        }
    }

    #[test]
    fn the_tiny_blob_reads_back_as_its_config() {
        let c = tiny_e5_config();
        let (blob, _) = e5s1_blob(&c, &tiny_e5_tensors(&c));
        let (config, tensors) =
            crate::models::e5::parse_e5s1(&blob, Path::new("tiny"), &candle_core::Device::Cpu)
                .unwrap();
        // The header stores eps as f32.
        assert_eq!(
            config,
            BertConfig {
                layer_norm_eps: f64::from(1e-12f32),
                ..c
            }
        );
        assert_eq!(tensors.len(), 5 + 16 * config.num_hidden_layers);
    }

    #[test]
    fn the_tiny_tokenizer_frames_with_s_tokens_and_spells_unknown_words() {
        let t = TextTokenizer::new(tiny_e5_tokenizer_json().parse().unwrap()).unwrap();
        assert_eq!(t.pad_id(), 1);
        let vocab = tiny_e5_vocab();
        let id = |p: &str| vocab.iter().position(|(s, _)| s == p).unwrap() as u32;
        assert_eq!(
            t.content_ids("query: Ignore cats").unwrap(),
            [id("▁query"), id(":"), id("▁ignore"), id("▁cats")]
        );
        assert_eq!(t.content_ids("zq").unwrap(), [id("▁z"), id("q")]);
        let w = t
            .windows(
                "hello",
                crate::tokenize::WindowSpec {
                    max_tokens: 8,
                    overlap: 0,
                },
            )
            .unwrap();
        assert_eq!(w, [vec![0, id("▁hello"), 2]]);
    }
}
