//! Arbitrary argv through the CLI's clap definition (`runtime/src/main.rs`, compiled in
//! here by build.rs; only parsing runs, nothing is dispatched).
#![no_main]
#![allow(dead_code, unused_imports)]

use libfuzzer_sys::fuzz_target;

mod cli {
    include!(concat!(env!("OUT_DIR"), "/rrun_main.rs"));

    pub fn parse(args: Vec<String>) {
        if let Ok(cli) = <Cli as clap::Parser>::try_parse_from(args) {
            let _ = cli.root;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // NUL-separated arguments after the program name.
    let text = String::from_utf8_lossy(data);
    let mut args = vec!["rrun".to_string()];
    args.extend(text.split('\0').map(str::to_string));
    cli::parse(args);
});
