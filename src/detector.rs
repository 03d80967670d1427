//! `Detector` and its builder: the one entry point users call. Loads a detector model directory
//! (verifying every file), tokenizes into windows, runs length-bucketed batches through the
//! encoder and head, and assembles one `Verdict` per input.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::manifest::{locate_base, DetectorManifest, Thresholds};
use crate::models::base::BaseEncoder;
use crate::models::bert::{BertModel, Precision};
use crate::normalize::{normalize, whole_reading, ViewKind, DEFAULT_MAX_VIEWS};
use crate::route::{route, Route, ScoreMap};
use crate::signals::classifier::{probabilities, ClassifierHead, HeadOutput};
use crate::signals::lm_surprise::{self, LmRule, LmSurprise};
use crate::signals::sensitivity::{fusion_inputs, Fusion, PerturbPolicy, PerturbSettings};
use crate::tokenize::TextTokenizer;
use crate::verdict::{
    Category, ClassifierEvidence, DosEvidence, NormalizeEvidence, SensitivityEvidence, Signals,
    Verdict,
};

pub use crate::signals::dos::DEFAULT_MAX_BYTES;
use crate::weights::{load_safetensors, verify_all};

/// Name of the model shipped in `models/`.
pub const DEFAULT_MODEL: &str = "tremble-minilm-v1";

/// Where the decision threshold comes from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Threshold {
    /// The model's threshold for ~0.1% false positives on its calibration split.
    Strict,
    /// ~1% false positives (the default).
    #[default]
    Balanced,
    /// ~5% false positives.
    Permissive,
    /// An explicit probability in [0, 1].
    Value(f32),
}

impl FromStr for Threshold {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "strict" => Ok(Threshold::Strict),
            "balanced" => Ok(Threshold::Balanced),
            "permissive" => Ok(Threshold::Permissive),
            v => match v.parse::<f32>() {
                Ok(x) if (0.0..=1.0).contains(&x) => Ok(Threshold::Value(x)),
                _ => Err(Error::Config(format!(
                    "threshold {s:?}: expected strict, balanced, permissive or a number in [0, 1]"
                ))),
            },
        }
    }
}

/// Builds a [`Detector`]; every setting has a default.
#[derive(Debug, Clone)]
pub struct DetectorBuilder {
    model_dir: Option<PathBuf>,
    base_dir: Option<PathBuf>,
    device: DeviceChoice,
    threshold: Threshold,
    batch_size: usize,
    max_windows: usize,
    normalize: bool,
    max_views: usize,
    max_bytes: usize,
    perturb: PerturbSettings,
    lm: bool,
    lm_dir: Option<PathBuf>,
    route: bool,
    precision: Precision,
}

impl Default for DetectorBuilder {
    fn default() -> Self {
        Self {
            model_dir: None,
            base_dir: None,
            device: DeviceChoice::Auto,
            threshold: Threshold::Balanced,
            batch_size: 32,
            max_windows: 64,
            normalize: true,
            max_views: DEFAULT_MAX_VIEWS,
            max_bytes: DEFAULT_MAX_BYTES,
            perturb: PerturbSettings::default(),
            lm: false,
            lm_dir: None,
            route: true,
            precision: Precision::F32,
        }
    }
}

impl DetectorBuilder {
    /// Turns on the LM-surprise signal (off by default: it costs a small causal LM's forward
    /// pass per input). Needs the model's `lm_surprise` rule and the LM files that
    /// `scripts/setup.sh` fetches.
    pub fn lm(mut self, on: bool) -> Self {
        self.lm = on;
        self
    }

