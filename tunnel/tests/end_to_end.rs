//! Client -> agent stand-in -> mTLS tunnel -> gateway stand-in -> upstream,
//! all on 127.0.0.1, built from the library's public API.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rustls::HandshakeKind;
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
    let pool = pool(&pki, gateway, 2);

    // Client talks first, half-closes, then reads the whole answer.
    let agent = start_agent(pool.clone(), request("echo", 7)).await;
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
    let agent = start_agent(pool, request("banner", 25)).await;
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
    let pool = pool(&pki, gateway, 1);

    // Not exported at all, and exported but nothing listening.
    for req in [request("unknown", 80), request("dead", 80)] {
        let agent = start_agent(pool.clone(), req).await;
        let mut client = TcpStream::connect(agent).await.unwrap();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let took = tokio::time::timeout(Duration::from_secs(5), time_to_close(client))
            .await
            .expect("a refused connection must close, not hang");
        assert!(took < Duration::from_secs(1), "took {took:?}");
    }
}

#[tokio::test]
async fn pool_refills_with_resumed_sessions() {
    let pki = pki();
    let gateway = start_gateway(&pki, HashMap::new()).await;
    let pool = pool(&pki, gateway, 1);

    let wait_warm = || async {
        for _ in 0..200 {
            if pool.warm_count() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pool did not refill");
    };
    wait_warm().await;
    // Give the gateway's session tickets time to arrive on the warm one.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let first = pool.get().await.unwrap();
    assert_eq!(
        first.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    wait_warm().await;
    let second = pool.get().await.unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
}
