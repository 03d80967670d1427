//! Model architectures, one flat file each, and the loader of a base encoder directory.

pub mod base;
pub mod bert;
pub mod e5;
pub mod llama;
