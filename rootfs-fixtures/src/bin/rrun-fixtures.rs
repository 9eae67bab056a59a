//! `rrun-fixtures bundle DIR [-- ARGS...]`: make an OCI bundle (busybox rootfs plus a
//! runc-like default config.json, `terminal: false`) in DIR.
//!
//! `rrun-fixtures spec`: print the default config.json.
//!
//! `rrun-fixtures image PATH [--ref NAME] [--format oci|docker|layout] [--compression
//! none|gzip|zstd] [--entrypoint 'WORDS']`: write a busybox image archive (or OCI layout
//! directory) at PATH and print its id.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use rootfs_fixtures::image::{write_image, ArchiveFormat, Compression, ImageSpec};
use rootfs_fixtures::{default_spec, Bundle};

const USAGE: &str = "usage:
  rrun-fixtures bundle DIR [-- ARGS...]   make a busybox bundle in DIR (process.args = ARGS, default sh)
  rrun-fixtures spec                      print the default config.json
  rrun-fixtures image PATH [--ref NAME] [--format oci|docker|layout] [--compression none|gzip|zstd]
                     [--entrypoint 'WORDS']
                                          write a busybox image at PATH (default busybox:latest,
                                          oci-archive, gzip; docker archives default to plain
                                          tar layers; --entrypoint: split at whitespace, no cmd)
                                          and print its id";

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
        Some("image") => image(&args[1..]),
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

fn image(args: &[String]) -> Result<()> {
    let Some(path) = args.first().filter(|a| !a.starts_with("--")) else {
        bail!("image: missing PATH\n{USAGE}");
    };
    let mut spec = ImageSpec::default();
    let mut compression = None;
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next() else {
            bail!("image: {flag} needs a value\n{USAGE}");
        };
        match flag.as_str() {
            "--ref" => spec.reference = value.clone(),
            "--entrypoint" => {
                spec.entrypoint = value.split_whitespace().map(String::from).collect();
                spec.cmd.clear();
            }
            "--format" => {
                spec.format = match value.as_str() {
                    "oci" | "oci-archive" => ArchiveFormat::OciArchive,
                    "docker" | "docker-archive" => ArchiveFormat::DockerArchive,
                    "layout" | "oci-layout" => ArchiveFormat::OciLayoutDir,
                    other => bail!("image: unknown format {other:?}\n{USAGE}"),
                }
            }
            "--compression" => {
                compression = Some(match value.as_str() {
                    "none" => Compression::None,
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    other => bail!("image: unknown compression {other:?}\n{USAGE}"),
                })
            }
            other => bail!("image: unexpected argument {other:?}\n{USAGE}"),
        }
    }
    // `docker save` writes plain tar layers.
    spec.compression = compression.unwrap_or(match spec.format {
        ArchiveFormat::DockerArchive => Compression::None,
        _ => Compression::Gzip,
    });
    let id = write_image(Path::new(path), &spec)?;
    println!("{id}");
    Ok(())
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