    /// The LM's directory, instead of the one the model's rule names.
    pub fn lm_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.lm_dir = Some(dir.into());
        self
    }

    /// The detector model directory (with `tremble.json`); default: [`default_model_dir`].
    pub fn model_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.model_dir = Some(dir.into());
        self
    }

    /// Overrides where the base encoder's files are.
    pub fn base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// The device to run on (default [`DeviceChoice::Auto`]).
    pub fn device(mut self, device: DeviceChoice) -> Self {
        self.device = device;
        self
    }

    /// The decision threshold (default [`Threshold::Balanced`]). Presets resolve to the model's
    /// fused thresholds when the perturbation check can run and the model has a fusion (see
    /// [`Detector::threshold_for`]); an explicit value is compared with the verdict's score,
    /// which is the fused one for inputs the check ran on.
    pub fn threshold(mut self, threshold: Threshold) -> Self {
        self.threshold = threshold;
        self
    }

    /// Windows per forward pass (default 32).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }

    /// Most windows scored per input (default 64, ≈ 12k tokens); the verdict reports when
    /// an input had more.
    pub fn max_windows(mut self, n: usize) -> Self {
        self.max_windows = n;
        self
    }

    /// Whether to score normalized views (decoded hidden channels and encodings, folded
    /// look-alikes, guessed inverses) besides the raw text (default on). Off, obfuscated
    /// attacks go unseen and no obfuscation evidence is reported.
    pub fn normalize(mut self, on: bool) -> Self {
        self.normalize = on;
        self
    }

    /// Most extra views scored per input (default 4); each costs one more forward pass over
    /// that input, and only inputs whose triggers fire have any.
    pub fn max_views(mut self, n: usize) -> Self {
        self.max_views = n;
        self
    }

    /// Bytes of an input that are scored (default 256 KiB); a longer input is cut there and
    /// flagged as resource abuse.
    pub fn max_bytes(mut self, n: usize) -> Self {
        self.max_bytes = n;
        self
    }

    /// Which inputs get the perturbation-sensitivity check (default [`PerturbPolicy::Auto`]).
    pub fn perturb(mut self, policy: PerturbPolicy) -> Self {
        self.perturb.policy = policy;
        self
    }

    /// Perturbed copies per checked input (default 8; the model's fusion was fitted with the
    /// count its manifest names, so another count shifts the fused score's calibration).
    pub fn perturb_copies(mut self, k: usize) -> Self {
        self.perturb.copies = k;
        self
    }

    /// Edit rate of each copy (default 0.1; see the note on [`Self::perturb_copies`]).
    pub fn perturb_rate(mut self, q: f64) -> Self {
        self.perturb.rate = q;
        self
    }

    /// Seed of the perturbed copies (default fixed, so verdicts repeat run to run).
    pub fn perturb_seed(mut self, seed: u64) -> Self {
        self.perturb.seed = seed;
        self
    }

    /// Whether text that is not English goes to the model's multilingual model, when its
    /// manifest names one (default on; see [`crate::route`]).
    #[must_use]
    pub fn route(mut self, on: bool) -> Self {
        self.route = on;
        self
    }

    /// Arithmetic of the encoder's matmuls (default f32). [`Precision::Bf16`] roughly
    /// halves the CPU's encoder time on CPUs with AVX512-BF16, with its accuracy cost on dev
    /// in the README; `build` refuses it on other CPUs and on GPUs.
    #[must_use]
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Loads and verifies the model.
    ///
    /// # Errors
    /// [`Error::ModelFile`]/[`Error::Checksum`] naming the file at fault, [`Error::Device`]
    /// when the device cannot be opened, [`Error::Config`] for invalid settings.
    pub fn build(self) -> Result<Detector> {
        if self.batch_size == 0 || self.max_windows == 0 || self.max_bytes == 0 {
            return Err(Error::Config(
                "batch size, max windows and max bytes must be at least 1".into(),
            ));
        }
        let model_dir = match self.model_dir.clone() {
            Some(d) => d,
            None => default_model_dir().ok_or_else(|| {
                Error::Config(format!(
                    "no model directory given and {DEFAULT_MODEL} not found \
                     (pass --model DIR or set TREMBLE_MODEL_DIR)"
                ))
            })?,
        };
        self.perturb.validate()?;
        let manifest = DetectorManifest::read(&model_dir)?;
        verify_all(&model_dir, &manifest.files)?;
        let manifest_path = model_dir.join(crate::manifest::MANIFEST_FILE);
        if let Some(f) = &manifest.fusion {
            f.validate()
                .map_err(|e| Error::model_file(&manifest_path, e.to_string()))?;
        }
        let base_dir = locate_base(&model_dir, &manifest.base, self.base_dir.as_deref())?;
        verify_all(&base_dir, &manifest.base.files)?;
        let format = manifest
            .base
            .format()
            .map_err(|e| Error::model_file(&manifest_path, e))?;

        let device = self.device.open()?;
        let base = BaseEncoder::load(&base_dir, format, &device)?;
        let config = base.config;
        if manifest.window.max_tokens > config.max_position_embeddings {
            return Err(Error::model_file(
                manifest_path,
                format!(
                    "window of {} tokens exceeds the encoder's {} positions",
                    manifest.window.max_tokens, config.max_position_embeddings
                ),
            ));
        }
        let tokenizer = base.tokenizer.with_prefix(&manifest.base.input_prefix)?;
        tokenizer
            .check_spec(manifest.window)
            .map_err(|e| Error::model_file(&manifest_path, e.to_string()))?;

        let lm = match self.lm {
            true => Some(load_lm(
                &model_dir,
                &manifest,
                self.lm_dir.as_deref(),
                &device,
            )?),
            false => None,
        };
        let weights_path = base.weights_path;
        let mut tensors = base.tensors;
        for name in manifest
            .files
            .keys()
            .filter(|n| n.ends_with(".safetensors"))
        {
            tensors.extend(load_safetensors(
                &model_dir.join(name),
                DType::F32,
                &device,
            )?);
        }
        let head_hidden = match tensors.get("head.hidden.weight") {
            Some(t) => t.dim(0)?,
            None => 0,
        };
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
        let encoder = BertModel::load(vb.clone(), &config).map_err(|e| {
            Error::model_file(
                &weights_path,
                format!("does not fit {}: {e}", format.config_source()),
            )
        })?;
        let encoder = encoder
            .with_precision(self.precision)
            .map_err(|e| Error::Config(e.to_string()))?;
        let head = ClassifierHead::load(
            vb,
            config.hidden_size,
            manifest.categories.len(),
            head_hidden,
        )
        .map_err(|e| {
            Error::model_file(
                &model_dir,
                format!("classifier head missing or malformed: {e}"),
            )
        })?;
        let fusion = manifest.fusion.clone();
        // Routed scores land on the scale this model's verdicts use under the builder's policy.
        let scale = presets(fusion.as_ref(), manifest.thresholds, self.perturb.policy);
        let multilingual = match (&manifest.route, self.route) {
            (Some(spec), true) => Some(Box::new(self.multilingual(
                &model_dir,
                &spec.multilingual,
                scale,
            )?)),
            _ => None,
        };
        Ok(Detector {
            encoder,
            head,
            tokenizer,
            device,
            manifest,
            threshold: self.threshold,
            fusion,
            perturb: self.perturb,
            lm,
            batch_size: self.batch_size,
            max_windows: self.max_windows,
            max_views: if self.normalize { self.max_views } else { 0 },
            normalize: self.normalize,
            max_bytes: self.max_bytes,
            multilingual,
            score_map: None,
        })
    }

    /// The routed multilingual model, with this builder's settings, its scores mapped onto
    /// the English model's `thresholds` (so one threshold reads both models' scores).
    fn multilingual(
        &self,
        model_dir: &Path,
        dir: &Path,
        thresholds: Thresholds,
    ) -> Result<Detector> {
        let dir = model_dir.join(dir);
        let mut sub = self.clone();
        sub.model_dir = Some(dir.clone());
        sub.base_dir = None;
        sub.lm = false;
        sub.route = false;
        let mut d = sub.build().map_err(|e| {
            Error::Config(format!(
                "the multilingual model this model routes to ({}) cannot be loaded: {e} \
                 (scripts/setup.sh fetches its base; --no-route, or `route(false)`, scores \
                 every input with the English model)",
                dir.display()
            ))
        })?;
        let map = ScoreMap::new(d.manifest.thresholds, thresholds).map_err(|e| {
            Error::model_file(
                dir.join(crate::manifest::MANIFEST_FILE),
                format!("cannot be routed to: {e}"),
            )
        })?;
        d.score_map = Some(map);
        d.manifest.thresholds = thresholds;
        Ok(d)
    }
}

