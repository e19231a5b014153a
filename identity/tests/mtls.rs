//! Real mutual-TLS connections on 127.0.0.1 with generated certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mc_identity::{
    CertSource, FileCertSource, Identity, IdentityPaths, SharedIdentity, SpiffeId, TrustAnchor,
    client_config, peer_spiffe_id, server_config,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, HandshakeKind, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "mc.test";
const HOUR: Duration = Duration::from_secs(3600);

fn identity(anchor: &TrustAnchor, sa: &str) -> Arc<SharedIdentity> {
    let leaf = anchor.issue("mc-system", sa, HOUR).unwrap();
    let identity = Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, anchor.cert_pem()).unwrap();
    Arc::new(SharedIdentity::new(identity))
}

fn gateway_id() -> SpiffeId {
    SpiffeId::system(TD, "mc-gateway").unwrap()
}

/// A server that accepts connections and hands each TLS stream (or the
/// handshake error) to the test through a channel.
async fn start_server(
    config: Arc<ServerConfig>,
) -> (
    SocketAddr,
    tokio::sync::mpsc::Receiver<std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let result = acceptor.accept(tcp).await;
            if tx.send(result).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

async fn connect(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    TlsConnector::from(config).connect(name, tcp).await
}

#[tokio::test]
async fn good_pair_talks_and_half_closes_both_ways() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    let (addr, mut accepted) =
        start_server(server_config(identity(&anchor, "mc-gateway")).unwrap()).await;
    let client_cfg = client_config(identity(&anchor, "mc-node-agent"), gateway_id()).unwrap();

    let mut client = connect(Arc::clone(&client_cfg), addr).await.unwrap();
    let mut server = accepted.recv().await.unwrap().unwrap();
    assert_eq!(
        peer_spiffe_id(server.get_ref().1).unwrap(),
        SpiffeId::system(TD, "mc-node-agent").unwrap()
    );
    assert_eq!(peer_spiffe_id(client.get_ref().1).unwrap(), gateway_id());
    assert_eq!(
        server.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // Client half-closes first; the server can still answer afterwards.
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"request");
    server.write_all(b"response").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"response");

    // Server half-closes first; the client can still send afterwards.
    let mut client = connect(client_cfg, addr).await.unwrap();
    let mut server = accepted.recv().await.unwrap().unwrap();
    server.write_all(b"banner").await.unwrap();
    server.shutdown().await.unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"banner");
    client.write_all(b"late words").await.unwrap();
    client.shutdown().await.unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"late words");
}

