//! Offline evaluation of a detector on labelled data: metrics over scored examples, the
//! reports built from them (`metrics`, `report`: pure, no I/O), and the runner that scores a
//! labelled file with a detector (`runner`).

pub mod attack;
pub mod compare;
pub mod lm;
pub mod metrics;
mod render;
pub mod report;
pub mod rewrites;
pub mod routes;
pub mod runner;
