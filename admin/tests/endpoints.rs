//! The admin server over real HTTP on 127.0.0.1.

use mc_admin::{AdminState, ProxyMetrics, Readiness, Side, serve_on};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Minimal HTTP/1.1 GET: returns the status code and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[tokio::test]
async fn live_ready_and_metrics() {
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(Side::Gateway, &mut registry);
    let readiness = Readiness::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_on(
        listener,
        AdminState::new(registry, readiness.clone()),
    ));

    assert_eq!(get(addr, "/live").await.0, 200);
    assert_eq!(get(addr, "/ready").await.0, 503);
    readiness.set(true);
    assert_eq!(get(addr, "/ready").await.0, 200);
    readiness.set(false);
    assert_eq!(get(addr, "/ready").await.0, 503);
    assert_eq!(get(addr, "/nope").await.0, 404);

    let record = metrics.open("west", "shop", "backend");
    record.connected(std::time::Duration::from_micros(800));
    record.close(10, 20);
    // prometheus-client leaves a family out until it has a series.
    metrics
        .open("west", "shop", "backend")
        .fail("connect_refused", 0, 0);
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for family in [
        "# TYPE mc_connections_opened counter",
        "# TYPE mc_connections_closed counter",
        "# TYPE mc_connections_failed counter",
        "# TYPE mc_connections_active gauge",
        "# TYPE mc_bytes_in counter",
        "# TYPE mc_bytes_out counter",
        "# TYPE mc_connect_latency_seconds histogram",
    ] {
        assert!(body.contains(family), "missing {family} in\n{body}");
    }
    assert!(body.contains(
        r#"mc_bytes_out_total{src_cluster="west",target_namespace="shop",target_service="backend"} 20"#
    ));
    assert!(body.ends_with("# EOF\n"));
    server.abort();
}
