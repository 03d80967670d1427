//! Fine-tuning the top encoder layers and the classifier head over cached activations.
//! A row's attack logit is the max over its windows (multiple-instance learning: an injection
//! sits in one window of a long document, the detector takes the max too). Loss: weighted
//! binary cross-entropy on that logit plus a category cross-entropy on the deciding window.
//! Deterministic given the seed; checkpoints every few hundred steps and resumes from them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::models::bert::{mean_pool, AttentionMask, BertConfig, BertLayer, EncoderOps};
use crate::rng::Rng;
use crate::signals::classifier::ClassifierHead;
use crate::train::features::WindowFeatures;

/// Hyper-parameters of one training run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct TrainConfig {
    pub seed: u64,
    /// Top encoder layers fine-tuned (0 = head only).
    pub train_layers: usize,
    /// Width of a GELU hidden layer in the head (0 = linear head).
    pub head_hidden: usize,
    pub epochs: f64,
    pub batch_rows: usize,
    pub lr_head: f64,
    pub lr_layers: f64,
    pub weight_decay: f64,
    /// Weight of the category loss relative to the attack loss.
    pub category_weight: f64,
    pub max_steps: Option<usize>,
    pub max_minutes: Option<f64>,
    pub checkpoint_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            train_layers: 1,
            head_hidden: 0,
            epochs: 2.0,
            batch_rows: 32,
            lr_head: 1e-3,
            lr_layers: 5e-5,
            weight_decay: 0.01,
            category_weight: 0.3,
            max_steps: None,
            max_minutes: None,
            checkpoint_every: 200,
        }
    }
}

/// The label of one training row.
#[derive(Debug, Clone, Copy)]
pub struct RowLabel {
    pub row: u32,
    pub attack: bool,
    /// Index into the category list (attack rows only).
    pub category: u32,
    pub weight: f32,
}

/// Progress of a run, reported after every step.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub step: usize,
    pub total: usize,
    pub loss: f32,
}

/// The trainable top of the network.
pub struct TrainModel {
    pub varmap: VarMap,
    layers: Vec<BertLayer>,
    head: ClassifierHead,
    first_layer: usize,
}

impl TrainModel {
    /// Builds the top `cfg.train_layers` layers from `base` weights and a fresh head whose
    /// weights come from our seeded RNG (candle's initializers are not seeded).
    ///
    /// # Errors
    /// When base tensors are missing.
    pub fn new(
        base: &HashMap<String, Tensor>,
        bert: &BertConfig,
        categories: usize,
        cfg: &TrainConfig,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let first_layer = bert.num_hidden_layers - cfg.train_layers;
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::Config("poisoned var map".into()))?;
            for l in first_layer..bert.num_hidden_layers {
                let prefix = format!("encoder.layer.{l}.");
                for (name, t) in base.iter().filter(|(n, _)| n.starts_with(&prefix)) {
                    data.insert(name.clone(), Var::from_tensor(&t.to_dtype(DType::F32)?)?);
                }
            }
            let mut rng = Rng::new(cfg.seed ^ 0x4EAD);
            let h = bert.hidden_size;
            let width = if cfg.head_hidden > 0 {
                cfg.head_hidden
            } else {
                h
            };
            let mut init = |name: &str, out: usize, inp: usize| -> Result<()> {
                let bound = (1.0 / inp as f64).sqrt();
                let w: Vec<f32> = (0..out * inp)
                    .map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32)
                    .collect();
                data.insert(
                    format!("head.{name}.weight"),
                    Var::from_tensor(&Tensor::from_vec(w, (out, inp), &Device::Cpu)?)?,
                );
                data.insert(
                    format!("head.{name}.bias"),
                    Var::from_tensor(&Tensor::zeros(out, DType::F32, &Device::Cpu)?)?,
                );
                Ok(())
            };
            if cfg.head_hidden > 0 {
                init("hidden", cfg.head_hidden, h)?;
            }
            init("attack", 1, width)?;
            init("category", categories, width)?;
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let layers = (first_layer..bert.num_hidden_layers)
            .map(|l| {
                // Training needs gradients through every step of the layer.
                BertLayer::load(vb.pp("encoder").pp("layer").pp(l), bert)
                    .map(|layer| layer.with_ops(EncoderOps::Reference))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let head = ClassifierHead::load(vb, bert.hidden_size, categories, cfg.head_hidden)?;
        Ok(Self {
            varmap,
            layers,
            head,
            first_layer,
        })
    }

    /// The encoder layer the trainable part starts at (= the cached feature layer).
    pub fn first_layer(&self) -> usize {
        self.first_layer
    }

    /// Attack logits `[n]` and category logits `[n, C]` of `windows`.
    ///
    /// # Errors
    /// On tensor failures.
    pub fn window_logits(
        &self,
        feats: &WindowFeatures,
        windows: &[usize],
    ) -> Result<(Tensor, Tensor)> {
        let (mut x, mask) = feats.batch(windows, &Device::Cpu)?;
        if !self.layers.is_empty() {
            let mask = AttentionMask::new(&mask, DType::F32)?;
            for layer in &self.layers {
                x = layer.forward(&x, &mask)?;
            }
        }
        let pooled = mean_pool(&x, &mask)?;
        Ok(self.head.forward(&pooled)?)
    }

    /// Raw attack logit per row (max over its windows) and the category logits of the
    /// deciding window, without gradients, in batches.
    ///
    /// # Errors
    /// On tensor failures.
    pub fn row_logits(
        &self,
        feats: &WindowFeatures,
        rows: &[u32],
        by_row: &HashMap<u32, Vec<usize>>,
    ) -> Result<Vec<(f32, Vec<f32>)>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(64) {
            let windows: Vec<usize> = chunk
                .iter()
                .flat_map(|r| by_row[r].iter().copied())
                .collect();
            let (a, c) = self.window_logits(feats, &windows)?;
            let a = a.to_vec1::<f32>()?;
            let c = c.to_vec2::<f32>()?;
            let mut k = 0;
            for r in chunk {
                let n = by_row[r].len();
                let (top, &best) = a[k..k + n]
                    .iter()
                    .enumerate()
                    .max_by(|x, y| x.1.total_cmp(y.1))
                    .unwrap_or((0, &0.0));
                out.push((best, c[k + top].clone()));
                k += n;
            }
        }
        Ok(out)
    }

    /// Rounds every trainable weight through f16, so that what calibration sees is exactly
    /// what the exported (f16) model computes.
    ///
    /// # Errors
    /// On tensor failures.
    pub fn round_to_f16(&self) -> Result<()> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("poisoned var map".into()))?;
        for (name, var) in data.iter() {
            if name.starts_with("encoder.") {
                var.set(&var.as_tensor().to_dtype(DType::F16)?.to_dtype(DType::F32)?)?;
            }
        }
        Ok(())
    }
}

