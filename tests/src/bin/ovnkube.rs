//! A stand-in for ovnkube-node in the tests, not OVN-Kubernetes: a process
//! named `ovnkube` whose command line is the one a deployment gives
//! ovnkube-node, for the agents to find and read in /proc. It takes any
//! arguments and does nothing until its stdin closes (the test drops it).

fn main() {
    let mut byte = [0u8; 1];
    let _ = std::io::Read::read(&mut std::io::stdin(), &mut byte);
}
