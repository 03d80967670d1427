//! The one integration-test binary (candle links once). Modules by concern.

mod cli;
mod common;
mod detector;
mod e5;
mod evasion;
mod gpu;
mod hostile;
mod lm;
mod normalize;
mod parity;
mod perturb;
mod route;
mod sensitivity;
mod train;
