//! Arbitrary bytes as a whole config file: `load` must return Ok or Err, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod worker;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let s = s.to_owned();
        worker::run(move || {
            let _ = celgate_engine::load(&s, &Default::default());
        });
    }
});
