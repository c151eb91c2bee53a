//! Fuzz target `profile`: see `harness::profile`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::profile(data));
