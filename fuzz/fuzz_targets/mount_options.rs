//! Mount option lists (`mounts[].options`) → `rrun::parse_mount_options`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let options: Vec<String> = text.split(',').map(str::to_string).collect();
    let _ = rrun::parse_mount_options(&options);
});
