//! BERT encoder (post-LayerNorm, GELU-erf, absolute positions) read top to bottom like the
//! Hugging Face module: Config, Embeddings, Attention, Layer, Encoder, Model, pooling.
//! It owns the architecture only: no tokenization, no batching policy, no heads.
//!
//! The elementwise and normalisation steps run through one of three implementations
//! ([`EncoderOps`]): tremble's fused ops (`crate::ops`, the default), candle's own separate ops
//! (the baseline they are benchmarked against), or the fused ops' reference twins made of plain
//! candle ops (differentiable: what training runs). All three compute the same function.

use candle_core::{DType, Module, Result, Tensor, D};

use crate::ops;
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

/// The subset of a Hugging Face `config.json` that a BERT encoder needs.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: u32,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}

impl BertConfig {
    /// Checks the invariants the forward pass relies on.
    ///
    /// # Errors
    /// When the head count does not divide the hidden size or the activation is unsupported.
    pub fn validate(&self) -> Result<()> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            candle_core::bail!(
                "bert config: hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "relu") {
            candle_core::bail!(
                "bert config: unsupported hidden_act {:?} (gelu, relu)",
                self.hidden_act
            );
        }
        Ok(())
    }

    /// Reads, parses and [validates](Self::validate) a Hugging Face `config.json`.
    ///
    /// # Errors
    /// [`crate::Error::ModelFile`] naming `path` when it is unreadable, malformed or invalid.
    pub fn read(path: &std::path::Path) -> crate::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| crate::Error::model_file(path, e.to_string()))?;
        Self::parse(&text, path)
    }

    /// Parses and [validates](Self::validate) the text of a `config.json`; `path` names it in
    /// errors.
    ///
    /// # Errors
    /// As [`Self::read`], for malformed or invalid text.
    pub fn parse(text: &str, path: &std::path::Path) -> crate::Result<Self> {
        let config: Self = serde_json::from_str(text)
            .map_err(|e| crate::Error::model_file(path, format!("malformed config: {e}")))?;
        config
            .validate()
            .map_err(|e| crate::Error::model_file(path, e.to_string()))?;
        Ok(config)
    }

    fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// Which implementation runs the encoder's residual adds, LayerNorms, bias + GELU, attention
/// softmax and pooling. The matmuls are candle's in all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderOps {
    /// tremble's fused ops ([`crate::ops`]): one pass each, CPU and CUDA. No gradients.
    #[default]
    Fused,
    /// candle's separate ops (bias add, `gelu_erf`, scale, mask bias add, candle-nn's
    /// LayerNorm and `softmax_last_dim`): the baseline of the fused ops' benchmark. candle's
    /// fused LayerNorm and softmax have no backward either.
    Candle,
    /// The fused ops' `*_reference` twins, made of plain candle ops: slower, differentiable.
    Reference,
}

/// Arithmetic of the encoder's matmuls on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout ([`ops::packed_linear`] on CPUs with AVX-512F, else candle's matmul).
    #[default]
    F32,
    /// The dense layers' products in bf16 with f32 sums ([`ops::packed_linear`]), about twice
    /// the multiply rate on CPUs with AVX512-BF16; attention, norms and activations stay f32.
    /// Only with [`EncoderOps::Fused`] on the CPU.
    Bf16,
    /// The dense layers in int8 ([`ops::int8_linear`]: weights per output column, activations
    /// per token, exact i32 sums), on CPUs with AVX512-VNNI; attention, norms and activations
    /// stay f32. Only with [`EncoderOps::Fused`] on the CPU.
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" | "fp32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "int8" | "i8" => Ok(Self::Int8),
            _ => Err(format!("precision {s:?}: expected f32, bf16 or int8")),
        }
    }
}

/// A layer's dense weights packed for [`ops::packed_linear`].
struct PackedLayer {
    qkv: ops::PackedWeights,
    attention_output: ops::PackedWeights,
    /// Without its bias when the fused bias + GELU adds it.
    intermediate: ops::PackedWeights,
    output: ops::PackedWeights,
}