#[tokio::test]
async fn client_refuses_a_gateway_with_another_identity() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    // Same anchor, but the server is not the gateway the Link names.
    let (addr, mut accepted) =
        start_server(server_config(identity(&anchor, "impostor")).unwrap()).await;
    let client_cfg = client_config(identity(&anchor, "mc-node-agent"), gateway_id()).unwrap();
    let err = connect(client_cfg, addr).await.unwrap_err();
    assert!(
        err.to_string().contains("sa/impostor"),
        "unexpected error: {err}"
    );
    assert!(accepted.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn gateway_refuses_a_client_without_certificate() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    let (addr, mut accepted) =
        start_server(server_config(identity(&anchor, "mc-gateway")).unwrap()).await;
    // A client that verifies the gateway properly but has no certificate.
    let verifier =
        mc_identity::GatewayVerifier::new(identity(&anchor, "mc-node-agent"), gateway_id());
    let anonymous = ClientConfig::builder_with_provider(mc_identity::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // In TLS 1.3 the client finishes first; the refusal shows on the server
    // and as an alert on the client's first read.
    let client = connect(Arc::new(anonymous), addr).await;
    let server_err = accepted.recv().await.unwrap().unwrap_err();
    assert!(
        server_err
            .to_string()
            .to_lowercase()
            .contains("certificate"),
        "unexpected error: {server_err}"
    );
    if let Ok(mut client) = client {
        let mut buf = [0u8; 1];
        assert!(client.read(&mut buf).await.is_err());
    }
}

/// The anchors share a subject name, so webpki finds the "issuer" and then
/// fails on its signature; with distinct names it reports an unknown issuer.
fn is_untrusted(err: &std::io::Error) -> bool {
    let text = err.to_string();
    text.contains("BadSignature") || text.contains("UnknownIssuer")
}

#[tokio::test]
async fn certificates_from_another_anchor_are_refused_both_ways() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    let rogue = TrustAnchor::generate(TD).unwrap();
    let (addr, mut accepted) =
        start_server(server_config(identity(&anchor, "mc-gateway")).unwrap()).await;

    // A client whose leaf comes from the rogue anchor (it trusts the real
    // anchor too, so only the gateway's check can stop it).
    let leaf = rogue.issue("mc-system", "mc-node-agent", HOUR).unwrap();
    let bundle = format!("{}{}", rogue.cert_pem(), anchor.cert_pem());
    let rogue_client = Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, &bundle).unwrap();
    let cfg = client_config(Arc::new(SharedIdentity::new(rogue_client)), gateway_id()).unwrap();
    let client = connect(cfg, addr).await;
    let server_err = accepted.recv().await.unwrap().unwrap_err();
    assert!(is_untrusted(&server_err), "unexpected error: {server_err}");
    if let Ok(mut client) = client {
        let mut buf = [0u8; 1];
        assert!(client.read(&mut buf).await.is_err());
    }

    // A gateway with the right ID but from the rogue anchor.
    let (rogue_addr, _rogue_accepted) =
        start_server(server_config(identity(&rogue, "mc-gateway")).unwrap()).await;
    let cfg = client_config(identity(&anchor, "mc-node-agent"), gateway_id()).unwrap();
    let err = connect(cfg, rogue_addr).await.unwrap_err();
    assert!(is_untrusted(&err), "unexpected error: {err}");
}

#[tokio::test]
async fn replacing_the_identity_rotates_without_a_new_config() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    let (addr, mut accepted) =
        start_server(server_config(identity(&anchor, "mc-gateway")).unwrap()).await;
    let agent = identity(&anchor, "mc-node-agent");
    let cfg = client_config(Arc::clone(&agent) as Arc<dyn CertSource>, gateway_id()).unwrap();
    let old_serial = agent.current().certified_key().cert[0].clone();

    let mut first = connect(Arc::clone(&cfg), addr).await.unwrap();
    let mut server = accepted.recv().await.unwrap().unwrap();
    assert_eq!(
        server.get_ref().1.peer_certificates().unwrap()[0],
        old_serial
    );
    // Anything the server sends after the handshake (tickets, if it issued
    // any) has reached the client before the next connection.
    server.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    first.read_exact(&mut byte).await.unwrap();

    let renewed = anchor.issue("mc-system", "mc-node-agent", HOUR).unwrap();
    agent.replace(
        Identity::from_pem(&renewed.cert_pem, &renewed.key_pem, anchor.cert_pem()).unwrap(),
    );
    // The same gateway again: a full handshake with the renewed
    // certificate (a resumed session would have kept the old one).
    let second = connect(cfg, addr).await.unwrap();
    let server = accepted.recv().await.unwrap().unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    let presented = &server.get_ref().1.peer_certificates().unwrap()[0];
    assert_ne!(presented, &old_serial);
    assert_eq!(presented, &agent.current().certified_key().cert[0]);
}

#[tokio::test]
async fn identity_files_round_trip_through_the_file_source() {
    let dir = tempfile::tempdir().unwrap();
    let anchor = TrustAnchor::generate(TD).unwrap();
    anchor.write(dir.path()).unwrap();
    let reread = TrustAnchor::read(TD, dir.path()).unwrap();
    // The re-read anchor still issues leaves the original anchor accepts.
    reread
        .issue_to_dir("mc-system", "mc-gateway", HOUR, &dir.path().join("gw"))
        .unwrap();
    let paths = IdentityPaths::in_dir(&dir.path().join("gw"));
    let source = FileCertSource::load(paths.clone()).unwrap();
    assert_eq!(source.current().id(), &gateway_id());

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&paths.key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "key must not be readable by others");

    // A broken file on reload keeps the old identity.
    std::fs::write(&paths.cert_chain, "garbage").unwrap();
    assert!(source.reload().is_err());
    assert_eq!(source.current().id(), &gateway_id());
    // A new leaf on disk is picked up by reload.
    anchor
        .issue_to_dir("mc-system", "mc-gateway-2", HOUR, &dir.path().join("gw"))
        .unwrap();
    source.reload().unwrap();
    assert_eq!(
        source.current().id(),
        &SpiffeId::system(TD, "mc-gateway-2").unwrap()
    );
}

