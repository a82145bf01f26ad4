//! Arbitrary bytes as a whole config file: `load` must return Ok or Err, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = celgate_engine::load(s, &Default::default());
    }
});
