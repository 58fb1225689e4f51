//! cargo-fuzz target: fuzz/harness/pack.rs says what it feeds and what it checks.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::pack::run(data));
