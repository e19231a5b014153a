//! `install` and `identity init`: the trust anchor is read from
//! --identity-dir or generated and saved, this cluster's issuer is signed by
//! it (or read from --identity-issuer-*-file), then every object is printed
//! or applied.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mc_identity::{ClusterIssuer, ISSUER_LIFETIME, TrustAnchor};

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

fn read_file(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("reading the {what} from {}", path.display()))
}

/// This cluster's issuer: from the issuer files, or signed now by the
/// anchor of --identity-dir (or a new one).
fn install_issuer(args: &InstallArgs) -> Result<Option<ClusterIssuer>> {
    if let (Some(cert), Some(key)) = (
        &args.identity_issuer_certificate_file,
        &args.identity_issuer_key_file,
    ) {
        let anchors = match (&args.identity_trust_anchors_file, &args.identity_dir) {
            (Some(file), _) => read_file(file, "trust anchors")?,
            (None, Some(dir)) => read_file(&dir.join("ca.crt"), "trust anchor")?,
            (None, None) => bail!(
                "--identity-issuer-certificate-file needs the trust anchors it chains to: \
                 pass --identity-trust-anchors-file or --identity-dir"
            ),
        };
        let issuer = ClusterIssuer::from_pem(
            &read_file(cert, "issuer certificate")?,
            &read_file(key, "issuer key")?,
            &anchors,
        )
        .context("the issuer given with --identity-issuer-certificate-file")?;
        let named = issuer.cluster();
        if named.cluster != args.cluster_name || named.trust_domain != args.trust_domain {
            bail!(
                "the issuer certificate is for cluster {:?} in trust domain {:?}, not {:?} in {:?}",
                named.cluster,
                named.trust_domain,
                args.cluster_name,
                args.trust_domain
            );
        }
        return Ok(Some(issuer));
    }
    let Some(anchor) = install_anchor(args)? else {
        return Ok(None);
    };
    let issuer = anchor
        .issue_cluster_issuer(&args.cluster_name, ISSUER_LIFETIME)
        .with_context(|| format!("issuing the issuer of cluster {:?}", args.cluster_name))?;
    Ok(Some(issuer))
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
    let issuer = install_issuer(args)?;
    let opts = InstallOptions::from(args);
    let objects = manifests::render(&opts, issuer.as_ref())?;
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
