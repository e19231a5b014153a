//! `install` and `identity init`: the trust anchor is read from
//! --identity-dir or generated and saved, then every object is printed or
//! applied.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mc_identity::TrustAnchor;

use crate::apply;
use crate::cli::{Global, InstallArgs, OutputFormat};
use crate::kube_ctx::KubeContext;
use crate::manifests::{self, InstallOptions};
use crate::objects;

fn anchor_exists(dir: &Path) -> bool {
    dir.join("ca.crt").exists() || dir.join("ca.key").exists()
}

/// Generates a trust anchor into `dir`, refusing to overwrite one unless `force`.
pub fn identity_init(dir: &Path, trust_domain: &str, force: bool) -> Result<TrustAnchor> {
    if anchor_exists(dir) && !force {
        bail!(
            "{} already holds a trust anchor (ca.crt/ca.key); use it with `install --identity-dir {}`, \
             or pass --force to replace it (clusters installed with the old one will stop trusting the new ones)",
            dir.display(),
            dir.display()
        );
    }
    let anchor = TrustAnchor::generate(trust_domain)
        .with_context(|| format!("generating a trust anchor for trust domain {trust_domain:?}"))?;
    anchor
        .write(dir)
        .with_context(|| format!("saving the trust anchor in {}", dir.display()))?;
    Ok(anchor)
}

/// The anchor install uses: --identity-dir, or a new one saved in --identity-out.
fn install_anchor(args: &InstallArgs) -> Result<Option<TrustAnchor>> {
    if args.no_identity_secrets {
        return Ok(None);
    }
    if let Some(dir) = &args.identity_dir {
        let anchor = TrustAnchor::read(&args.trust_domain, dir).with_context(|| {
            format!(
                "reading the trust anchor from {} (expects ca.crt and ca.key, as `kubectl mc identity init --out {}` writes them)",
                dir.display(),
                dir.display()
            )
        })?;
        return Ok(Some(anchor));
    }
    let dir = &args.identity_out;
    if anchor_exists(dir) {
        bail!(
            "{} already holds a trust anchor: pass --identity-dir {} to install with it \
             (every linked cluster must share one anchor), or --identity-out DIR for a new one",
            dir.display(),
            dir.display()
        );
    }
    let anchor = identity_init(dir, &args.trust_domain, false)?;
    eprintln!(
        "generated a new trust anchor in {dir}/ (ca.crt, ca.key): keep ca.key secret and install \
         every other cluster with --identity-dir {dir}",
        dir = dir.display()
    );
    Ok(Some(anchor))
}

/// `kubectl mc install`.
pub async fn run(global: &Global, args: &InstallArgs) -> Result<()> {
    if args.gateway_replicas < 1 {
        bail!("--gateway-replicas must be at least 1");
    }
    let format = global.output.unwrap_or(OutputFormat::Yaml);
    // Fail on a bad context before writing anything to disk.
    let ctx = match args.apply {
        true => Some(KubeContext::connect_reachable(global, None).await?),
        false => {
            objects::check_format(format)?;
            None
        }
    };
    let anchor = install_anchor(args)?;
    let opts = InstallOptions::from(args);
    let objects = manifests::render(&opts, anchor.as_ref())?;
    match ctx {
        None => {
            print!("{}", objects::print(&objects, format)?);
        }
        Some(ctx) => {
            apply::apply_all(&ctx, &objects, apply::Progress::Stdout).await?;
            eprintln!(
                "mc is installed in context {:?} as cluster {:?}; check it with `kubectl mc --context {} check`",
                ctx.name, args.cluster_name, ctx.name
            );
        }
    }
    Ok(())
}
