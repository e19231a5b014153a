//! Client -> agent stand-in -> mTLS tunnel -> gateway stand-in -> upstream,
//! all on 127.0.0.1, built from the library's public API.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn bytes_flow_both_ways_with_half_close() {
    let pki = pki();
    let echo = start_echo().await;
    let (banner, mut banner_rx) = start_banner(b"220 ready\r\n").await;
    let routes = HashMap::from([
        (("echo".to_owned(), 7), echo),
        (("banner".to_owned(), 25), banner),
    ]);
    let gateway = start_gateway(&pki, routes).await;
    let tunnel = tunnel_client(&pki, gateway.addr);

    // Client talks first, half-closes, then reads the whole answer.
    let agent = start_agent(tunnel.clone(), request("echo", 7)).await;
    let mut client = TcpStream::connect(agent).await.unwrap();
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = client.split();
    let send = async {
        w.write_all(&payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut echoed = Vec::new();
    let receive = r.read_to_end(&mut echoed);
    let ((), received) = tokio::join!(send, receive);
    received.unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echoed bytes differ");

    // Server talks first and half-closes; the client answers afterwards.
    let agent = start_agent(tunnel, request("banner", 25)).await;
    let mut client = TcpStream::connect(agent).await.unwrap();
    let mut banner_bytes = Vec::new();
    client.read_to_end(&mut banner_bytes).await.unwrap();
    assert_eq!(banner_bytes, b"220 ready\r\n");
    client.write_all(b"QUIT\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), banner_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, b"QUIT\r\n");
}

#[tokio::test]
async fn a_stalled_upstream_stalls_the_client_without_unbounded_buffering() {
    let pki = pki();
    let (sink, go, received) = start_stalled_reader().await;
    let gateway = start_gateway(&pki, HashMap::from([(("sink".to_owned(), 9), sink)])).await;
    let agent = start_agent(tunnel_client(&pki, gateway.addr), request("sink", 9)).await;
    let mut client = TcpStream::connect(agent).await.unwrap();

    // Nobody reads at the far end: the client's writes must stop once the
    // sockets' buffers, one stream window and a chunk per proxy are full.
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0usize;
    while let Ok(Ok(())) =
        tokio::time::timeout(Duration::from_millis(500), client.write_all(&chunk)).await
    {
        written += chunk.len();
        assert!(
            written < 64 << 20,
            "64 MiB went in while nothing was read: the tunnel buffers without bound"
        );
    }

    // Once the upstream reads, what was written (and the rest) arrives.
    go.send(()).unwrap();
    client.write_all(&chunk).await.unwrap();
    client.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), received)
        .await
        .unwrap()
        .unwrap();
    assert!(
        got >= written + chunk.len(),
        "{got} bytes arrived of at least {}",
        written + chunk.len()
    );
}

/// Reads until the connection ends; returns how long that took.
async fn time_to_close(mut client: TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    match client.read(&mut buf).await {
        Ok(0) | Err(_) => start.elapsed(),
        Ok(_) => panic!("a refused target must not send bytes"),
    }
}

#[tokio::test]
async fn refused_targets_close_the_client_quickly() {
    let pki = pki();
    let dead = closed_port().await;
    let gateway = start_gateway(&pki, HashMap::from([(("dead".to_owned(), 80), dead)])).await;
    let tunnel = tunnel_client(&pki, gateway.addr);

    // Not exported at all, and exported but nothing listening.
    for req in [request("unknown", 80), request("dead", 80)] {
        let agent = start_agent(tunnel.clone(), req).await;
        let mut client = TcpStream::connect(agent).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let took = tokio::time::timeout(Duration::from_secs(5), time_to_close(client))
            .await
            .expect("a refused connection must close, not hang");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
}

#[tokio::test]
async fn many_connections_share_few_tls_connections() {
    let pki = pki();
    let echo = start_echo().await;
    let gateway = start_gateway(&pki, HashMap::from([(("echo".to_owned(), 7), echo)])).await;
    let tunnel = tunnel_client(&pki, gateway.addr);
    let agent = start_agent(tunnel, request("echo", 7)).await;

    let clients: Vec<_> = (0..50u8)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = TcpStream::connect(agent).await.unwrap();
                client.write_all(&[i; 1000]).await.unwrap();
                client.shutdown().await.unwrap();
                let mut got = Vec::new();
                client.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, vec![i; 1000]);
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let tls = gateway
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    let expected = mc_tunnel::MuxConfig::default().connections;
    assert_eq!(
        tls, expected,
        "50 proxied connections used {tls} TLS connections"
    );
}

#[tokio::test]
async fn draining_gateway_keeps_open_streams_and_new_ones_reconnect() {
    let pki = pki();
    let echo = start_echo().await;
    let gateway = start_gateway(&pki, HashMap::from([(("echo".to_owned(), 7), echo)])).await;
    let tunnel = tunnel_client(&pki, gateway.addr);
    let agent = start_agent(tunnel, request("echo", 7)).await;

    let mut open = TcpStream::connect(agent).await.unwrap();
    let mut buf = [0u8; 5];
    open.write_all(b"first").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    let before = gateway
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);

    gateway.drain();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The stream opened before the drain still works, both ways.
    open.write_all(b"later").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"later");
    open.shutdown().await.unwrap();
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    // New proxied connections go over new tunnel connections.
    for _ in 0..4 {
        let mut client = TcpStream::connect(agent).await.unwrap();
        client.write_all(b"again").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"again");
    }
    let after = gateway
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(after > before, "no new tunnel connection after the drain");
}

#[tokio::test]
async fn unreachable_gateway_fails_fast_and_backs_off() {
    let pki = pki();
    let nowhere = closed_port().await;
    let tunnel = tunnel_client(&pki, nowhere);
    let agent = start_agent(tunnel.clone(), request("echo", 7)).await;
    for _ in 0..3 {
        let client = TcpStream::connect(agent).await.unwrap();
        let took = tokio::time::timeout(Duration::from_secs(2), time_to_close(client))
            .await
            .expect("a client must not hang when the gateway is down");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
    let err = tunnel.open().await.unwrap_err();
    assert!(
        matches!(err, mc_tunnel::ConnectError::Backoff { .. }),
        "expected backoff, got {err}"
    );
}
