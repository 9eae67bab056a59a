//! The small string parsers of the CLI: signals (`kill`), container ids, sizes (`update`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = rrun::spec::parse_signal(&text);
    let _ = rrun::validate_id(&text);
    let _ = rrun::parse_size(&text);
});
