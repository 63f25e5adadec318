//! See fuzz/checks.rs for what each input must satisfy.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::review(data));
