//! Calibration of raw attack logits into probabilities (Platt scaling, fitted by Newton's
//! method with Platt's smoothed targets) and the preset thresholds at fixed false-positive
//! rates, both on the calibration split held out from training.

use crate::eval::metrics::threshold_at_fpr;
use crate::manifest::{Calibration, Thresholds};
use crate::signals::classifier::sigmoid;

/// Fits `p = sigmoid(a·z + b)` to logits `z` and labels `y` by minimizing the log-loss.
pub fn fit_platt(z: &[f32], y: &[bool]) -> Calibration {
    let pos = y.iter().filter(|&&t| t).count() as f64;
    let neg = y.len() as f64 - pos;
    // Platt's smoothed targets keep the fit finite on separable data.
    let (tp, tn) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-9, 0.0, 1e-9);
        for (&zi, &yi) in z.iter().zip(y) {
            let zi = f64::from(zi);
            let p = f64::from(sigmoid((a * zi + b) as f32));
            let t = if yi { tp } else { tn };
            let d = p - t;
            let w = (p * (1.0 - p)).max(1e-12);
            ga += d * zi;
            gb += d;
            haa += w * zi * zi;
            hab += w * zi;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs() + db.abs() < 1e-10 {
            break;
        }
    }
    Calibration {
        a: a as f32,
        b: b as f32,
    }
}

/// Applies a calibration to raw logits.
pub fn calibrated(z: &[f32], cal: Calibration) -> Vec<f32> {
    z.iter().map(|&l| sigmoid(cal.a * l + cal.b)).collect()
}

/// Thresholds for 0.1% / 1% / 5% false positives on benign calibration scores.
pub fn preset_thresholds(benign_scores: &[f32]) -> Thresholds {
    Thresholds {
        strict: threshold_at_fpr(benign_scores, 0.001),
        balanced: threshold_at_fpr(benign_scores, 0.01),
        permissive: threshold_at_fpr(benign_scores, 0.05),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_logistic() {
        // Labels drawn deterministically from p = sigmoid(2z − 1).
        let mut rng = crate::rng::Rng::new(3);
        let z: Vec<f32> = (0..20_000)
            .map(|_| (rng.next_f64() * 8.0 - 4.0) as f32)
            .collect();
        let y: Vec<bool> = z
            .iter()
            .map(|&v| rng.next_f64() < f64::from(sigmoid(2.0 * v - 1.0)))
            .collect();
        let c = fit_platt(&z, &y);
        assert!((c.a - 2.0).abs() < 0.1 && (c.b + 1.0).abs() < 0.1, "{c:?}");
    }

    #[test]
    fn thresholds_are_ordered() {
        let benign: Vec<f32> = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let t = preset_thresholds(&benign);
        assert!(
            t.strict >= t.balanced && t.balanced >= t.permissive,
            "{t:?}"
        );
        let fp = |th: f32| benign.iter().filter(|&&s| s >= th).count();
        assert!(fp(t.balanced) <= 10 && fp(t.permissive) <= 50);
    }
}
