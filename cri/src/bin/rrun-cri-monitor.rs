//! `rrun-cri-monitor`: the per-container monitor as a binary of its own.
//!
//! `rrun-cri monitor ...` execs this (same pid, so the server sees no difference), and
//! this calls `rrun-cri monitor --helper ...` back for the runtime's work (create, OOM
//! count, delete). Why a second binary: the monitor lives as long as its container, and
//! what a process maps of its program counts in its private memory. The big binary
//! (tonic, tokio, the whole runtime) dirties ~280 KiB of `.data.rel.ro` at every start
//! (the dynamic loader relocates all of it, in every process) and its code is spread so
//! widely that the few functions the monitor's loop runs pull in about 1 MiB of pages
//! (the kernel maps 64 KiB around each page fault). Linked with the monitor's loop alone,
//! the whole program is a few hundred KiB: the monitor stays under 512 KiB private.
//!
//! Arguments (as `rrun-cri monitor` passes them): `--runtime-exe FILE` (the big binary)
//! then `rrun-cri monitor`'s own; or `--pod-init` alone, for the pid 1 of a pod that shares
//! one pid namespace (`rrun_cri::monitor::run_pod_init`).

fn main() {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "--pod-init")
    {
        std::process::exit(rrun_cri::monitor::run_pod_init());
    }
    let code = match rrun_cri::monitor::parse_small_monitor_args(std::env::args_os().skip(1)) {
        Ok((exe, args)) => rrun_cri::monitor::run_small_monitor(&args, &exe),
        Err(e) => {
            // The server reads one JSON line: it gets one even for bad arguments.
            rrun_cri::monitor::report_error(&format!("rrun-cri-monitor: {e}"))
        }
    };
    std::process::exit(code);
}
