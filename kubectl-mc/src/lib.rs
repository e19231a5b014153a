//! The kubectl plugin of mc: `install`, `uninstall`, `link`, `unlink`,
//! `export`, `unexport`, `check`, `gateways`, `stat` and `identity init`.
//!
//! Every command talks to one kubeconfig context (`--context`), except
//! `link --apply-to` and `check --remote-context`, which also use a second.
//! Objects are created, replaced or merge-patched with kube-rs: never
//! server-side apply.

pub mod apply;
pub mod check;
pub mod cli;
pub mod export;
pub mod gateways;
pub mod install;
pub mod kube_ctx;
pub mod link;
pub mod manifests;
pub mod mesh_config;
pub mod objects;
pub mod output;
pub mod uninstall;
pub mod unlink;

use anyhow::Result;

use cli::{Cli, Command, IdentityCommand};

/// Runs one command line.
pub async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Install(args) => install::run(global, args).await,
        Command::Uninstall(args) => uninstall::run(global, args).await,
        Command::Link(args) => link::run(global, args).await,
        Command::Unlink(args) => unlink::run(global, args).await,
        Command::Export(args) => export::run(global, args, true).await,
        Command::Unexport(args) => export::run(global, args, false).await,
        Command::Check(args) => check::run(global, args).await,
        Command::Gateways => gateways::run_gateways(global).await,
        Command::Stat => gateways::run_stat(global).await,
        Command::Identity {
            command:
                IdentityCommand::Init {
                    out,
                    trust_domain,
                    force,
                },
        } => {
            install::identity_init(out, trust_domain, *force)?;
            eprintln!(
                "wrote {dir}/ca.crt and {dir}/ca.key (keep ca.key secret); install each cluster with --identity-dir {dir}",
                dir = out.display()
            );
            Ok(())
        }
    }
}
