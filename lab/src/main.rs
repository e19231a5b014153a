//! `mc-lab`: several local Kubernetes clusters on one machine, for the
//! demo and the end-to-end tests: each runs the real control plane, a
//! kube-proxy per node and CoreDNS; the lab plays the nodes (network
//! namespaces) and their kubelet (pods as processes).

mod apply;
mod cmd;
mod components;
mod control_plane;
mod dns;
mod echo;
mod kube_proxy;
mod kubeconfig;
mod kubelet;
mod lifecycle;
mod loadbalancer;
mod names;
mod netns;
mod nodes;
mod pidfile;
mod plan;
mod pod_env;
mod pod_status;
mod pod_worker;
mod podinit;
mod podnet;
mod pods;
mod probe;
mod procs;
mod reflect;
mod serve;
mod state;
mod supervise;
mod topology;
mod volumes;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::names::PodRef;

/// Local multi-cluster lab: real Kubernetes control planes, kube-proxy and
/// CoreDNS; nodes and pods as network namespaces. Needs root and the
/// components `lab/components/build.sh` builds.
#[derive(Parser, Debug)]
#[command(name = "mc-lab", version)]
struct Cli {
    /// Lab name (lowercase letters and digits); several labs can run side by side.
    #[arg(long, global = true, env = "MC_LAB", default_value = "mc")]
    lab: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the clusters and print how to use their kubeconfig.
    Up {
        /// Cluster names, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "east,west")]
        clusters: Vec<String>,
        /// Nodes in every cluster.
        #[arg(long, default_value_t = 2)]
        nodes_per_cluster: usize,
        /// Remove a lab of the same name first.
        #[arg(long)]
        recreate: bool,
        /// Build only the network (no API servers); for debugging the topology.
        #[arg(long, hide = true)]
        network_only: bool,
        /// How kube-proxy programs every node: nftables or iptables.
        #[arg(long, value_enum, default_value_t = plan::ProxyMode::Nftables)]
        proxy_mode: plan::ProxyMode,
        /// Seconds to wait for the control planes and nodes.
        #[arg(long, default_value_t = 180)]
        timeout: u64,
    },
    /// Remove every namespace, link, process and file of the lab.
    Down,
    /// Show clusters, API URLs, nodes and pods.
    Status,
    /// Print the path of the lab's kubeconfig.
    Kubeconfig,
    /// Create or replace the objects of a YAML file (multi-document), like
    /// `kubectl create` falling back to `kubectl replace`.
    Apply {
        /// The manifest; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// The cluster to apply to.
        #[arg(long)]
        cluster: String,
        /// Namespace of namespaced objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Wait until applied Deployments, DaemonSets and Pods are ready.
        #[arg(long)]
        wait: bool,
        /// Seconds `--wait` waits at most.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Run and delete pods.
    #[command(subcommand)]
    Pod(PodCommand),
    /// Run a command inside a pod (its network, DNS and ServiceAccount files);
    /// the exit code is the command's.
    Exec {
        /// <cluster>/<namespace>/<pod>
        pod: PodRef,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The built-in test server: HTTP names the pod, raw TCP echoes.
    Echo {
        /// HTTP port (0 disables).
        #[arg(long, default_value_t = 8080)]
        http_port: u16,
        /// Raw TCP echo port (0 disables).
        #[arg(long, default_value_t = 9000)]
        tcp_port: u16,
        /// A line the TCP server sends first.
        #[arg(long)]
        banner: Option<String>,
    },
    /// Test client: connect to HOST:PORT, send TEXT (\r and \n escapes
    /// allowed), half-close, print the answer.
    TcpClient {
        /// HOST:PORT.
        addr: String,
        /// What to send.
        #[arg(long, default_value = "")]
        send: String,
        /// Seconds to wait for connecting and for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
    /// Test client: stream BYTES pseudo-random bytes to an echo server,
    /// check that the same bytes come back, print the counts.
    Bulk {
        /// HOST:PORT of an echo server (`mc-lab echo`, TCP port).
        addr: String,
        /// How many bytes to send (and expect back).
        #[arg(long, default_value_t = 100 * 1024 * 1024)]
        bytes: u64,
        /// Seconds without progress before giving up.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Send at most this many bytes per second (default: as fast as
        /// possible); with --bytes, sets how long the connection lives.
        #[arg(long, value_name = "BYTES_PER_SEC")]
        rate: Option<u64>,
    },
    /// The daemon of one cluster (started by `up`).
    #[command(hide = true)]
    Serve {
        /// Cluster name.
        #[arg(long)]
        cluster: String,
    },
    /// Enter a pod's namespaces and execute a command (used by the kubelet and `exec`).
    #[command(hide = true)]
    PodInit {
        /// Network namespace name.
        #[arg(long)]
        netns: String,
        /// File to mount over /etc/resolv.conf.
        #[arg(long)]
        resolv_conf: Option<PathBuf>,
        /// A volume to bind-mount (JSON: source, target, readOnly).
        #[arg(long = "mount")]
        mounts: Vec<String>,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PodCommand {
    /// Create a pod running CMD, wait until it is ready, print its IP.
    Run {
        /// <cluster>/<namespace>/<pod>
        pod: PodRef,
        /// Labels, k=v[,k=v...].
        #[arg(long, default_value = "")]
        labels: String,
        /// Node to run on (default: the one with the fewest pods).
        #[arg(long)]
        node: Option<String>,
        /// Run in the node's network namespace.
        #[arg(long)]
        host_network: bool,
        /// ServiceAccount the pod runs as (created when missing).
        #[arg(long, default_value = "default")]
        service_account: String,
        /// Ready only once this TCP port accepts connections.
        #[arg(long)]
        ready_port: Option<u16>,
        /// Seconds to wait for the pod.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// The command.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Delete a pod and wait until it is gone.
    Delete {
        /// <cluster>/<namespace>/<pod>
        pod: PodRef,
        /// Seconds to wait.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("mc-lab: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    let lab = cli.lab;
    match cli.command {
        Command::Up {
            clusters,
            nodes_per_cluster,
            recreate,
            network_only,
            proxy_mode,
            timeout,
        } => {
            let req = lifecycle::UpRequest {
                lab: lab.clone(),
                clusters,
                nodes_per_cluster,
                recreate,
                network_only,
                proxy_mode,
                timeout: Duration::from_secs(timeout),
            };
            let state = runtime()?.block_on(lifecycle::up(&req))?;
            let dir = state::LabDir::new(&state.name);
            for cluster in state.cluster_plans() {
                println!("cluster {}: API {}", cluster.name, cluster.api_url());
            }
            if !network_only {
                println!("kubeconfig: {}", dir.kubeconfig().display());
                println!("export KUBECONFIG={}", dir.kubeconfig().display());
            }
        }
        Command::Down => lifecycle::down(&lab)?,
        Command::Status => runtime()?.block_on(pods::status(&lab))?,
        Command::Kubeconfig => println!("{}", state::LabDir::new(&lab).kubeconfig().display()),
        Command::Apply {
            file,
            cluster,
            namespace,
            wait,
            timeout,
        } => {
            let req = apply::ApplyRequest {
                file,
                cluster,
                namespace,
                wait: wait.then(|| Duration::from_secs(timeout)),
            };
            runtime()?.block_on(apply::apply(&lab, &req))?
        }
        Command::Pod(PodCommand::Run {
            pod,
            labels,
            node,
            host_network,
            service_account,
            ready_port,
            timeout,
            command,
        }) => {
            let req = pods::RunRequest {
                pod,
                labels: nodes::parse_labels(&labels)?,
                node,
                host_network,
                service_account,
                ready_port,
                command,
                timeout: Duration::from_secs(timeout),
            };
            let ip = runtime()?.block_on(pods::run(&lab, &req))?;
            println!("{ip}");
        }
        Command::Pod(PodCommand::Delete { pod, timeout }) => {
            runtime()?.block_on(pods::delete(&lab, &pod, Duration::from_secs(timeout)))?
        }
        Command::Exec { pod, command } => {
            let init = runtime()?.block_on(pods::pod_init_for(&lab, &pod))?;
            // pod-init must start single-threaded (unshare of the mount
            // namespace), so it runs as a fresh child process.
            let exe = std::env::current_exe().context("cannot find mc-lab's own executable")?;
            // Like `kubectl exec`, find the lab's binaries as the pod does.
            let path = match (exe.parent(), std::env::var("PATH")) {
                (Some(dir), Ok(path)) => format!("{}:{path}", dir.display()),
                (Some(dir), Err(_)) => format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    dir.display()
                ),
                (None, path) => path.unwrap_or_default(),
            };
            let status = std::process::Command::new(&exe)
                .env("PATH", path)
                .args(init.args(&command))
                .status()
                .context("cannot run pod-init")?;
            return Ok(exit_code(status));
        }
        Command::Echo {
            http_port,
            tcp_port,
            banner,
        } => runtime()?.block_on(echo::run(echo::EchoConfig {
            http_port,
            tcp_port,
            banner,
        }))?,
        Command::Bulk {
            addr,
            bytes,
            timeout,
            rate,
        } => runtime()?.block_on(echo::bulk(&addr, bytes, Duration::from_secs(timeout), rate))?,
        Command::TcpClient {
            addr,
            send,
            timeout,
        } => runtime()?.block_on(echo::client(&addr, &send, Duration::from_secs(timeout)))?,
        Command::Serve { cluster } => {
            serve::enter_wan(&lab)?;
            runtime()?.block_on(serve::serve(&lab, &cluster))?
        }
        Command::PodInit {
            netns,
            resolv_conf,
            mounts,
            command,
        } => {
            let init = podinit::PodInit {
                netns,
                resolv_conf,
                mounts: mounts
                    .iter()
                    .map(|m| volumes::Mount::from_arg(m))
                    .collect::<Result<_>>()?,
            };
            match init.exec(&command)? {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The exit code of a finished child, with 128 + signal for signal deaths.
fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
