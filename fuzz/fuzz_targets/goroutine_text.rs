//! Fuzz target `goroutine_text`: see `harness::goroutine_text`.
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::goroutine_text(data));
