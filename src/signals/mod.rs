//! Signals: each one file, each turning model outputs or text into evidence for the verdict.

pub mod classifier;
pub mod dos;
pub mod lm_surprise;
pub mod sensitivity;

/// `Σ w·(x − center)/scale`: the linear part of the standardized logistic models stored in
/// manifests (the perturbation fusion, the LM-surprise rule).
pub(crate) fn standardized_dot(x: &[f32], center: &[f32], scale: &[f32], weights: &[f32]) -> f32 {
    x.iter()
        .zip(center)
        .zip(scale)
        .zip(weights)
        .map(|(((&v, &c), &s), &w)| w * (v - c) / s)
        .sum()
}
