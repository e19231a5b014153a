//! mc's node agent: kernel interception of mirrored Service addresses and
//! the outbound tunnel client.

pub mod cli;
pub mod intercept;
pub mod kernel;
pub mod mirrors;
pub mod outbound;
pub mod pod;
pub mod run;
pub mod watch;