/// A `[B, T]` attention mask (1 = token, 0 = padding) in the forms the implementations use.
pub struct AttentionMask {
    /// `[B, T]` u32.
    mask: Tensor,
    /// The additive bias of [`attention_bias`], `[B, 1, 1, T]`, for [`EncoderOps::Candle`].
    bias: Tensor,
}

impl AttentionMask {
    /// Prepares `mask` (`[B, T]`, any dtype, nonzero = token) for states of `dtype`.
    ///
    /// # Errors
    /// When `mask` is not 2-D.
    pub fn new(mask: &Tensor, dtype: DType) -> Result<Self> {
        Ok(Self {
            mask: mask.ne(0u32)?.to_dtype(DType::U32)?,
            bias: attention_bias(mask, dtype)?,
        })
    }
}

fn layer_norm_op(
    n: &LayerNorm,
    x: &Tensor,
    residual: Option<&Tensor>,
    ops: EncoderOps,
) -> Result<Tensor> {
    let Some(bias) = n.bias() else {
        candle_core::bail!("bert: LayerNorm without a bias");
    };
    match ops {
        EncoderOps::Fused => ops::add_layer_norm(x, residual, n.weight(), bias, n.eps()),
        EncoderOps::Reference => {
            ops::add_layer_norm_reference(x, residual, n.weight(), bias, n.eps())
        }
        EncoderOps::Candle => match residual {
            Some(r) => n.forward(&x.add(r)?),
            None => n.forward(x),
        },
    }
}

struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        Ok(Self {
            word: embedding(c.vocab_size, c.hidden_size, vb.pp("word_embeddings"))?,
            position: embedding(
                c.max_position_embeddings,
                c.hidden_size,
                vb.pp("position_embeddings"),
            )?,
            token_type: embedding(
                c.type_vocab_size,
                c.hidden_size,
                vb.pp("token_type_embeddings"),
            )?,
            norm: layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("LayerNorm"))?,
        })
    }

    fn forward(&self, ids: &Tensor, type_ids: &Tensor, ops: EncoderOps) -> Result<Tensor> {
        let (_, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let x = self
            .word
            .forward(ids)?
            .add(&self.token_type.forward(type_ids)?)?
            .broadcast_add(&self.position.forward(&positions)?)?;
        layer_norm_op(&self.norm, &x, None, ops)
    }
}

struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
    /// Q, K and V as one `[3H, H]` projection, for [`ops::self_attention`] on the CPU. A copy
    /// made at load, like the packed weights: layers under training run on
    /// [`EncoderOps::Reference`], which reads the separate projections.
    qkv: Linear,
}

impl Attention {
    fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        let h = c.hidden_size;
        let sv = vb.pp("self");
        let ov = vb.pp("output");
        let (query, key, value) = (
            linear(h, h, sv.pp("query"))?,
            linear(h, h, sv.pp("key"))?,
            linear(h, h, sv.pp("value"))?,
        );
        let qkv = fuse_linear(&[&query, &key, &value])?;
        Ok(Self {
            query,
            key,
            value,
            output: linear(h, h, ov.pp("dense"))?,
            norm: layer_norm(h, c.layer_norm_eps, ov.pp("LayerNorm"))?,
            heads: c.num_attention_heads,
            head_dim: c.head_dim(),
            qkv,
        })
    }

    /// `[B, T, H] → [B, heads, T, d]`
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        x.reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn forward(&self, x: &Tensor, mask: &AttentionMask, ops: EncoderOps) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        if ops == EncoderOps::Fused && x.device().is_cpu() && x.dtype() == DType::F32 {
            let ctx = ops::self_attention(&self.qkv.forward(x)?, &mask.mask, self.heads)?;
            return layer_norm_op(&self.norm, &self.output.forward(&ctx)?, Some(x), ops);
        }
        let q = self.split_heads(&self.query.forward(x)?)?;
        let k = self.split_heads(&self.key.forward(x)?)?;
        let v = self.split_heads(&self.value.forward(x)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = q.matmul(&k.t()?)?;
        let probs = match ops {
            EncoderOps::Fused => ops::masked_softmax(&scores, &mask.mask, scale as f32)?,
            EncoderOps::Reference => {
                ops::masked_softmax_reference(&scores, &mask.mask, scale as f32)?
            }
            EncoderOps::Candle => {
                candle_nn::ops::softmax_last_dim(&(scores * scale)?.broadcast_add(&mask.bias)?)?
            }
        };
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h))?;
        layer_norm_op(&self.norm, &self.output.forward(&ctx)?, Some(x), ops)
    }
}

