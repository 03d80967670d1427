//! The one integration-test binary (candle links once). Modules by concern.

mod cli;
mod common;
mod detector;
mod parity;
mod train;
