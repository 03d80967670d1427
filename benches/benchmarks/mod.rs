pub mod model;
pub mod normalize;
