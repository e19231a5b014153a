//! `mc-node-agent run`: program the kernel, serve the transparent listener,
//! and remove everything on shutdown.

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::RunArgs;
use crate::intercept::{Intercepted, TransparentListener};
use crate::kernel::{Interceptor, MirrorSet};

/// Runs the agent until SIGTERM or SIGINT, then cleans up the kernel state.
pub async fn run(args: RunArgs) -> Result<()> {
    let interceptor = Interceptor::new(args.kernel_config())?;
    // Bind before programming the kernel, so TPROXY always finds the socket.
    let listener = TransparentListener::bind(interceptor.config().listen)?;
    let mirrors: MirrorSet = args.mirrors.iter().copied().collect();
    let result = serve(&interceptor, &listener, mirrors).await;
    let cleaned = interceptor
        .cleanup()
        .await
        .context("removing mc's kernel state on shutdown");
    result.and(cleaned)
}

async fn serve(
    interceptor: &Interceptor,
    listener: &TransparentListener,
    mirrors: MirrorSet,
) -> Result<()> {
    interceptor
        .apply(&mirrors)
        .await
        .context("start-up reconcile of the kernel state")?;
    let (_mirrors_tx, mirrors_rx) = watch::channel(mirrors);
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    info!(listen = %interceptor.config().listen, "node agent ready");
    loop {
        tokio::select! {
            _ = sigterm.recv() => {
                info!("SIGTERM received, shutting down");
                return Ok(());
            }
            signal = tokio::signal::ctrl_c() => {
                signal.context("waiting for SIGINT")?;
                info!("SIGINT received, shutting down");
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok(conn) => dispatch(conn, &mirrors_rx.borrow()),
                Err(error) => warn!(%error, "accepting an intercepted connection failed"),
            },
        }
    }
}

/// Routes one intercepted connection. A destination that is not (or no
/// longer) a mirror is refused at once.
fn dispatch(conn: Intercepted, mirrors: &MirrorSet) {
    let is_mirror = match conn.original_dst {
        std::net::SocketAddr::V4(dst) => mirrors.contains(&dst),
        std::net::SocketAddr::V6(_) => false,
    };
    let (peer, dst) = (conn.peer, conn.original_dst);
    if is_mirror {
        // The outbound tunnel client is not part of this build yet: the
        // connection is refused rather than left hanging.
        warn!(%peer, %dst, "mirror intercepted but no outbound proxy is available; refusing");
    } else {
        warn!(%peer, %dst, "intercepted destination is not a mirror; refusing");
    }
    if let Err(error) = conn.refuse() {
        warn!(%peer, %dst, %error, "resetting a refused connection failed");
    }
}
