//! Loopback measurements behind the tunnel's design choices.
//!
//! `cargo run --release -p mc-tunnel --example bench`
//!
//! 1. TLS handshake cost: full versus resumed (TLS 1.3, ECDSA P-256, mTLS).
//! 2. TLS bulk throughput with and without a read buffer under rustls, and
//!    with several splice buffer sizes.
//! 3. The whole path (client -> agent -> mTLS -> gateway -> server) against
//!    direct TCP: bulk throughput, small request/response latency and new
//!    connections per second.
//!
//! Everything runs in one process on loopback, so both ends share the CPUs;
//! treat the numbers as relative.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mc_identity::{client_config, server_config};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// CPU seconds (user + system) this process used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks as f64 / 100.0
}

async fn handshakes(pki: &support::Pki) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // mc's configs no longer resume sessions; this measurement (kept for
    // the design record in docs/tunnel-protocol.md) turns tickets back on.
    let mut server = (*server_config(pki.gateway.clone()).unwrap()).clone();
    server.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    server.send_tls13_tickets = 2;
    let acceptor = TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"k").await;
                    let mut rest = Vec::new();
                    let _ = tls.read_to_end(&mut rest).await;
                }
            });
        }
    });
    let full = client_config(pki.agent.clone(), support::gateway_id()).unwrap();
    let mut resumed = (*full).clone();
    resumed.resumption = Resumption::in_memory_sessions(256);
    let resumed = Arc::new(resumed);
    for (name, config) in [("full", full), ("resumed", resumed)] {
        let n = 500;
        let connector = TlsConnector::from(config);
        let cpu = cpu_seconds();
        let start = Instant::now();
        for _ in 0..n {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut tls = connector
                .connect(ServerName::IpAddress(addr.ip().into()), tcp)
                .await
                .unwrap();
            // One byte from the server proves its side finished too (and
            // delivers the session tickets).
            let mut k = [0u8; 1];
            tls.read_exact(&mut k).await.unwrap();
            tls.shutdown().await.unwrap();
        }
        let wall = start.elapsed() / n;
        let cpu_us = (cpu_seconds() - cpu) * 1e6 / f64::from(n);
        println!(
            "handshake {name:8} {:>7.0} us wall, {cpu_us:>6.0} us CPU (both ends) per connection",
            wall.as_secs_f64() * 1e6
        );
    }
}

const BULK: u64 = 2 << 30;

/// Reads `stream` to the end with a `buf`-sized buffer; returns bytes read.
async fn drain<R: AsyncRead + Unpin>(stream: &mut R, buf: usize) -> u64 {
    let mut buf = vec![0u8; buf];
    let mut total = 0u64;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n as u64,
        }
    }
}

async fn tls_throughput(pki: &support::Pki, buffered: bool, read_buf: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server_config(pki.gateway.clone()).unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if buffered {
            let mut tls = acceptor
                .accept(BufReader::with_capacity(64 * 1024, tcp))
                .await
                .unwrap();
            drain(&mut tls, read_buf).await
        } else {
            let mut tls = acceptor.accept(tcp).await.unwrap();
            drain(&mut tls, read_buf).await
        }
    });
    let config = client_config(pki.agent.clone(), support::gateway_id()).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < BULK {
        tls.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    tls.shutdown().await.unwrap();
    let got = server.await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, BULK);
    println!(
        "tls bulk  socket-read-buffer={:<5} read={:>3} KiB  {:>5.2} Gbit/s  {:.2} CPU s/GiB",
        if buffered { "64KiB" } else { "none" },
        read_buf / 1024,
        BULK as f64 * 8.0 / secs / 1e9,
        (cpu_seconds() - cpu) / (BULK as f64 / f64::from(1u32 << 30)),
    );
}

/// Sink server: reads to EOF, then closes.
async fn start_sink() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                drain(&mut tcp, 256 * 1024).await;
            });
        }
    });
    addr
}

async fn bulk(addr: SocketAddr) -> f64 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < BULK {
        tcp.write_all(&chunk).await.unwrap();
        sent += chunk.len() as u64;
    }
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest).await;
    BULK as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}

