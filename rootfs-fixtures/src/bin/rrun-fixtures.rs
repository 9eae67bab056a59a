//! `rrun-fixtures bundle DIR [-- ARGS...]`: make an OCI bundle (busybox rootfs plus a
//! runc-like default config.json, `terminal: false`) in DIR.
//!
//! `rrun-fixtures spec`: print the default config.json.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use rootfs_fixtures::{default_spec, Bundle};

const USAGE: &str = "usage:
  rrun-fixtures bundle DIR [-- ARGS...]   make a busybox bundle in DIR (process.args = ARGS, default sh)
  rrun-fixtures spec                      print the default config.json";

fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("bundle") => {
            let Some(dir) = args.get(1) else {
                bail!("bundle: missing DIR\n{USAGE}");
            };
            let rest = &args[2..];
            let process_args = match rest.first().map(String::as_str) {
                None => None,
                Some("--") => Some(&rest[1..]),
                Some(other) => bail!("bundle: unexpected argument {other:?}\n{USAGE}"),
            };
            let mut bundle = Bundle::busybox(Path::new(dir))?;
            if let Some(a) = process_args.filter(|a| !a.is_empty()) {
                bundle.set_args(a);
                bundle.save()?;
            }
            println!("{}", bundle.path().display());
            Ok(())
        }
        Some("spec") => {
            println!("{}", serde_json::to_string_pretty(&default_spec())?);
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rrun-fixtures: {e:#}");
            ExitCode::FAILURE
        }
    }
}
