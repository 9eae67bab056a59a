//! Arbitrary argv through the CLI's clap definition (`runtime/src/cli/args.rs`, compiled in
//! here as a module; only parsing runs, nothing is dispatched).
#![no_main]
#![allow(dead_code, unused_imports)]

use libfuzzer_sys::fuzz_target;

#[path = "../../runtime/src/cli/args.rs"]
mod args;

fuzz_target!(|data: &[u8]| {
    // NUL-separated arguments after the program name.
    let text = String::from_utf8_lossy(data);
    let mut args = vec!["rrun".to_string()];
    args.extend(text.split('\0').map(str::to_string));
    if let Ok(cli) = <args::Cli as clap::Parser>::try_parse_from(args) {
        let _ = cli.root;
    }
});
