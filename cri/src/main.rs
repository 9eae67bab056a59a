//! `rrun-cri`: the Kubernetes CRI server. Placeholder until the CRI issue lands.

fn main() {
    eprintln!("rrun-cri: the CRI server is not built yet (see the CRI issue)");
    std::process::exit(1);
}
