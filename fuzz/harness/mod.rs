//! The fuzz targets' bodies, one module per target, each `pub fn run(data: &[u8])`. The targets in
//! fuzz_targets/ call them under libFuzzer (`make check-deep`); tests/hostile.rs includes this folder too
//! and replays every saved input (fuzz/corpus/<target>/, fuzz/regressions/<target>/) through the same code in
//! the normal test command, with no fuzz build.
#![allow(dead_code)]

pub mod common;
pub mod host_buffer;
pub mod host_image;
pub mod manifest;
pub mod model_set;
pub mod pack;
pub mod params;
pub mod png;
pub mod tokenize;

/// A target's body.
pub type Run = fn(&[u8]);

/// Each target's name and body.
pub const TARGETS: [(&str, Run); 8] = [
    ("manifest", manifest::run),
    ("png", png::run),
    ("params", params::run),
    ("host_image", host_image::run),
    ("tokenize", tokenize::run),
    ("model_set", model_set::run),
    ("pack", pack::run),
    ("host_buffer", host_buffer::run),
];
