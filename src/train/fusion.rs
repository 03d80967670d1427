//! Fitting the fusion of the base score with the perturbation-sensitivity features: an
//! L2-regularized logistic regression on standardized inputs (`crate::train::logistic`),
//! fitted on the calibration split's checked rows, and the preset thresholds of the fused
//! detector (checked rows score the fusion, the rest keep their base score) on that split's
//! benign rows.

use crate::error::{Error, Result};
use crate::eval::metrics::{roc_auc, Scored};
use crate::signals::sensitivity::{Fusion, FUSION_INPUTS, FUSION_INPUT_NAMES};
use crate::train::calibrate::preset_thresholds;
use crate::train::logistic::Standardized;

/// One calibration row as the detector scored it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FusionRow {
    /// Score without the check.
    pub base: f32,
    /// Fusion inputs when the check ran on the row.
    pub checked: Option<[f32; FUSION_INPUTS]>,
    pub attack: bool,
}

/// A fitted fusion and how it did on the rows it was fitted on.
#[derive(Debug, Clone)]
pub struct FusionFit {
    pub fusion: Fusion,
    /// Rows the check ran on (the rows the logistic model was fitted on, extra rows included).
    pub checked: usize,
    pub checked_attacks: usize,
    /// ROC AUC of the base score and of the fused detector on all rows (in-sample for the
    /// fusion: a sanity check, not a measurement).
    pub base_auc: Option<f64>,
    pub fused_auc: Option<f64>,
}

