//! `mc-lab`: several local Kubernetes-like clusters built from network
//! namespaces and API emulators, for the demo and the end-to-end tests.

mod plan;

fn main() {}