/// Mean round trip of 64-byte request/response on one connection, in µs.
async fn round_trips(addr: SocketAddr) -> f64 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    // Warm up (the first one includes the tunnel's upstream connect).
    tcp.write_all(&msg).await.unwrap();
    tcp.read_exact(&mut back).await.unwrap();
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        tcp.write_all(&msg).await.unwrap();
        tcp.read_exact(&mut back).await.unwrap();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Sequential new connections, each with one 64-byte exchange; per second.
async fn new_connections(addr: SocketAddr) -> f64 {
    let n = 3000;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(&msg).await.unwrap();
        tcp.read_exact(&mut back).await.unwrap();
        tcp.shutdown().await.unwrap();
    }
    f64::from(n) / start.elapsed().as_secs_f64()
}

async fn whole_path(pki: &support::Pki) {
    let sink = start_sink().await;
    let echo = support::start_echo().await;
    let routes = HashMap::from([
        (("sink".to_owned(), 9), sink),
        (("echo".to_owned(), 7), echo),
    ]);
    let gateway = support::start_gateway(pki, routes.clone()).await;
    let tunnel = support::tunnel_client(pki, gateway.addr);
    let mux_sink = support::start_agent(tunnel.clone(), support::request("sink", 9)).await;
    let mux_echo = support::start_agent(tunnel, support::request("echo", 7)).await;
    let plain_gateway = support::start_plain_gateway(pki, routes).await;
    let plain_sink =
        support::start_plain_agent(pki, plain_gateway, support::request("sink", 9)).await;
    let plain_echo =
        support::start_plain_agent(pki, plain_gateway, support::request("echo", 7)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    for round in 1..=2 {
        let (direct, mux, plain) = (
            bulk(sink).await,
            bulk(mux_sink).await,
            bulk(plain_sink).await,
        );
        println!(
            "[{round}] bulk 1 stream Gbit/s   direct {direct:>6.2}  mux {mux:>6.2} ({:.2})  tls-per-conn {plain:>6.2} ({:.2})",
            mux / direct,
            plain / direct
        );
        let (direct, mux, plain) = (
            round_trips(echo).await,
            round_trips(mux_echo).await,
            round_trips(plain_echo).await,
        );
        println!(
            "[{round}] 64 B round trip us    direct {direct:>6.1}  mux {mux:>6.1} (+{:.1}, {:.2})  tls-per-conn {plain:>6.1} (+{:.1}, {:.2})",
            mux - direct,
            direct / mux,
            plain - direct,
            direct / plain
        );
        let (direct, mux, plain) = (
            new_connections(echo).await,
            new_connections(mux_echo).await,
            new_connections(plain_echo).await,
        );
        println!(
            "[{round}] new connections/s     direct {direct:>6.0}  mux {mux:>6.0} ({:.2})  tls-per-conn {plain:>6.0} ({:.2})",
            mux / direct,
            plain / direct
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    runtime.block_on(async {
        let pki = support::pki();
        if std::env::args().any(|a| a == "--mux-bulk") {
            let sink = start_sink().await;
            let routes = HashMap::from([(("sink".to_owned(), 9), sink)]);
            let gateway = support::start_gateway(&pki, routes).await;
            let tunnel = support::tunnel_client(&pki, gateway.addr);
            let via = support::start_agent(tunnel, support::request("sink", 9)).await;
            for _ in 0..4 {
                println!("mux bulk {:.2} Gbit/s", bulk(via).await);
            }
            return;
        }
        if let Some(mode) =
            std::env::args().find_map(|a| a.strip_prefix("--tls-bulk=").map(str::to_owned))
        {
            tls_throughput(&pki, mode == "buffered", 64 * 1024).await;
            return;
        }
        if std::env::args().any(|a| a == "--path-only") {
            whole_path(&pki).await;
            return;
        }
        handshakes(&pki).await;
        for (buffered, read_buf) in [
            (false, 16 * 1024),
            (false, 64 * 1024),
            (true, 16 * 1024),
            (true, 64 * 1024),
            (true, 256 * 1024),
        ] {
            tls_throughput(&pki, buffered, read_buf).await;
        }
        whole_path(&pki).await;
    });
}