/// One projection computing the outputs of `parts` side by side (weights stacked by rows).
fn fuse_linear(parts: &[&Linear]) -> Result<Linear> {
    let weights: Vec<&Tensor> = parts.iter().map(|l| l.weight()).collect();
    let biases = parts
        .iter()
        .map(|l| l.bias())
        .collect::<Option<Vec<&Tensor>>>();
    Ok(Linear::new(
        Tensor::cat(&weights, 0)?,
        biases.map(|b| Tensor::cat(&b, 0)).transpose()?,
    ))
}

/// One encoder layer (attention + feed-forward, post-LayerNorm); public so that training can
/// run and fine-tune the top layers over cached activations of the frozen lower ones.
pub struct BertLayer {
    attention: Attention,
    intermediate: Linear,
    output: Linear,
    norm: LayerNorm,
    relu: bool,
    ops: EncoderOps,
    packed: Option<PackedLayer>,
}

impl BertLayer {
    /// Loads layer weights from `vb` (the `encoder.layer.N` prefix).
    ///
    /// # Errors
    /// When a tensor is missing or misshapen.
    pub fn load(vb: VarBuilder, c: &BertConfig) -> Result<Self> {
        Ok(Self {
            attention: Attention::load(vb.pp("attention"), c)?,
            intermediate: linear(
                c.hidden_size,
                c.intermediate_size,
                vb.pp("intermediate").pp("dense"),
            )?,
            output: linear(
                c.intermediate_size,
                c.hidden_size,
                vb.pp("output").pp("dense"),
            )?,
            norm: layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                vb.pp("output").pp("LayerNorm"),
            )?,
            relu: c.hidden_act == "relu",
            ops: EncoderOps::default(),
            packed: None,
        })
    }

    /// Packs the dense weights for [`ops::packed_linear`] in `precision`.
    fn packed(mut self, precision: Precision) -> Result<Self> {
        let pack = |w: &Tensor, b: Option<&Tensor>| match precision {
            Precision::F32 => ops::PackedWeights::f32(w, b),
            Precision::Bf16 => ops::PackedWeights::bf16(w, b),
            Precision::Int8 => ops::PackedWeights::int8(w, b),
        };
        let linear = |l: &Linear| pack(l.weight(), l.bias());
        let bias_in_gelu = !self.relu && self.intermediate.bias().is_some();
        self.packed = Some(PackedLayer {
            qkv: linear(&self.attention.qkv)?,
            attention_output: linear(&self.attention.output)?,
            intermediate: match bias_in_gelu {
                true => pack(self.intermediate.weight(), None)?,
                false => linear(&self.intermediate)?,
            },
            output: linear(&self.output)?,
        });
        Ok(self)
    }

    /// The layer with its four dense steps on [`ops::packed_linear`].
    fn forward_packed(&self, x: &Tensor, mask: &AttentionMask, p: &PackedLayer) -> Result<Tensor> {
        let att = &self.attention;
        let ctx = ops::self_attention(&ops::packed_linear(x, &p.qkv)?, &mask.mask, att.heads)?;
        let out = ops::packed_linear(&ctx, &p.attention_output)?;
        let a = layer_norm_op(&att.norm, &out, Some(x), self.ops)?;
        let pre = ops::packed_linear(&a, &p.intermediate)?;
        let i = match (self.relu, self.intermediate.bias()) {
            (true, _) => pre.relu()?,
            // `pre` is the packed kernel's fresh output, held by nothing else.
            (false, Some(bias)) => ops::bias_gelu::bias_gelu_in_place(pre, bias)?,
            (false, None) => pre.gelu_erf()?,
        };
        let out = ops::packed_linear(&i, &p.output)?;
        layer_norm_op(&self.norm, &out, Some(&a), self.ops)
    }

    /// The same layer running on `ops` (training needs [`EncoderOps::Reference`]).
    pub fn with_ops(mut self, ops: EncoderOps) -> Self {
        self.ops = ops;
        if ops != EncoderOps::Fused {
            self.packed = None; // packed weights run on the fused ops only
        }
        self
    }

    /// `x [B, T, H]` under `mask`.
    ///
    /// # Errors
    /// On shape mismatch.
    pub fn forward(&self, x: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
        if let Some(p) = &self.packed {
            return self.forward_packed(x, mask, p);
        }
        let a = self.attention.forward(x, mask, self.ops)?;
        let i = match (self.relu, self.intermediate.bias()) {
            (true, _) => self.intermediate.forward(&a)?.relu()?,
            (false, Some(bias)) if self.ops != EncoderOps::Candle => {
                // The bias joins the activation, so the matmul goes without it.
                let w = self.intermediate.weight().clone();
                let pre = Linear::new(w, None).forward(&a)?;
                if self.ops == EncoderOps::Fused {
                    ops::bias_gelu(&pre, bias)?
                } else {
                    ops::bias_gelu_reference(&pre, bias)?
                }
            }
            (false, _) => self.intermediate.forward(&a)?.gelu_erf()?,
        };
        layer_norm_op(&self.norm, &self.output.forward(&i)?, Some(&a), self.ops)
    }
}

