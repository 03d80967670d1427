//! The classifier head over pooled encoder output: an attack logit (calibrated by Platt
//! scaling into a probability) and attack-category logits. Weights come from the detector
//! model directory (`head.*` tensors); the encoder is not this module's business.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, Linear, VarBuilder};

use crate::manifest::Calibration;

/// `pooled [N, H]` → attack logit `[N]` and category logits `[N, C]`.
pub struct ClassifierHead {
    hidden: Option<Linear>,
    attack: Linear,
    category: Linear,
}

impl ClassifierHead {
    /// Loads `head.attack.*`, `head.category.*` and, when `hidden > 0`, `head.hidden.*`
    /// (a GELU layer of that width in front of both outputs).
    ///
    /// # Errors
    /// When tensors are missing or of the wrong shape.
    pub fn load(
        vb: VarBuilder,
        hidden_size: usize,
        categories: usize,
        hidden: usize,
    ) -> Result<Self> {
        let vb = vb.pp("head");
        let (hidden, width) = if hidden > 0 {
            (Some(linear(hidden_size, hidden, vb.pp("hidden"))?), hidden)
        } else {
            (None, hidden_size)
        };
        Ok(Self {
            hidden,
            attack: linear(width, 1, vb.pp("attack"))?,
            category: linear(width, categories, vb.pp("category"))?,
        })
    }

    /// Raw logits for pooled embeddings.
    ///
    /// # Errors
    /// On shape mismatch.
    pub fn forward(&self, pooled: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = match &self.hidden {
            Some(h) => h.forward(pooled)?.gelu_erf()?,
            None => pooled.clone(),
        };
        let attack = self.attack.forward(&x)?.squeeze(D::Minus1)?;
        let category = self.category.forward(&x)?;
        Ok((attack, category))
    }
}

/// Calibrated attack probabilities and category distributions, on the host.
pub struct HeadOutput {
    pub attack: Vec<f32>,
    pub categories: Vec<Vec<f32>>,
}

/// Applies calibration and softmax and copies the results to the host.
///
/// # Errors
/// On shape mismatch or device copy failure.
pub fn probabilities(
    attack_logits: &Tensor,
    category_logits: &Tensor,
    cal: Calibration,
) -> Result<HeadOutput> {
    let attack = attack_logits
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    let attack = attack.iter().map(|&l| sigmoid(cal.a * l + cal.b)).collect();
    let cats =
        candle_nn::ops::softmax_last_dim(&category_logits.to_dtype(candle_core::DType::F32)?)?;
    Ok(HeadOutput {
        attack,
        categories: cats.to_vec2::<f32>()?,
    })
}

/// Numerically safe logistic function.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::sigmoid;

    #[test]
    fn sigmoid_is_stable_at_extremes() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!(sigmoid(-1000.0) >= 0.0 && sigmoid(-1000.0) < 1e-30);
        assert_eq!(sigmoid(1000.0), 1.0);
    }
}
