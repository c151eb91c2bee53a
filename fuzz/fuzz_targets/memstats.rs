//! Fuzz target `memstats`: see `harness::memstats`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::memstats(data));
