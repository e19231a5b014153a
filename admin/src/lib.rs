//! mc-admin: the admin endpoints of the agent and the gateway (port 4191):
//! `/live` (200 while the process runs), `/ready` (200 once the component
//! sets its [`Readiness`], 503 before) and `/metrics` (OpenMetrics text),
//! plus the connection metric families both proxies share
//! ([`ProxyMetrics`]), their logging ([`logging::init`]), async runtime
//! ([`runtime::build`]) and Kubernetes client ([`api_client::connect`]).
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use mc_admin::{ADMIN_PORT, AdminState, ProxyMetrics, Readiness, Side};
//! let mut registry = prometheus_client::registry::Registry::default();
//! let metrics = ProxyMetrics::register(Side::Agent, &mut registry);
//! let readiness = Readiness::new();
//! let state = AdminState::new(registry, readiness.clone());
//! tokio::spawn(mc_admin::serve(([0, 0, 0, 0], ADMIN_PORT).into(), state));
//! // ... once rules and identity are in place:
//! readiness.set(true);
//! let record = metrics.open("east", "shop", "backend");
//! record.connected(std::time::Duration::from_micros(450));
//! record.close(1200, 34000);
//! # Ok(()) }
//! ```

pub mod api_client;
pub mod cluster_ca;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod server;

pub use metrics::{ConnLabels, ConnectionRecord, ProxyMetrics, REASON_ABANDONED, Side};
pub use server::{ADMIN_PORT, AdminState, Readiness, serve, serve_on};