#[test]
fn inconsistent_material_is_refused_at_load() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    let other = TrustAnchor::generate(TD).unwrap();
    let a = anchor.issue("mc-system", "a", HOUR).unwrap();
    let b = anchor.issue("mc-system", "b", HOUR).unwrap();
    // Key of another leaf.
    assert!(Identity::from_pem(&a.cert_pem, &b.key_pem, anchor.cert_pem()).is_err());
    // Leaf not signed by the given anchors.
    assert!(Identity::from_pem(&a.cert_pem, &a.key_pem, other.cert_pem()).is_err());
    // Expired leaf (not_after is now, not_before five minutes ago).
    let expired = anchor.issue("mc-system", "a", Duration::ZERO).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(Identity::from_pem(&expired.cert_pem, &expired.key_pem, anchor.cert_pem()).is_err());
    // Renewal point is two thirds into the lifetime (5 min backdate + 1 h).
    let id = Identity::from_pem(&a.cert_pem, &a.key_pem, anchor.cert_pem()).unwrap();
    let lifetime = id.not_after().duration_since(id.not_before()).unwrap();
    assert_eq!(lifetime, HOUR + Duration::from_secs(300));
    assert_eq!(id.renew_at(), id.not_before() + lifetime * 2 / 3);
}

fn cluster_identity(issuer: &mc_identity::ClusterIssuer, sa: &str) -> Arc<SharedIdentity> {
    let id = SpiffeId::system(TD, sa).unwrap();
    let leaf = issuer.issue_leaf(&id, HOUR).unwrap();
    let identity = Identity::from_pem(&leaf.cert_pem, &leaf.key_pem, issuer.anchors_pem()).unwrap();
    Arc::new(SharedIdentity::new(identity))
}

#[tokio::test]
async fn an_agent_accepts_only_the_gateway_of_the_linked_cluster() {
    let anchor = TrustAnchor::generate(TD).unwrap();
    let east = anchor.issue_cluster_issuer("east", HOUR).unwrap();
    let north = anchor.issue_cluster_issuer("north", HOUR).unwrap();
    let west = anchor.issue_cluster_issuer("west", HOUR).unwrap();
    let agent = cluster_identity(&west, "mc-node-agent");
    let for_east =
        || mc_identity::cluster_client_config(agent.clone(), gateway_id(), "east").unwrap();

    let (addr, mut accepted) =
        start_server(server_config(cluster_identity(&east, "mc-gateway")).unwrap()).await;
    let mut stream = connect(for_east(), addr).await.expect("east's gateway");
    let mut server = accepted.recv().await.unwrap().unwrap();
    stream.write_all(b"x").await.unwrap();
    let mut byte = [0u8; 1];
    server.read_exact(&mut byte).await.unwrap();

    // Same trust anchor and SPIFFE ID, but another cluster's issuer: a
    // gateway of north must not be able to stand in for east's.
    let (north_addr, _north) =
        start_server(server_config(cluster_identity(&north, "mc-gateway")).unwrap()).await;
    let err = connect(for_east(), north_addr).await.unwrap_err();
    assert!(err.to_string().contains("cluster north"), "{err}");

    // A leaf the anchor signed directly names no cluster at all.
    let (direct_addr, _direct) =
        start_server(server_config(identity(&anchor, "mc-gateway")).unwrap()).await;
    let err = connect(for_east(), direct_addr).await.unwrap_err();
    assert!(err.to_string().contains("UnexpectedCluster"), "{err}");
}
