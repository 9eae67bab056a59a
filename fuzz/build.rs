//! Copies the runtime's `main.rs` without its inner doc comments (`//!`, not allowed in an
//! `include!`d file) so the `cli_args` target can reach the private `Cli` parser.
fn main() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/src/main.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(&src).expect("reading runtime/src/main.rs");
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//!") && !l.trim_start().starts_with("#!["))
        .map(|l| format!("{l}\n"))
        .collect();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("rrun_main.rs");
    std::fs::write(out, body).unwrap();
}
