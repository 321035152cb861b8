#![no_main]
use libfuzzer_sys::fuzz_target;

// Placeholder: the owning crate's helper writes the real target.
fuzz_target!(|data: &[u8]| {
    let _ = data;
});
