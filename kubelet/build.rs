//! Packs the agent's relative relocations (`-z pack-relative-relocs`, DT_RELR) where the
//! toolchain and the C library support it. The agent is a position-independent executable
//! with about 40,000 relative relocations; as a RELA table that is 1 MB the loader reads
//! at each start and that stays resident for the agent's life, about a twentieth of its
//! memory budget. As DT_RELR it is a few KiB, and the binary stays position-independent.
//! glibc loads DT_RELR from 2.36 and binutils' ld writes it from 2.38; the probe links and
//! runs a small program with the flag, and without both the agent is linked as before.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (Some(out), Ok(target), Ok(host)) = (
        std::env::var_os("OUT_DIR").map(PathBuf::from),
        std::env::var("TARGET"),
        std::env::var("HOST"),
    ) else {
        return;
    };
    // The probe runs what it links: only when the agent is built for this machine.
    if target != host || !target.contains("linux-gnu") {
        return;
    }
    let src = out.join("relr_probe.c");
    let bin = out.join("relr_probe");
    if std::fs::write(
        &src,
        "static int x; int *p = &x; int main(void) { return *p; }\n",
    )
    .is_err()
    {
        return;
    }
    let linker = std::env::var("RUSTC_LINKER").unwrap_or_else(|_| "cc".into());
    let linked = Command::new(&linker)
        .args(["-pie", "-fPIE", "-Wl,-z,pack-relative-relocs", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .is_ok_and(|o| o.status.success());
    let runs = linked && Command::new(&bin).status().is_ok_and(|s| s.success());
    if runs {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    } else {
        println!("cargo:warning=the linker or libc cannot pack relative relocations; rrun-kubelet keeps a RELA table");
    }
}
