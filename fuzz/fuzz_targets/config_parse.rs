//! The config parser on arbitrary text: it must answer (a config or errors that name
//! a key path), never panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Err(e) = berry::config::parse(text, &env) {
        assert!(!e.errors.is_empty(), "an error without a message");
    }
});