/// The preset thresholds verdicts use under `policy`: the fused detector's when the check can
/// run and the model has a fusion, else the classifier's.
fn presets(fusion: Option<&Fusion>, classifier: Thresholds, policy: PerturbPolicy) -> Thresholds {
    match (fusion, policy) {
        (Some(f), PerturbPolicy::Auto | PerturbPolicy::Always) => f.thresholds,
        _ => classifier,
    }
}

/// The LM-surprise signal of a model: its rule from the manifest and the LM it names.
fn load_lm(
    model_dir: &Path,
    manifest: &DetectorManifest,
    dir: Option<&Path>,
    device: &Device,
) -> Result<(LmSurprise, LmRule)> {
    let rule = manifest.lm_surprise.clone().ok_or_else(|| {
        Error::Config(format!(
            "model {} has no lm_surprise rule for --lm: fit one with `tremble fit-lm --data \
             <its training data>`",
            manifest.name
        ))
    })?;
    rule.validate().map_err(|e| {
        Error::model_file(
            model_dir.join(crate::manifest::MANIFEST_FILE),
            e.to_string(),
        )
    })?;
    let dir = dir.map_or_else(|| model_dir.join(&rule.lm.dir), Path::to_path_buf);
    let lm = LmSurprise::load(&dir, &rule.lm.files, rule.max_tokens, device)?;
    Ok((lm, rule))
}

