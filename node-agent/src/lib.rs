//! mc's node agent: kernel interception of mirrored Service addresses and,
//! later, the outbound tunnel client.

pub mod cli;
pub mod intercept;
pub mod kernel;
pub mod run;
