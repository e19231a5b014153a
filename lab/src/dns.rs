//! The cluster DNS server of one lab cluster (the lab's CoreDNS): UDP and
//! TCP on `<api address>:53` in the WAN netns, authoritative for
//! `cluster.local`, answering from Services and EndpointSlices kept by
//! reflectors. It never forwards: names outside the domain are REFUSED.

mod answer;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

use crate::endpointslices::watch;
use crate::plan::{CLUSTER_DOMAIN, ClusterPlan};
use answer::{Catalog, Target};

/// DNS port.
const PORT: u16 = 53;
/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest UDP response to a client that did not offer EDNS.
const PLAIN_UDP_LIMIT: usize = 512;

/// Serves cluster DNS for `cluster` until the task is dropped or a socket
/// fails.
pub async fn run(client: Client, cluster: ClusterPlan) -> anyhow::Result<()> {
    // The server reads the caches on demand; nobody waits on changes.
    let changed = Arc::new(Notify::new());
    let services = watch::reflect(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
        "Service",
    );
    let slices = watch::reflect(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
        changed,
        "EndpointSlice",
    );
    let server = Arc::new(Server {
        domain: Name::from_ascii(format!("{CLUSTER_DOMAIN}.")).context("cluster domain")?,
        catalog: StoreCatalog {
            services: services.clone(),
            slices: slices.clone(),
        },
        ready: AtomicBool::new(false),
    });
    let address = SocketAddr::from((cluster.api_addr(), PORT));
    let udp = UdpSocket::bind(address)
        .await
        .with_context(|| format!("binding DNS UDP {address}"))?;
    let tcp = TcpListener::bind(address)
        .await
        .with_context(|| format!("binding DNS TCP {address}"))?;
    tracing::info!(cluster = %cluster.name, %address, "DNS server listening");

    let readiness = {
        let server = server.clone();
        async move {
            services.wait_until_ready().await.context("Service cache")?;
            slices
                .wait_until_ready()
                .await
                .context("EndpointSlice cache")?;
            server.ready.store(true, Ordering::Release);
            tracing::info!("DNS caches synced; answering");
            std::future::pending::<anyhow::Result<()>>().await
        }
    };
    tokio::try_join!(
        readiness,
        serve_udp(server.clone(), udp),
        serve_tcp(server, tcp)
    )
    .map(|_| ())
}

/// The shared state of the UDP and TCP servers.
struct Server {
    domain: Name,
    catalog: StoreCatalog,
    /// False until the caches have listed everything once; until then every
    /// query gets SERVFAIL rather than a wrong NXDOMAIN.
    ready: AtomicBool,
}

impl Server {
    /// The encoded response to the encoded `request`, at most `limit` bytes
    /// (truncated and flagged TC beyond). `None` for undecodable garbage.
    fn respond(&self, request: &[u8], peer: SocketAddr, limit: Option<usize>) -> Option<Vec<u8>> {
        let request = match Message::from_vec(request) {
            Ok(message) => message,
            Err(error) => {
                tracing::debug!(%peer, %error, "undecodable DNS message");
                let id = u16::from_be_bytes([*request.first()?, *request.get(1)?]);
                let reply =
                    Message::error_msg(id, hickory_proto::op::OpCode::Query, ResponseCode::FormErr);
                return reply.to_vec().ok();
            }
        };
        let response = if self.ready.load(Ordering::Acquire) {
            answer::answer(&request, &self.domain, &self.catalog)
        } else {
            Message::error_msg(request.id, request.op_code, ResponseCode::ServFail)
        };
        if let Some(query) = request.queries.first() {
            tracing::debug!(%peer, name = %query.name(), query_type = %query.query_type(), code = %response.response_code, answers = response.answers.len(), "DNS query");
        }
        let bytes = match response.to_vec() {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot encode DNS response");
                return Message::error_msg(request.id, request.op_code, ResponseCode::ServFail)
                    .to_vec()
                    .ok();
            }
        };
        let limit = limit.map(|plain| {
            request
                .edns
                .as_ref()
                .map_or(plain, |e| usize::from(e.max_payload()).max(plain))
        });
        match limit {
            Some(limit) if bytes.len() > limit => response.truncate().to_vec().ok(),
            _ => Some(bytes),
        }
    }
}

async fn serve_udp(server: Arc<Server>, socket: UdpSocket) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, peer) = socket
            .recv_from(&mut buf)
            .await
            .context("receiving DNS over UDP")?;
        if let Some(reply) = server.respond(&buf[..len], peer, Some(PLAIN_UDP_LIMIT))
            && let Err(error) = socket.send_to(&reply, peer).await
        {
            tracing::debug!(%peer, %error, "cannot send DNS reply");
        }
    }
}

async fn serve_tcp(server: Arc<Server>, listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("accepting DNS over TCP")?;
        let server = server.clone();
        tokio::spawn(async move {
            if let Err(error) = serve_tcp_connection(&server, stream, peer).await {
                tracing::debug!(%peer, error = format!("{error:#}"), "DNS TCP connection ended");
            }
        });
    }
}

/// Answers length-prefixed queries on one connection until it closes or
/// stays idle for [`TCP_IDLE`].
async fn serve_tcp_connection(
    server: &Server,
    mut stream: TcpStream,
    peer: SocketAddr,
) -> anyhow::Result<()> {
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
            Err(_) => return Ok(()),
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(result) => result.context("reading length")?,
        };
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut request))
            .await
            .context("query timed out")?
            .context("reading query")?;
        let Some(reply) = server.respond(&request, peer, None) else {
            return Ok(());
        };
        let reply_len = u16::try_from(reply.len()).context("response longer than 64 KiB")?;
        let mut framed = reply_len.to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        stream
            .write_all(&framed)
            .await
            .context("writing response")?;
    }
}

/// The Services and EndpointSlices the reflectors hold.
struct StoreCatalog {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
}

impl Catalog for StoreCatalog {
    fn service(&self, namespace: &str, name: &str) -> Option<Target> {
        let service = self.services.get(&ObjectRef::new(name).within(namespace))?;
        let spec = service.spec.as_ref()?;
        if spec.type_.as_deref() == Some("ExternalName") {
            let alias = spec.external_name.as_deref()?;
            return Name::from_ascii(alias)
                .ok()
                .map(|n| Target::ExternalName(Name::root().append_name(&n).unwrap_or(n)));
        }
        match spec.cluster_ip.as_deref() {
            Some("None") => Some(Target::Headless(self.ready_addresses(namespace, name))),
            Some(ip) => ip.parse().ok().map(Target::ClusterIp),
            None => None,
        }
    }

    fn has_namespace(&self, namespace: &str) -> bool {
        self.services
            .find(|s| s.namespace().as_deref() == Some(namespace))
            .is_some()
    }
}

impl StoreCatalog {
    /// Ready IPv4 endpoint addresses of Service `namespace/name`, sorted.
    fn ready_addresses(&self, namespace: &str, name: &str) -> Vec<Ipv4Addr> {
        let mut addresses: Vec<Ipv4Addr> = self
            .slices
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace) && s.address_type == "IPv4")
            .filter(|s| {
                s.labels()
                    .get("kubernetes.io/service-name")
                    .map(String::as_str)
                    == Some(name)
            })
            .flat_map(|s| s.endpoints.clone())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
            .filter_map(|e| e.addresses.first()?.parse().ok())
            .collect();
        addresses.sort();
        addresses.dedup();
        addresses
    }
}

#[cfg(test)]
mod tests;