/// The default model directory: `$TREMBLE_MODEL_DIR`, else `models/tremble-minilm-v1` under
/// the working directory, else under the source tree this binary was built from.
pub fn default_model_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TREMBLE_MODEL_DIR") {
        return Some(PathBuf::from(dir));
    }
    let rel = Path::new("models").join(DEFAULT_MODEL);
    [
        rel.clone(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel),
    ]
    .into_iter()
    .find(|d| d.join(crate::manifest::MANIFEST_FILE).is_file())
}

/// Flags prompt injections, jailbreaks and adversarial inputs. `Send + Sync`: share one
/// instance across threads.
pub struct Detector {
    encoder: BertModel,
    head: ClassifierHead,
    tokenizer: TextTokenizer,
    device: Device,
    manifest: DetectorManifest,
    threshold: Threshold,
    fusion: Option<Fusion>,
    perturb: PerturbSettings,
    lm: Option<(LmSurprise, LmRule)>,
    batch_size: usize,
    max_windows: usize,
    normalize: bool,
    max_views: usize,
    max_bytes: usize,
    /// Where text that is not English goes ([`crate::route`]).
    multilingual: Option<Box<Detector>>,
    /// This model's calibrated scores onto the scale of the model that routes to it.
    score_map: Option<ScoreMap>,
}

/// One input prepared for scoring: the texts to score (raw first, then views) and the evidence
/// gathered before the model ran.
struct Prepared<'a> {
    texts: Vec<(ViewKind, Cow<'a, str>)>,
    normalize: Option<NormalizeEvidence>,
    dos: Option<DosEvidence>,
}

/// Tokens and windows of one scored text.
struct Framed {
    tokens: usize,
    total: usize,
    windows: Vec<Vec<u32>>,
    /// Byte span of each content token in the text.
    offsets: Vec<(usize, usize)>,
}

/// Which scored text of an input decided: `per_text` holds (score, top window, offset of the
/// text's first window) per text, `best` indexes it.
struct Decided {
    best: usize,
    per_text: Vec<(f32, usize, usize)>,
    obfuscated: bool,
}

/// The outcome of the sensitivity check on one input.
#[derive(Clone)]
struct Check {
    score: f32,
    fused: bool,
    evidence: SensitivityEvidence,
}

impl Detector {
    /// Starts a builder with defaults.
    pub fn builder() -> DetectorBuilder {
        DetectorBuilder::default()
    }

    /// The threshold in use with the configured perturbation policy.
    pub fn threshold(&self) -> f32 {
        self.threshold_for(self.perturb.policy)
    }

    /// The threshold under `policy`: a preset resolves to the fused detector's threshold when
    /// the check can run and the model has a fusion, else to the classifier's.
    pub fn threshold_for(&self, policy: PerturbPolicy) -> f32 {
        let presets = presets(self.fusion.as_ref(), self.manifest.thresholds, policy);
        match self.threshold {
            Threshold::Strict => presets.strict,
            Threshold::Balanced => presets.balanced,
            Threshold::Permissive => presets.permissive,
            Threshold::Value(v) => v,
        }
    }

    /// The perturbation-sensitivity settings.
    pub fn perturb_settings(&self) -> PerturbSettings {
        self.perturb
    }

    /// The base scores the `auto` policy checks: between the classifier's permissive and
    /// strict thresholds, where a few points of score decide.
    pub fn uncertainty_band(&self) -> (f32, f32) {
        let t = self.manifest.thresholds;
        (t.permissive.min(t.strict), t.strict.max(t.permissive))
    }

    /// The loaded model's manifest.
    pub fn manifest(&self) -> &DetectorManifest {
        &self.manifest
    }

    /// The device the encoder runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The tokenizer of the base encoder, with the model's input prefix (its windows are the
    /// ones scored).
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The encoder.
    pub fn encoder(&self) -> &BertModel {
        &self.encoder
    }

