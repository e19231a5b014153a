//! Where the current identity comes from. TLS configs hold an
//! `Arc<dyn CertSource>` and ask it on every handshake, so a source that
//! changes its answer rotates certificates and anchors without a new config
//! and without touching established connections.
//!
//! Implemented now by [`SharedIdentity`] (in memory, swapped by its owner)
//! and [`FileCertSource`] (files on disk, re-read on `reload`). The
//! controller-signed CSR flow will be another implementation.

use std::sync::Arc;

use anyhow::Result;
use arc_swap::ArcSwap;

use crate::files::IdentityPaths;
use crate::material::Identity;

/// The current identity of this process.
pub trait CertSource: std::fmt::Debug + Send + Sync {
    /// The identity to use for the next handshake. Cheap: called per
    /// handshake.
    fn current(&self) -> Arc<Identity>;
}

/// An identity held in memory that can be replaced at any time.
#[derive(Debug)]
pub struct SharedIdentity {
    current: ArcSwap<Identity>,
}

impl SharedIdentity {
    /// Starts with `identity`.
    pub fn new(identity: Identity) -> SharedIdentity {
        SharedIdentity {
            current: ArcSwap::from_pointee(identity),
        }
    }

    /// Replaces the identity; the next handshake uses the new one.
    pub fn replace(&self, identity: Identity) {
        tracing::info!(
            id = %identity.id(),
            not_after = ?identity.not_after(),
            "identity replaced"
        );
        self.current.store(Arc::new(identity));
    }
}

impl CertSource for SharedIdentity {
    fn current(&self) -> Arc<Identity> {
        self.current.load_full()
    }
}

/// An identity read from `tls.crt`, `tls.key` and `ca.crt` files.
#[derive(Debug)]
pub struct FileCertSource {
    paths: IdentityPaths,
    shared: SharedIdentity,
}

impl FileCertSource {
    /// Loads the files now; fails if they are missing or inconsistent.
    pub fn load(paths: IdentityPaths) -> Result<FileCertSource> {
        let identity = Identity::load(&paths)?;
        tracing::info!(id = %identity.id(), cert = %paths.cert_chain.display(), "identity loaded");
        Ok(FileCertSource {
            paths,
            shared: SharedIdentity::new(identity),
        })
    }

    /// Re-reads the files. On failure the previous identity stays in use.
    pub fn reload(&self) -> Result<()> {
        let identity = Identity::load(&self.paths)?;
        self.shared.replace(identity);
        Ok(())
    }

    /// The files this source reads.
    pub fn paths(&self) -> &IdentityPaths {
        &self.paths
    }
}

impl CertSource for FileCertSource {
    fn current(&self) -> Arc<Identity> {
        self.shared.current()
    }
}