/// Trains `model` on `labels`, reporting each step; stops at the epoch budget, `max_steps` or
/// `max_minutes`, whichever comes first. Resumes from `checkpoint_dir` when it holds a
/// checkpoint of the same configuration.
///
/// # Errors
/// On tensor or checkpoint I/O failures.
pub fn train(
    model: &TrainModel,
    feats: &WindowFeatures,
    labels: &[RowLabel],
    cfg: &TrainConfig,
    checkpoint_dir: &Path,
    data_key: &str,
    report: &mut dyn FnMut(StepReport),
) -> Result<usize> {
    let by_row = feats.by_row();
    let labels: Vec<RowLabel> = labels
        .iter()
        .copied()
        .filter(|l| by_row.contains_key(&l.row))
        .collect();
    let per_epoch = labels.len().div_ceil(cfg.batch_rows.max(1));
    let mut total = (cfg.epochs * per_epoch as f64).ceil() as usize;
    if let Some(m) = cfg.max_steps {
        total = total.min(m);
    }
    let (head_vars, layer_vars) = split_vars(&model.varmap)?;
    let adamw = |vars, lr| {
        AdamW::new(
            vars,
            ParamsAdamW {
                lr,
                weight_decay: cfg.weight_decay,
                ..Default::default()
            },
        )
    };
    let mut opt_head = adamw(head_vars, cfg.lr_head)?;
    let mut opt_layers = adamw(layer_vars, cfg.lr_layers)?;

    let ckpt = Checkpoint::new(checkpoint_dir, cfg, data_key, &labels);
    let start_step = ckpt.resume(&model.varmap)?;
    let started = Instant::now();
    let warmup = (total / 20).max(1);
    let mut step = start_step;
    while step < total {
        if cfg
            .max_minutes
            .is_some_and(|m| started.elapsed().as_secs_f64() > m * 60.0)
        {
            break;
        }
        let epoch = step / per_epoch;
        let mut order: Vec<usize> = (0..labels.len()).collect();
        Rng::new(cfg.seed.wrapping_add(epoch as u64 * 0x9E37)).shuffle(&mut order);
        let k = step % per_epoch;
        let batch: Vec<RowLabel> = order
            [k * cfg.batch_rows..((k + 1) * cfg.batch_rows).min(order.len())]
            .iter()
            .map(|&i| labels[i])
            .collect();
        let scale = if step < warmup {
            (step + 1) as f64 / warmup as f64
        } else {
            (total - step) as f64 / (total - warmup).max(1) as f64
        };
        opt_head.set_learning_rate(cfg.lr_head * scale);
        opt_layers.set_learning_rate(cfg.lr_layers * scale);
        let loss = batch_loss(model, feats, &by_row, &batch, cfg.category_weight)?;
        let grads = loss.backward()?;
        opt_head.step(&grads)?;
        opt_layers.step(&grads)?;
        step += 1;
        report(StepReport {
            step,
            total,
            loss: loss.to_scalar::<f32>()?,
        });
        if step % cfg.checkpoint_every == 0 || step == total {
            ckpt.save(&model.varmap, step)?;
        }
    }
    if step > start_step {
        ckpt.save(&model.varmap, step)?;
    }
    Ok(step)
}

