//! Where identity material lives on disk and how PEM files are read and
//! written. The layout matches a Kubernetes TLS Secret mounted as a volume:
//! `tls.crt` (leaf first, then any intermediates), `tls.key` (PKCS#8, SEC1
//! or PKCS#1) and `ca.crt` (one or more trust anchors).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The three files of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityPaths {
    /// Certificate chain, leaf first (PEM).
    pub cert_chain: PathBuf,
    /// The leaf's private key (PEM).
    pub key: PathBuf,
    /// Trust anchors (PEM bundle).
    pub anchors: PathBuf,
}

impl IdentityPaths {
    /// `tls.crt`, `tls.key` and `ca.crt` inside `dir`.
    pub fn in_dir(dir: &Path) -> IdentityPaths {
        IdentityPaths {
            cert_chain: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            anchors: dir.join("ca.crt"),
        }
    }
}

/// Parses every certificate in a PEM text.
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {what} PEM"))?;
    if certs.is_empty() {
        bail!("{what} holds no certificate");
    }
    Ok(certs)
}

/// Parses the first private key in a PEM text.
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .context("parsing private key PEM")?
        .context("the key file holds no private key")
}

/// Reads a file to a string, naming it in the error.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a world-readable file (certificates).
pub(crate) fn write_public(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Writes a file only its owner can read (keys), replacing any old one.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
