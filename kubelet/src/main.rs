//! `rrun-kubelet`: the node agent. Placeholder until the kubelet issue lands.

fn main() {
    eprintln!("rrun-kubelet: the node agent is not built yet (see the kubelet issue)");
    std::process::exit(1);
}