    /// Scores one input.
    ///
    /// # Errors
    /// As [`Self::score_batch`].
    pub fn score(&self, text: &str) -> Result<Verdict> {
        let mut v = self.score_batch(&[text])?;
        v.pop()
            .ok_or_else(|| Error::Config("empty batch result".into()))
    }

    /// Scores inputs together; verdicts come back in input order.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if the tokenizer fails on an input, [`Error::Tensor`] on a
    /// device failure.
    pub fn score_batch(&self, texts: &[&str]) -> Result<Vec<Verdict>> {
        self.score_batch_with(texts, self.perturb.policy)
    }

    /// [`Self::score_batch`] under another perturbation policy than the configured one (for
    /// side-by-side measurements; the threshold follows, see [`Self::threshold_for`]).
    ///
    /// # Errors
    /// As [`Self::score_batch`].
    pub fn score_batch_with(&self, texts: &[&str], policy: PerturbPolicy) -> Result<Vec<Verdict>> {
        self.score_batch_signals(texts, policy, true)
    }

    /// Whether the LM-surprise signal is loaded (see [`DetectorBuilder::lm`]).
    pub fn lm_enabled(&self) -> bool {
        self.lm.is_some()
    }

    /// [`Self::score_batch_with`], with the LM-surprise signal skipped when `lm` is false
    /// (for side-by-side measurements; it never runs when not loaded).
    ///
    /// # Errors
    /// As [`Self::score_batch`].
    pub fn score_batch_signals(
        &self,
        texts: &[&str],
        policy: PerturbPolicy,
        lm: bool,
    ) -> Result<Vec<Verdict>> {
        let _span = tracing::debug_span!("score_batch", inputs = texts.len()).entered();
        let mut verdicts = match &self.multilingual {
            None => self.score_core(texts, policy)?,
            Some(ml) => self.score_routed(ml, texts, policy)?,
        };
        if let (true, Some((model, rule))) = (lm, &self.lm) {
            let features = model.features(texts)?;
            for (v, f) in verdicts.iter_mut().zip(features) {
                lm_surprise::join(v, f, rule.probability(&f));
            }
        }
        Ok(verdicts)
    }

    /// Whether text that is not English goes to a multilingual model.
    pub fn routes(&self) -> bool {
        self.multilingual.is_some()
    }

    /// Scores English inputs here and the others on the multilingual model; verdicts come
    /// back in input order, each naming the model that read it.
    fn score_routed(
        &self,
        ml: &Detector,
        texts: &[&str],
        policy: PerturbPolicy,
    ) -> Result<Vec<Verdict>> {
        let routes: Vec<Route> = texts.par_iter().map(|t| route(t)).collect();
        let pick = |r: Route| -> Vec<&str> {
            texts
                .iter()
                .zip(&routes)
                .filter(|(_, &x)| x == r)
                .map(|(t, _)| *t)
                .collect()
        };
        let mut english = self.score_core(&pick(Route::English), policy)?.into_iter();
        let mut other = ml
            .score_core(&pick(Route::Multilingual), policy)?
            .into_iter();
        routes
            .iter()
            .map(|r| {
                let (v, model) = match r {
                    Route::English => (english.next(), &self.manifest.name),
                    Route::Multilingual => (other.next(), &ml.manifest.name),
                };
                let mut v = v.ok_or_else(|| Error::Config("a routed verdict is missing".into()))?;
                v.signals.classifier.model = Some(model.clone());
                Ok(v)
            })
            .collect()
    }

