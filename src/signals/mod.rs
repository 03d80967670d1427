//! Signals: each one file, each turning model outputs or text into evidence for the verdict.

pub mod classifier;
pub mod dos;
pub mod lm_surprise;
pub mod sensitivity;
