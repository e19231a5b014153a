//! Removing the lab when the benchmark is interrupted. The normal path
//! drops the mesh (whose fixture runs `mc-lab down`); a signal may arrive
//! while a blocking load generator runs, so the handler runs `down` itself
//! and exits.

use std::path::PathBuf;
use std::sync::OnceLock;

static LAB: OnceLock<String> = OnceLock::new();

/// Records the lab's name once it exists.
pub fn remember_lab(name: &str) {
    let _ = LAB.set(name.to_string());
}

/// The lab's name, once known.
pub fn lab_name() -> Option<&'static str> {
    LAB.get().map(String::as_str)
}

/// Removes the lab with `mc-lab down`: the recorded one, or, when the
/// signal came while it was being created, the first lab this process's
/// test fixture names (`t<pid>x0`), if its directory exists.
pub fn down(mc_lab: &PathBuf) {
    // The benchmark's files (`files::Files`, not dropped on this path).
    let _ = std::fs::remove_dir_all(format!("/tmp/mc-bench-{}", std::process::id()));
    let fallback = format!("t{}x0", std::process::id());
    let name = match lab_name() {
        Some(name) => name.to_string(),
        None if PathBuf::from("/run/mc-lab").join(&fallback).exists() => fallback,
        None => return,
    };
    eprintln!("mc-bench: removing lab {name}");
    let _ = std::process::Command::new(mc_lab)
        .args(["--lab", &name, "down"])
        .status();
}

/// Waits for SIGINT or SIGTERM, then removes the lab and exits with 130.
pub async fn on_signal(mc_lab: PathBuf) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        eprintln!("mc-bench: cannot install signal handlers; an interrupt may leave the lab up");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    down(&mc_lab);
    std::process::exit(130);
}
