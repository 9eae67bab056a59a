//! config.json bytes → `rrun::spec::load_bundle` (parse, the unknown-capability retry,
//! validation) in a fixed bundle, and straight `serde_json` + `validate` as well.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn bundle() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rrun-fuzz-bundle-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = bundle();
    std::fs::write(dir.join("config.json"), data).unwrap();
    let _ = rrun::spec::load_bundle(dir);
    if let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) {
        let _ = rrun::spec::validate(&spec, dir);
        let _ = rrun::spec::rootfs_path(&spec, dir);
    }
});