fn split_vars(varmap: &VarMap) -> Result<(Vec<Var>, Vec<Var>)> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("poisoned var map".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let (head, layers): (Vec<&String>, Vec<&String>) =
        names.into_iter().partition(|n| n.starts_with("head."));
    Ok((
        head.iter().map(|n| data[*n].clone()).collect(),
        layers.iter().map(|n| data[*n].clone()).collect(),
    ))
}

fn batch_loss(
    model: &TrainModel,
    feats: &WindowFeatures,
    by_row: &HashMap<u32, Vec<usize>>,
    batch: &[RowLabel],
    cat_w: f64,
) -> Result<Tensor> {
    let windows: Vec<usize> = batch
        .iter()
        .flat_map(|l| by_row[&l.row].iter().copied())
        .collect();
    let (a, c) = model.window_logits(feats, &windows)?;
    let host = a.to_vec1::<f32>()?;
    let (mut row_logits, mut top_windows, mut k) = (Vec::new(), Vec::new(), 0usize);
    for l in batch {
        let n = by_row[&l.row].len();
        row_logits.push(a.narrow(0, k, n)?.max(0)?);
        let top = host[k..k + n]
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map_or(0, |(i, _)| i);
        if l.attack {
            top_windows.push(((k + top) as u32, l.category));
        }
        k += n;
    }
    let z = Tensor::stack(&row_logits, 0)?;
    let y = Tensor::new(
        batch
            .iter()
            .map(|l| if l.attack { 1f32 } else { 0.0 })
            .collect::<Vec<_>>(),
        &Device::Cpu,
    )?;
    let w = Tensor::new(
        batch.iter().map(|l| l.weight).collect::<Vec<_>>(),
        &Device::Cpu,
    )?;
    // BCE with logits, stable: max(z, 0) − z·y + log(1 + e^(−|z|)).
    let bce = ((z.relu()? - (&z * &y)?)? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    let mut loss = ((bce * &w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64)?;
    if !top_windows.is_empty() && cat_w > 0.0 {
        let idx = Tensor::new(
            top_windows.iter().map(|t| t.0).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        let target = Tensor::new(
            top_windows.iter().map(|t| t.1).collect::<Vec<_>>(),
            &Device::Cpu,
        )?;
        let ce = candle_nn::loss::cross_entropy(&c.index_select(&idx, 0)?, &target)?;
        loss = (loss + (ce * cat_w)?)?;
    }
    Ok(loss)
}

/// Checkpoint files of a run: the trainable weights and the step they were saved at.
struct Checkpoint {
    weights: PathBuf,
    state: PathBuf,
    config: String,
}

impl Checkpoint {
    /// A checkpoint resumes only a run of the same configuration on the same windows and
    /// labels; the step bounds may differ (a run stopped by them is meant to be continued).
    fn new(dir: &Path, cfg: &TrainConfig, data_key: &str, labels: &[RowLabel]) -> Self {
        let mut c = cfg.clone();
        c.max_steps = None;
        c.max_minutes = None;
        let mut h = crate::rng::hash_str(0, data_key);
        for l in labels {
            h = crate::rng::mix(
                h ^ (u64::from(l.row) << 32 | u64::from(l.category) << 1 | u64::from(l.attack)),
            );
            h = crate::rng::mix(h ^ u64::from(l.weight.to_bits()));
        }
        let config = serde_json::to_string(&c).unwrap_or_default();
        Self {
            weights: dir.join("checkpoint.safetensors"),
            state: dir.join("checkpoint.json"),
            config: format!("{config} data {h:016x}"),
        }
    }

    fn resume(&self, varmap: &VarMap) -> Result<usize> {
        let Ok(text) = std::fs::read_to_string(&self.state) else {
            return Ok(0);
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return Ok(0);
        };
        if v["config"].as_str() != Some(self.config.as_str()) || !self.weights.is_file() {
            tracing::warn!(
                "checkpoint {} is of another configuration; starting afresh",
                self.state.display()
            );
            return Ok(0);
        }
        let mut vm = varmap.clone();
        vm.load(&self.weights)
            .map_err(|e| Error::model_file(&self.weights, e.to_string()))?;
        let step = v["step"].as_u64().unwrap_or(0) as usize;
        tracing::info!(step, "resuming from checkpoint");
        Ok(step)
    }

    fn save(&self, varmap: &VarMap, step: usize) -> Result<()> {
        if let Some(dir) = self.weights.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
        varmap.save(&self.weights)?;
        let state = serde_json::json!({"step": step, "config": self.config});
        std::fs::write(&self.state, state.to_string())
            .map_err(|e| Error::io(format!("cannot write {}", self.state.display()), e))
    }
}
