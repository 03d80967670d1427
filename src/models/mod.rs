//! Model architectures, one flat file each.

pub mod bert;
pub mod e5;
pub mod llama;