/// A BERT encoder without pooler: ids in, last hidden states out.
pub struct BertModel {
    embeddings: Embeddings,
    layers: Vec<BertLayer>,
    config: BertConfig,
    ops: EncoderOps,
}

impl BertModel {
    /// Builds the model from weights named as in Hugging Face's `BertModel`
    /// (`embeddings.*`, `encoder.layer.N.*`; a leading `bert.` is accepted too).
    ///
    /// # Errors
    /// When a tensor is missing or has the wrong shape; the message names it.
    pub fn load(vb: VarBuilder, config: &BertConfig) -> Result<Self> {
        config.validate()?;
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let embeddings = Embeddings::load(vb.pp("embeddings"), config)?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| BertLayer::load(vb.pp("encoder").pp("layer").pp(i), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            embeddings,
            layers,
            config: config.clone(),
            ops: EncoderOps::default(),
        })
    }

    /// The same model running on `ops` ([`EncoderOps::Fused`] unless changed).
    pub fn with_ops(mut self, ops: EncoderOps) -> Self {
        self.ops = ops;
        self.layers = self.layers.into_iter().map(|l| l.with_ops(ops)).collect();
        self
    }

    /// The same model with its dense layers on [`ops::packed_linear`] in `precision`:
    /// weights packed once, bias in the product. f32 packs only where it can run (the fused
    /// ops, f32 on a CPU with AVX-512F) and otherwise keeps candle's matmuls; a model only
    /// loaded keeps candle's matmuls too.
    ///
    /// # Errors
    /// For [`Precision::Bf16`] and [`Precision::Int8`] unless the model runs
    /// [`EncoderOps::Fused`] on the CPU in f32 and the CPU has AVX512-BF16 (see
    /// [`ops::bf16_supported`]) or AVX512-VNNI ([`ops::int8_supported`]).
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        let w = self.embeddings.word.embeddings();
        let runs = self.ops == EncoderOps::Fused && w.device().is_cpu() && w.dtype() == DType::F32;
        let pack = match precision {
            Precision::F32 => runs && ops::packed_f32_supported(),
            Precision::Bf16 | Precision::Int8 if !runs => candle_core::bail!(
                "{precision} precision needs the fused ops on the CPU in f32 (got {:?} on {:?} in {:?})",
                self.ops,
                w.device().location(),
                w.dtype()
            ),
            Precision::Bf16 if !ops::bf16_supported() => {
                candle_core::bail!("bf16 precision needs a CPU with AVX512-BF16; this one has none")
            }
            Precision::Int8 if !ops::int8_supported() => {
                candle_core::bail!("int8 precision needs a CPU with AVX512-VNNI; this one has none")
            }
            Precision::Bf16 | Precision::Int8 => true,
        };
        if pack {
            self.layers = self
                .layers
                .into_iter()
                .map(|l| l.packed(precision))
                .collect::<Result<_>>()?;
        }
        Ok(self)
    }

    /// The implementation the model runs on.
    pub fn ops(&self) -> EncoderOps {
        self.ops
    }

    /// Masked mean of `hidden` `[B, T, H]` over the tokens of `mask` `[B, T]` → `[B, H]`,
    /// through the model's [`EncoderOps`].
    ///
    /// # Errors
    /// On mismatched shapes.
    pub fn pool(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match self.ops {
            EncoderOps::Fused => ops::masked_mean_pool(hidden, mask),
            EncoderOps::Reference => ops::masked_mean_pool_reference(hidden, mask),
            EncoderOps::Candle => mean_pool(hidden, mask),
        }
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Last hidden states `[B, T, H]` for `ids` `[B, T]` (u32) with `mask` `[B, T]` (1 = token,
    /// 0 = padding). Token types are all zero (single-segment input).
    ///
    /// # Errors
    /// On shape mismatches or ids beyond the vocabulary/position table.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (_, t) = ids.dims2()?;
        if t > self.config.max_position_embeddings {
            candle_core::bail!(
                "bert forward: sequence length {t} exceeds max_position_embeddings {}",
                self.config.max_position_embeddings
            );
        }
        let hidden = self.embed(ids)?;
        self.forward_layers(hidden, mask, 0..self.layers.len())
    }

    /// Embedding output `[B, T, H]`.
    ///
    /// # Errors
    /// On ids outside the vocabulary.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let _span = tracing::trace_span!("bert.embeddings").entered();
        let type_ids = ids.zeros_like()?;
        self.embeddings.forward(ids, &type_ids, self.ops)
    }

    /// Runs the layers in `range` on `hidden`; lets training cache the frozen lower layers.
    ///
    /// # Errors
    /// On shape mismatches.
    pub fn forward_layers(
        &self,
        mut hidden: Tensor,
        mask: &Tensor,
        range: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        let mask = AttentionMask::new(mask, hidden.dtype())?;
        for (i, layer) in self.layers[range.clone()].iter().enumerate() {
            let _span = tracing::trace_span!("bert.layer", index = range.start + i).entered();
            hidden = layer.forward(&hidden, &mask)?;
        }
        Ok(hidden)
    }

    /// Number of encoder layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

/// Additive key-padding bias `[B, 1, 1, T]`: 0 for tokens, the dtype's minimum for padding,
/// as Hugging Face does, so that a fully padded row stays finite (uniform attention).
///
/// # Errors
/// When `mask` is not 2-D.
pub fn attention_bias(mask: &Tensor, dtype: DType) -> Result<Tensor> {
    let (b, t) = mask.dims2()?;
    let min = match dtype {
        DType::F16 => f64::from(half_min_f16()),
        DType::BF16 => -3.389_531_389_251_535e38,
        _ => f64::from(f32::MIN),
    };
    let keep = mask.to_dtype(DType::F32)?;
    let bias = ((keep.ones_like()? - keep)? * min)?;
    bias.to_dtype(dtype)?.reshape((b, 1, 1, t))
}

fn half_min_f16() -> f32 {
    -65504.0
}

/// Masked mean over the token axis: `[B, T, H]`, `[B, T]` → `[B, H]`, as sentence-transformers
/// pools (the token count is clamped at 1e-9 so an all-padding row yields zeros, not NaN).
///
/// # Errors
/// On mismatched shapes.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
    let summed = hidden.broadcast_mul(&m)?.sum(1)?;
    let counts = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    summed.broadcast_div(&counts)
}