/// Fits the fusion; `l2` is the ridge penalty on the standardized weights. The logistic
/// model is fitted on the checked rows of `rows` and `extra` (e.g. adversarial rewrites of
/// calibration rows and their benign controls); the preset thresholds and the AUCs come from
/// `rows` alone, so the presets keep their meaning on unmodified text.
///
/// # Errors
/// [`Error::Config`] when the checked rows lack either class or the benign rows are empty.
pub fn fit(
    rows: &[FusionRow],
    extra: &[FusionRow],
    copies: usize,
    rate: f64,
    l2: f64,
) -> Result<FusionFit> {
    let checked: Vec<(&[f32; FUSION_INPUTS], bool)> = rows
        .iter()
        .chain(extra)
        .filter_map(|r| r.checked.as_ref().map(|x| (x, r.attack)))
        .collect();
    let attacks = checked.iter().filter(|c| c.1).count();
    if attacks == 0 || attacks == checked.len() {
        return Err(Error::Config(format!(
            "fusion needs checked rows of both classes; {attacks} of {} checked rows are attacks \
             (use more calibration rows or --perturb always)",
            checked.len()
        )));
    }
    let x: Vec<Vec<f64>> = checked
        .iter()
        .map(|(x, _)| x.iter().map(|&v| f64::from(v)).collect())
        .collect();
    let y: Vec<f64> = checked.iter().map(|c| f64::from(u8::from(c.1))).collect();
    let fitted = Standardized::fit(&x, &y, l2);
    let (center, scale, w) = (&fitted.center, &fitted.scale, &fitted.weights);
    let fusion = Fusion {
        inputs: FUSION_INPUT_NAMES.iter().map(|s| s.to_string()).collect(),
        center: center.iter().map(|&v| v as f32).collect(),
        scale: scale.iter().map(|&v| v as f32).collect(),
        weights: w.iter().map(|&v| v as f32).collect(),
        bias: fitted.bias as f32,
        copies,
        rate,
        thresholds: Default::default(),
    };
    let combined: Vec<f32> = rows
        .iter()
        .map(|r| r.checked.as_ref().map_or(r.base, |x| fusion.apply(x)))
        .collect();
    let benign: Vec<f32> = rows
        .iter()
        .zip(&combined)
        .filter(|(r, _)| !r.attack)
        .map(|(_, &s)| s)
        .collect();
    if benign.is_empty() {
        return Err(Error::Config("fusion needs benign calibration rows".into()));
    }
    let auc = |scores: &mut dyn Iterator<Item = f32>| {
        let scored: Vec<Scored> = scores
            .zip(rows)
            .map(|(s, r)| Scored {
                score: s,
                attack: r.attack,
                ..Scored::default()
            })
            .collect();
        roc_auc(&scored)
    };
    Ok(FusionFit {
        fusion: Fusion {
            thresholds: preset_thresholds(&benign),
            ..fusion
        },
        checked: checked.len(),
        checked_attacks: attacks,
        base_auc: auc(&mut rows.iter().map(|r| r.base)),
        fused_auc: auc(&mut combined.iter().copied()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn row(rng: &mut Rng, attack: bool, informative: usize) -> FusionRow {
        let mut x = [0f32; FUSION_INPUTS];
        for (j, v) in x.iter_mut().enumerate() {
            let noise = rng.next_f64() as f32 - 0.5;
            *v = if j == informative && attack {
                1.0 + noise
            } else {
                noise
            };
        }
        FusionRow {
            base: 0.5,
            checked: Some(x),
            attack,
        }
    }

    #[test]
    fn fit_finds_the_informative_input_and_beats_the_base() {
        let mut rng = Rng::new(3);
        let rows: Vec<FusionRow> = (0..400).map(|i| row(&mut rng, i % 2 == 0, 3)).collect();
        let fit = fit(&rows, &[], 8, 0.1, 1.0).unwrap();
        let w = &fit.fusion.weights;
        let top = (0..FUSION_INPUTS)
            .max_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()))
            .unwrap();
        assert_eq!(top, 3, "{w:?}");
        assert!(w[3] > 0.0);
        assert_eq!(fit.base_auc, Some(0.5));
        assert!(fit.fused_auc.unwrap() > 0.9, "{:?}", fit.fused_auc);
        fit.fusion.validate().unwrap();
        let t = fit.fusion.thresholds;
        assert!(t.strict >= t.balanced && t.balanced >= t.permissive);
    }

    #[test]
    fn extra_rows_shape_the_weights_but_not_the_thresholds() {
        let mut rng = Rng::new(6);
        // Calibration rows carry no signal; the extra rows' attacks differ on input 2.
        let rows: Vec<FusionRow> = (0..200).map(|i| row(&mut rng, i % 2 == 0, 99)).collect();
        let extra: Vec<FusionRow> = (0..200).map(|i| row(&mut rng, i % 2 == 0, 2)).collect();
        let plain = fit(&rows, &[], 8, 0.1, 1.0).unwrap();
        let with = fit(&rows, &extra, 8, 0.1, 1.0).unwrap();
        assert_eq!(with.checked, 400);
        assert!(with.fusion.weights[2] > 1.0, "{:?}", with.fusion.weights);
        assert!(
            plain.fusion.weights[2].abs() < 0.5,
            "{:?}",
            plain.fusion.weights
        );
        assert_eq!(
            with.base_auc, plain.base_auc,
            "AUCs come from the calibration rows"
        );
        // Thresholds are quantiles of the calibration benign rows under each fusion.
        let benign: Vec<f32> = rows
            .iter()
            .filter(|r| !r.attack)
            .map(|r| with.fusion.apply(r.checked.as_ref().unwrap()))
            .collect();
        assert_eq!(
            with.fusion.thresholds,
            crate::train::calibrate::preset_thresholds(&benign)
        );
    }

    #[test]
    fn fit_refuses_one_class() {
        let mut rng = Rng::new(4);
        let rows: Vec<FusionRow> = (0..20).map(|_| row(&mut rng, true, 0)).collect();
        let e = fit(&rows, &[], 8, 0.1, 1.0).unwrap_err();
        assert!(e.to_string().contains("both classes"), "{e}");
    }

    #[test]
    fn unchecked_rows_keep_their_base_score_in_the_thresholds() {
        let mut rng = Rng::new(5);
        let mut rows: Vec<FusionRow> = (0..100).map(|i| row(&mut rng, i % 2 == 0, 1)).collect();
        // 900 unchecked benign rows at base 0.999 dominate the benign tail.
        rows.extend((0..900).map(|_| FusionRow {
            base: 0.999,
            checked: None,
            attack: false,
        }));
        let fit = fit(&rows, &[], 8, 0.1, 1.0).unwrap();
        assert!((fit.fusion.thresholds.permissive - 0.999).abs() < 1e-6);
    }
}
