//! How qbench times things: interleaved sampling under a time budget ([`measure`]), the
//! statistics of the samples ([`stats`]), and the thread pools a measurement runs on
//! ([`pools`]).

pub mod measure;
pub mod pools;
pub mod stats;
