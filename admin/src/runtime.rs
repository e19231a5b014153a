//! The proxies' async runtime.

use anyhow::{Context, Result};

/// Builds the runtime of a proxy with `workers` threads, 0 meaning one per
/// CPU. One worker (the proxies' default) gets tokio's current-thread
/// scheduler: everything runs on the thread that calls `block_on`, without
/// the work-stealing scheduler's cross-thread wake-ups, atomics and
/// statistics, which a single worker has no use for.
pub fn build(workers: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if workers > 1 {
            builder.worker_threads(workers);
        }
        builder
    };
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}
