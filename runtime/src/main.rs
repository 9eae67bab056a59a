//! `rrun`: the runc-compatible command line over the rrun library (the commands are in
//! `cli/`).

mod cli;

use clap::Parser;
use cli::{dispatch, error_text, Cli, LogFormat, Logger};

fn main() {
    let cli = Cli::parse();
    let logger = Logger {
        file: cli.log.clone(),
        json: cli.log_format == LogFormat::Json,
    };
    match dispatch(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = error_text(&e);
            logger.error(&msg);
            eprintln!("rrun: {msg}");
            std::process::exit(1);
        }
    }
}
