pub mod detector;
pub mod lm;
pub mod model;
pub mod normalize;
pub mod route;
