//! `mc-lab echo`: the built-in test server. HTTP answers every request with
//! a short text naming the pod and cluster; raw TCP echoes bytes back. Both
//! keep half-close: the server finishes its side after the client's EOF.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Ports and options of the echo server.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    /// HTTP port (0 disables).
    pub http_port: u16,
    /// Raw TCP echo port (0 disables).
    pub tcp_port: u16,
    /// Line the TCP server sends first, before echoing.
    pub banner: Option<String>,
}

/// Who this server is, from the kubelet's environment.
fn identity() -> String {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| "-".into());
    format!(
        "pod={} namespace={} cluster={} ip={}",
        var("POD_NAME"),
        var("POD_NAMESPACE"),
        var("MC_LAB_CLUSTER"),
        var("POD_IP")
    )
}

/// Serves until the process is killed.
pub async fn run(config: EchoConfig) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    if config.http_port != 0 {
        let listener = TcpListener::bind(("0.0.0.0", config.http_port))
            .await
            .with_context(|| format!("cannot listen on HTTP port {}", config.http_port))?;
        tasks.spawn(accept(listener, None, true));
    }
    if config.tcp_port != 0 {
        let listener = TcpListener::bind(("0.0.0.0", config.tcp_port))
            .await
            .with_context(|| format!("cannot listen on TCP port {}", config.tcp_port))?;
        tasks.spawn(accept(listener, config.banner.clone(), false));
    }
    tracing::info!(http = config.http_port, tcp = config.tcp_port, who = %identity(), "echo server listening");
    match tasks.join_next().await {
        Some(result) => result.context("an echo listener panicked")?,
        None => Ok(()),
    }
}

async fn accept(listener: TcpListener, banner: Option<String>, http: bool) -> Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("accept")?;
        let banner = banner.clone();
        tokio::spawn(async move {
            let result = if http {
                serve_http(stream).await
            } else {
                serve_tcp(stream, banner).await
            };
            if let Err(error) = result {
                tracing::debug!(%peer, error = format!("{error:#}"), "echo connection ended with an error");
            }
        });
    }
}

async fn serve_tcp(mut stream: TcpStream, banner: Option<String>) -> Result<()> {
    if let Some(banner) = banner {
        stream
            .write_all(format!("{banner}\n").as_bytes())
            .await
            .context("sending the banner")?;
    }
    let (mut reader, mut writer) = stream.split();
    tokio::io::copy(&mut reader, &mut writer)
        .await
        .context("echoing")?;
    writer.shutdown().await.context("closing our side")?;
    Ok(())
}

async fn serve_http(mut stream: TcpStream) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.context("reading the request")?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 64 * 1024 {
            anyhow::bail!("request head too large");
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut first = text.lines().next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or("GET").to_string();
    let path = first.next().unwrap_or("/").to_string();
    let body = format!("{} method={method} path={path}\n", identity());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if method == "HEAD" { "" } else { body.as_str() }
    );
    stream
        .write_all(response.as_bytes())
        .await
        .context("sending the response")?;
    stream.shutdown().await.context("closing our side")?;
    // Let the client finish (and see our EOF) before the socket closes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(())
}

/// `mc-lab tcp-client`: connects to `addr`, sends `send`, closes its
/// sending side, prints everything received until the server closes.
/// Fails when the connection cannot be made within `timeout`.
pub async fn client(addr: &str, send: &str, timeout: std::time::Duration) -> Result<()> {
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let send = send.replace("\\r", "\r").replace("\\n", "\n");
    stream.write_all(send.as_bytes()).await.context("sending")?;
    stream.shutdown().await.context("closing our side")?;
    let mut received = Vec::new();
    tokio::time::timeout(timeout, stream.read_to_end(&mut received))
        .await
        .context("the server did not finish in time")?
        .context("receiving")?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&received)
        .context("writing to stdout")?;
    Ok(())
}

/// `mc-lab bulk`: streams `bytes` pseudo-random bytes to an echo server at
/// `addr` while reading the echo back, half-closes, and checks that exactly
/// the same bytes came back, in order. Prints the counts; fails on any
/// difference, a short answer, or no progress for `timeout`. With `rate`,
/// sends at most that many bytes per second.
pub async fn bulk(
    addr: &str,
    bytes: u64,
    timeout: std::time::Duration,
    rate: Option<u64>,
) -> Result<()> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let started = std::time::Instant::now();
    let send = async move {
        let mut source = Pattern::new();
        // Paced sends go in chunks of a tenth of a second's worth.
        let chunk = rate.map_or(64 * 1024, |r| (r / 10).clamp(1, 64 * 1024));
        let mut buf = vec![0u8; usize::try_from(chunk).unwrap_or(64 * 1024)];
        let mut left = bytes;
        while left > 0 {
            if let Some(rate) = rate.filter(|r| *r > 0) {
                let sent = bytes - left;
                let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until((started + due).into()).await;
            }
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            source.fill(&mut buf[..n]);
            tokio::time::timeout(timeout, writer.write_all(&buf[..n]))
                .await
                .context("sending stalled")?
                .context("sending")?;
            left -= n as u64;
        }
        writer.shutdown().await.context("half-closing")?;
        anyhow::Ok(())
    };
    let receive = async move {
        let mut expected = Pattern::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        loop {
            let n = tokio::time::timeout(timeout, reader.read(&mut buf))
                .await
                .context("receiving stalled")?
                .context("receiving")?;
            if n == 0 {
                break;
            }
            expected.fill(&mut want[..n]);
            if buf[..n] != want[..n] {
                anyhow::bail!(
                    "the echo differs from what was sent within bytes {received}..{}",
                    received + n as u64
                );
            }
            received += n as u64;
        }
        anyhow::Ok(received)
    };
    let ((), received) = tokio::try_join!(send, receive)?;
    if received != bytes {
        anyhow::bail!("sent {bytes} bytes but {received} came back");
    }
    let secs = started.elapsed().as_secs_f64();
    println!("ok sent={bytes} received={received} seconds={secs:.3}");
    Ok(())
}

/// A reproducible byte stream (xorshift64*): the sender and the checker
/// generate the same bytes without holding them in memory, whatever sizes
/// their reads and writes come in.
struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    fn new() -> Pattern {
        Pattern {
            state: 0x9E37_79B9_7F4A_7C15,
            word: [0; 8],
            used: 8,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        // Bytes left over from the last word first, then whole words, then
        // a tail that leaves the rest of its word for the next call.
        let left = (8 - self.used).min(out.len());
        out[..left].copy_from_slice(&self.word[self.used..self.used + left]);
        self.used += left;
        let mut words = out[left..].chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&self.next_word());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_word();
            tail.copy_from_slice(&self.word[..tail.len()]);
            self.used = tail.len();
        }
    }

    fn next_word(&mut self) -> [u8; 8] {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn the_pattern_is_the_same_whatever_the_chunk_sizes() {
        let mut whole = vec![0u8; 1000];
        Pattern::new().fill(&mut whole);
        let mut pieces = Pattern::new();
        let mut joined = Vec::new();
        for size in [1, 7, 8, 13, 64, 907] {
            let mut chunk = vec![0u8; size];
            pieces.fill(&mut chunk);
            joined.extend(chunk);
        }
        assert_eq!(joined, whole);
    }
}
