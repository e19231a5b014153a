//! The server over real UDP and TCP sockets on loopback, answering from
//! reflector caches fed with objects.

use hickory_proto::op::{Edns, Query};
use hickory_proto::rr::{RData, RecordType};
use kube::runtime::reflector::{self, store::Writer};
use serde_json::json;

use super::*;

fn apply<K>(writer: &mut Writer<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Default,
{
    let object: K = serde_json::from_value(value).expect("valid object");
    writer.apply_watcher_event(&watcher::Event::Apply(object));
}

/// A server whose caches hold `web` (ClusterIP) and `many` (headless, 100
/// ready endpoints and one not ready) in namespace `shop`.
async fn start() -> (SocketAddr, SocketAddr) {
    let (services, mut service_writer) = reflector::store::<Service>();
    let (slices, mut slice_writer) = reflector::store::<EndpointSlice>();
    apply(
        &mut service_writer,
        json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"clusterIP": "10.100.0.20"}}),
    );
    apply(
        &mut service_writer,
        json!({"metadata": {"name": "many", "namespace": "shop"}, "spec": {"clusterIP": "None"}}),
    );
    let mut endpoints: Vec<serde_json::Value> = (0..100)
        .map(
            |i| json!({"addresses": [format!("10.10.1.{}", i + 2)], "conditions": {"ready": true}}),
        )
        .collect();
    endpoints.push(json!({"addresses": ["10.10.2.2"], "conditions": {"ready": false}}));
    apply(
        &mut slice_writer,
        json!({"metadata": {"name": "many-abcde", "namespace": "shop", "labels": {"kubernetes.io/service-name": "many"}},
               "addressType": "IPv4", "endpoints": endpoints}),
    );
    let server = Arc::new(Server {
        domain: Name::from_ascii("cluster.local.").expect("domain"),
        catalog: StoreCatalog { services, slices },
        ready: AtomicBool::new(true),
    });
    let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
    let addresses = (
        udp.local_addr().expect("udp addr"),
        tcp.local_addr().expect("tcp addr"),
    );
    tokio::spawn(serve_udp(server.clone(), udp));
    tokio::spawn(serve_tcp(server, tcp));
    addresses
}

fn query(name: &str, edns: bool) -> Vec<u8> {
    let mut message = Message::query();
    message.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    if edns {
        let mut opt = Edns::new();
        opt.set_max_payload(4096);
        message.set_edns(opt);
    }
    message.to_vec().expect("encode")
}

async fn over_udp(server: SocketAddr, request: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    socket.send_to(request, server).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
        .await
        .expect("reply in time")
        .expect("receive");
    Message::from_vec(&buf[..len]).expect("decode reply")
}

async fn over_tcp(server: SocketAddr, request: &[u8]) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let mut framed = u16::try_from(request.len())
        .expect("short")
        .to_be_bytes()
        .to_vec();
    framed.extend_from_slice(request);
    stream.write_all(&framed).await.expect("write");
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("read length");
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await.expect("read reply");
    Message::from_vec(&reply).expect("decode reply")
}

fn a_records(message: &Message) -> usize {
    message
        .answers
        .iter()
        .filter(|r| matches!(r.data, RData::A(_)))
        .count()
}

#[tokio::test]
async fn answers_over_udp_and_tcp_from_the_caches() {
    let (udp, tcp) = start().await;
    let request = query("web.shop.svc.cluster.local.", false);
    for reply in [over_udp(udp, &request).await, over_tcp(tcp, &request).await] {
        assert_eq!(reply.response_code, ResponseCode::NoError);
        assert_eq!(
            reply.answers.first().map(|r| r.data.clone()),
            Some(RData::A(
                "10.100.0.20".parse::<Ipv4Addr>().expect("ip").into()
            ))
        );
    }
    let unknown = over_udp(udp, &query("nope.shop.svc.cluster.local.", false)).await;
    assert_eq!(unknown.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn large_answers_are_truncated_over_plain_udp_and_complete_over_tcp_or_edns() {
    let (udp, tcp) = start().await;
    let plain = over_udp(udp, &query("many.shop.svc.cluster.local.", false)).await;
    assert!(plain.truncation, "100 addresses do not fit in 512 bytes");
    let full = over_tcp(tcp, &query("many.shop.svc.cluster.local.", false)).await;
    assert!(!full.truncation);
    assert_eq!(a_records(&full), 100, "ready endpoints only");
    let edns = over_udp(udp, &query("many.shop.svc.cluster.local.", true)).await;
    assert_eq!(a_records(&edns), 100);
}

#[tokio::test]
async fn garbage_gets_a_format_error_and_the_server_keeps_serving() {
    let (udp, _) = start().await;
    let reply = over_udp(udp, &[0x12, 0x34, 0xff]).await;
    assert_eq!(
        (reply.id, reply.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    let after = over_udp(udp, &query("web.shop.svc.cluster.local.", false)).await;
    assert_eq!(after.answers.len(), 1);
}
