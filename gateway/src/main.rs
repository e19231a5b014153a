//! `mc-gateway`: the inbound end of mc's tunnels. It authenticates callers,
//! checks that the target Service is exported on the named port, and
//! forwards to one of its ready endpoints.

mod balance;
mod targets;

fn main() {}
