//! The benchmark's files in a temporary directory (pods share the host's
//! filesystem): nginx's configuration, pid file, logs and the ~100-byte
//! page it serves, and wrk's reporting script. Removed on drop.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Port nginx listens on inside its pod.
pub const HTTP_PORT: u16 = 8080;
/// Port `iperf3 -s` listens on inside its pod.
pub const IPERF_PORT: u16 = 5201;
/// Size of the page nginx serves.
pub const PAGE_BYTES: usize = 100;

/// The temporary directory and what it holds.
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// Creates `/tmp/mc-bench-<pid>` with everything in it.
    pub fn create() -> Result<Files> {
        let dir = PathBuf::from(format!("/tmp/mc-bench-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("removing a stale {}", dir.display()))?;
        }
        let files = Files { dir };
        for sub in ["www", "logs", "tmp"] {
            let path = files.dir.join(sub);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        // nginx's workers run as an unprivileged user: they must read the page.
        for path in [files.dir.clone(), files.dir.join("www")] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", path.display()))?;
        }
        write(&files.page(), &page())?;
        write(&files.nginx_conf(), &nginx_conf(&files.dir))?;
        write(&files.wrk_script(), WRK_REPORT)?;
        Ok(files)
    }

    /// The nginx command of the server pod.
    pub fn nginx_command(&self) -> Vec<String> {
        vec![
            "nginx".into(),
            "-p".into(),
            self.dir.display().to_string(),
            "-e".into(),
            self.dir.join("logs/error.log").display().to_string(),
            "-c".into(),
            self.nginx_conf().display().to_string(),
        ]
    }

    /// wrk's Lua script that prints one machine-readable summary line.
    pub fn wrk_script(&self) -> PathBuf {
        self.dir.join("report.lua")
    }

    fn page(&self) -> PathBuf {
        self.dir.join("www/index.html")
    }

    fn nginx_conf(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", path.display()))
}

/// Exactly [`PAGE_BYTES`] bytes of HTML.
fn page() -> String {
    let mut page = String::from("<html><body>mc bench ");
    let tail = "</body></html>\n";
    while page.len() + tail.len() < PAGE_BYTES {
        page.push('x');
    }
    page.push_str(tail);
    page
}

/// A foreground nginx (the pod is its supervisor) serving the page on
/// [`HTTP_PORT`] of its pod, every path of its own under `dir`; keep-alive
/// connections are never closed by a request count.
fn nginx_conf(dir: &Path) -> String {
    let dir = dir.display();
    let mut conf = String::new();
    let _ = write!(
        conf,
        "daemon off;
master_process on;
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/html;
    server {{
        listen {HTTP_PORT};
        root {dir}/www;
    }}
}}
"
    );
    conf
}

/// Prints `MCBENCH key=value ...` once wrk is done (latencies in µs).
const WRK_REPORT: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "MCBENCH requests=%d duration_us=%d socket_errors=%d status_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_the_advertised_size() {
        assert_eq!(page().len(), PAGE_BYTES);
    }
}