    /// Every signal but the LM, on this model alone.
    fn score_core(&self, texts: &[&str], policy: PerturbPolicy) -> Result<Vec<Verdict>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let prepared: Vec<Prepared<'_>> = {
            let _s = tracing::debug_span!("normalize").entered();
            texts.par_iter().map(|t| self.prepare(t)).collect()
        };
        let spec = self.manifest.window;
        let framed: Vec<Vec<Framed>> = {
            let _s = tracing::debug_span!("tokenize").entered();
            prepared
                .par_iter()
                .map(|p| {
                    p.texts
                        .iter()
                        .map(|(_, t)| {
                            let (ids, offsets) = self.tokenizer.content_ids_with_offsets(t)?;
                            let mut windows = self.tokenizer.frame(&ids, spec);
                            let total = windows.len();
                            windows.truncate(self.max_windows);
                            Ok(Framed {
                                tokens: ids.len(),
                                total,
                                windows,
                                offsets,
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<_>>()?
        };
        let flat: Vec<&[u32]> = framed
            .iter()
            .flatten()
            .flat_map(|f| f.windows.iter().map(Vec::as_slice))
            .collect();
        let out = self.classify_windows(&flat)?;

        let mut decided = Vec::with_capacity(texts.len());
        let mut offset = 0;
        for (prep, frames) in prepared.iter().zip(&framed) {
            // (score, top window, offset of the text's first window) per scored text
            let mut per_text = Vec::with_capacity(frames.len());
            for f in frames {
                let n = f.windows.len();
                let (top, score) = out.attack[offset..offset + n]
                    .iter()
                    .copied()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .unwrap_or((0, 0.0));
                per_text.push((score, top, offset));
                offset += n;
            }
            // A reading of the whole text replaces the raw text (see `whole_reading`, which
            // training uses too): raw obfuscated text only adds the classifier's reaction to
            // odd glyphs, which flags harmless text that was merely encoded or restyled.
            // Payload-only views (tags, selectors) compete with it. The first whole reading
            // wins ties; otherwise the earliest text does.
            let whole = whole_reading(prep.texts.iter().map(|(k, _)| *k));
            let mut best = whole.unwrap_or(0);
            for (i, t) in per_text
                .iter()
                .enumerate()
                .skip(usize::from(whole.is_some()))
            {
                if t.0 > per_text[best].0 {
                    best = i;
                }
            }
            decided.push(Decided {
                best,
                per_text,
                obfuscated: prep.normalize.as_ref().is_some_and(|n| !n.fired.is_empty()),
            });
        }

        let checks = self.sensitivity_checks(policy, &prepared, &framed, &decided, &out)?;

        let threshold = self.threshold_for(policy);
        let mut verdicts = Vec::with_capacity(texts.len());
        for (((prep, frames), d), check) in
            prepared.into_iter().zip(&framed).zip(&decided).zip(checks)
        {
            let (score, top, first) = d.per_text[d.best];
            let cats = out
                .categories
                .get(first + top)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let f = &frames[d.best];
            let final_score = check
                .as_ref()
                .and_then(|c| c.fused.then_some(c.score))
                .unwrap_or(score);
            let mut v = self.verdict(
                final_score,
                threshold,
                cats,
                f.tokens,
                f.total,
                f.windows.len(),
                top,
            );
            v.signals.classifier.score = score;
            v.signals.sensitivity = check.map(|c| c.evidence);
            let mut normalize = prep.normalize;
            if let Some(n) = normalize.as_mut() {
                n.raw_score = d.per_text[0].0;
                n.decided_by = prep.texts[d.best].0.name().to_string();
                n.views = prep.texts[1..]
                    .iter()
                    .zip(&d.per_text[1..])
                    .map(|((kind, _), s)| (kind.name().to_string(), s.0))
                    .collect();
            }
            v.signals.normalize = normalize;
            if let Some(d) = prep.dos {
                if d.abuse && !v.flagged {
                    v.flagged = true;
                    v.category = Category::ResourceAbuse;
                }
                v.signals.dos = Some(d);
            }
            verdicts.push(v);
        }
        Ok(verdicts)
    }

    /// Runs the perturbation-sensitivity check on the inputs `policy` selects: K perturbed
    /// copies of the window that decided each one, all scored in one batched pass, reduced
    /// by the fused sensitivity op, and fused with the base score when the model has a fusion.
    fn sensitivity_checks(
        &self,
        policy: PerturbPolicy,
        prepared: &[Prepared<'_>],
        framed: &[Vec<Framed>],
        decided: &[Decided],
        out: &HeadOutput,
    ) -> Result<Vec<Option<Check>>> {
        let mut checks: Vec<Option<Check>> = vec![None; decided.len()];
        if policy == PerturbPolicy::Never {
            return Ok(checks);
        }
        let _s = tracing::debug_span!("sensitivity").entered();
        let band = self.uncertainty_band();
        // Window geometry of the content alone: the input prefix takes its tokens from each.
        let content = self.tokenizer.content_spec(self.manifest.window);
        let body = content.max_tokens - 2;
        let k = self.perturb.copies;
        // (input, reason) of each checked input, and its copies' windows in order
        let selected: Vec<(usize, &'static str)> = decided
            .iter()
            .enumerate()
            .filter_map(|(i, d)| {
                let (score, _, _) = d.per_text[d.best];
                let frames = &framed[i][d.best];
                if frames.tokens == 0 || !policy.selects(score, d.obfuscated, band) {
                    return None;
                }
                let reason = match policy {
                    PerturbPolicy::Always => "always",
                    _ if d.obfuscated => "obfuscation",
                    _ => "band",
                };
                Some((i, reason))
            })
            .collect();
        if selected.is_empty() {
            return Ok(checks);
        }
        let copies: Vec<Vec<Vec<u32>>> = selected
            .par_iter()
            .map(|&(i, _)| {
                let d = &decided[i];
                let f = &framed[i][d.best];
                let (_, top, _) = d.per_text[d.best];
                let starts = content.starts(f.tokens);
                let s = starts.get(top).copied().unwrap_or(0);
                let e = f.tokens.min(s + body);
                let text = &prepared[i].texts[d.best].1;
                // Offsets are byte spans; a tokenizer that reports them otherwise falls back to
                // the whole text rather than panic on a split character.
                let span = text.get(f.offsets[s].0..f.offsets[e - 1].1).unwrap_or(text);
                self.perturb
                    .copies_of(span)
                    .iter()
                    .map(|c| {
                        let mut ids = self.tokenizer.content_ids(c)?;
                        ids.truncate(body);
                        Ok(self.tokenizer.frame(&ids, self.manifest.window).remove(0))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let flat: Vec<&[u32]> = copies.iter().flatten().map(Vec::as_slice).collect();
        let copy_out = self.classify_windows(&flat)?;

        let labels = 1 + self.manifest.categories.len();
        let mut probs = Vec::with_capacity(selected.len() * (1 + k) * labels);
        let mut push = |a: f32, cats: &[f32]| {
            probs.push(1.0 - a);
            probs.extend((0..labels - 1).map(|c| a * cats.get(c).copied().unwrap_or(0.0)));
        };
        for (n, &(i, _)) in selected.iter().enumerate() {
            let (score, top, first) = decided[i].per_text[decided[i].best];
            push(score, &out.categories[first + top]);
            for j in n * k..(n + 1) * k {
                push(copy_out.attack[j], &copy_out.categories[j]);
            }
        }
        let probs = Tensor::from_vec(probs, (selected.len(), 1 + k, labels), &Device::Cpu)?;
        let feats =
            crate::ops::sensitivity(&probs, self.manifest.thresholds.balanced)?.to_vec2::<f32>()?;
        for ((i, reason), f) in selected.into_iter().zip(feats) {
            let d = &decided[i];
            let base = d.per_text[d.best].0;
            let fused = self
                .fusion
                .as_ref()
                .map(|m| m.apply(&fusion_inputs(base, &f, d.obfuscated)));
            checks[i] = Some(Check {
                score: fused.unwrap_or(base),
                fused: fused.is_some(),
                evidence: SensitivityEvidence {
                    reason: reason.into(),
                    copies: k,
                    base_score: base,
                    mean: f[0],
                    std: f[1],
                    flip_rate: f[2],
                    max_abs_delta: f[3],
                    js_mean: f[4],
                    fused: fused.is_some(),
                },
            });
        }
        Ok(checks)
    }

    /// Applies the byte cap and repetition bounds, then the normalizer.
    fn prepare<'a>(&self, text: &'a str) -> Prepared<'a> {
        let (scored, dos) = crate::signals::dos::check(text, self.max_bytes);
        let mut texts = vec![(ViewKind::Raw, Cow::Borrowed(scored))];
        let mut evidence = None;
        if self.normalize {
            let n = normalize(scored, self.max_views);
            if !n.views.is_empty() || n.signals.any() {
                texts.extend(n.views.into_iter().map(|v| (v.kind, Cow::Owned(v.text))));
                evidence = Some(NormalizeEvidence {
                    decided_by: "raw".into(),
                    raw_score: 0.0,
                    views: Default::default(),
                    fired: n.signals.fired().into_iter().map(String::from).collect(),
                    counts: n.signals,
                });
            }
        }
        Prepared {
            texts,
            normalize: evidence,
            dos,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn verdict(
        &self,
        score: f32,
        threshold: f32,
        cats: &[f32],
        tokens: usize,
        windows: usize,
        scored: usize,
        top: usize,
    ) -> Verdict {
        let flagged = score >= threshold;
        let categories = self
            .manifest
            .categories
            .iter()
            .cloned()
            .zip(cats.iter().copied())
            .collect();
        let category = if flagged {
            cats.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .and_then(|(i, _)| Category::from_label(&self.manifest.categories[i]))
                .unwrap_or(Category::Injection)
        } else {
            Category::Benign
        };
        Verdict {
            score,
            flagged,
            category,
            threshold,
            signals: Signals {
                classifier: ClassifierEvidence {
                    score,
                    categories,
                    tokens,
                    windows,
                    windows_scored: scored,
                    top_window: top,
                    model: None,
                },
                normalize: None,
                dos: None,
                sensitivity: None,
                lm_surprise: None,
            },
        }
    }

    /// Calibrated head outputs for framed windows, in the order given. Windows are sorted by
    /// length and batched so each batch pads only to its own longest window.
    ///
    /// # Errors
    /// [`Error::Tensor`] on a device failure.
    pub fn classify_windows(&self, windows: &[&[u32]]) -> Result<HeadOutput> {
        let mut attack = vec![0.0; windows.len()];
        let mut categories = vec![Vec::new(); windows.len()];
        for (idx, pooled) in self.pooled_batches(windows)? {
            let (a, c) = self.head.forward(&pooled)?;
            let out = probabilities(&a, &c, self.manifest.calibration)?;
            for (k, i) in idx.into_iter().enumerate() {
                attack[i] = self
                    .score_map
                    .as_ref()
                    .map_or(out.attack[k], |m| m.apply(out.attack[k]));
                categories[i] = out.categories[k].clone();
            }
        }
        Ok(HeadOutput { attack, categories })
    }

    /// Mean-pooled encoder output per length bucket: `(window indices, [n, H] tensor)`.
    ///
    /// # Errors
    /// [`Error::Tensor`] on a device failure.
    pub fn pooled_batches(&self, windows: &[&[u32]]) -> Result<Vec<(Vec<usize>, Tensor)>> {
        let mut order: Vec<usize> = (0..windows.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(windows[i].len()));
        order
            .chunks(self.batch_size)
            .map(|idx| {
                let batch: Vec<&[u32]> = idx.iter().map(|&i| windows[i]).collect();
                let pooled = self.encode_padded(&batch)?;
                Ok((idx.to_vec(), pooled))
            })
            .collect()
    }

    fn encode_padded(&self, batch: &[&[u32]]) -> Result<Tensor> {
        let _span = tracing::debug_span!("forward", windows = batch.len()).entered();
        let (ids, mask) = pad_batch(batch, self.tokenizer.pad_id(), &self.device)?;
        let run = || -> Result<Tensor> {
            let hidden = self.encoder.forward(&ids, &mask)?;
            Ok(self.encoder.pool(&hidden, &mask)?)
        };
        let tokens = ids.elem_count();
        if !self.device.is_cpu() || tokens > SMALL_FORWARD_TOKENS {
            return run();
        }
        // A small forward runs whole on one of rayon's workers: its ~60 parallel steps then
        // split work between workers that are awake, instead of each step handing its work
        // from this thread to the pool and sleeping until the pool is done (1 x 128: 3-5%
        // faster). Not for large batches: glibc serves a worker thread from a secondary
        // arena, whose heaps are too small to keep 25 MB buffers, so they would go back to
        // `mmap` on every step (8 x 512: 10-15% slower).
        rayon::scope(|_| run())
    }
}

/// Largest padded batch (windows x tokens) that [`Detector`] runs inside one rayon task.
const SMALL_FORWARD_TOKENS: usize = 1024;

/// Right-pads `batch` to its longest sequence: ids `[B, T]` (u32) and mask `[B, T]` (u32).
///
/// # Errors
/// [`Error::Tensor`] when the tensors cannot be created on `device`.
pub fn pad_batch(batch: &[&[u32]], pad: u32, device: &Device) -> Result<(Tensor, Tensor)> {
    let t = batch.iter().map(|w| w.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(batch.len() * t);
    let mut mask = Vec::with_capacity(batch.len() * t);
    for w in batch {
        ids.extend_from_slice(w);
        ids.extend(std::iter::repeat_n(pad, t - w.len()));
        mask.extend(std::iter::repeat_n(1u32, w.len()));
        mask.extend(std::iter::repeat_n(0u32, t - w.len()));
    }
    let shape = (batch.len(), t);
    Ok((
        Tensor::from_vec(ids, shape, device)?,
        Tensor::from_vec(mask, shape, device)?,
    ))
}
