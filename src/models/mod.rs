//! Model architectures, one flat file each.

pub mod bert;
pub mod llama;
