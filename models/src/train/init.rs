//! Seeded initialisation: the workspace's generator ([`crate::rng`]) under the name the
//! trainer and its tests have always used.

pub use crate::rng::{he_normal, Rng};
