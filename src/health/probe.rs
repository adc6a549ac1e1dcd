//! `[health_probe]`: the answer a load balancer's health probe gets, following the HA role.
//!
//! The daemon decides after every state-machine step whether this node should get traffic
//! (active, takeover converged, not handing over or leaving, every tracked check healthy) and
//! calls [`HealthProbe::set`] *before* it carries out the step's actions, so the probe closes
//! before the node advertises that it steps down or hands over, and opens in the same turn as
//! the takeover converges.
//!
//! - TCP: the listening socket exists only while open. Closing drops it on the event loop's
//!   thread, so the kernel refuses new connections at once (a socket served by another task
//!   would close only when that task next ran). Its connections are accepted by the event loop
//!   and closed at once: the probe only needs the handshake.
//! - HTTP: always listening (in its own task); the answer is read from a flag the loop sets:
//!   `200` on the path while open, `503` while closed, `404` elsewhere.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::config::{HealthProbeConfig, ProbeProtocol};

/// HTTP probe connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 32;
/// A probe that sends no complete request within this is closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The responder and its state.
#[derive(Debug)]
pub struct HealthProbe {
    config: HealthProbeConfig,
    /// TCP: the listener while open. HTTP: unused (the server task holds its own).
    listener: Option<TcpListener>,
    /// Whether the node should get traffic now.
    open: Arc<AtomicBool>,
    /// The HTTP server task.
    server: Option<JoinHandle<()>>,
    /// Why the TCP port could not be opened when it should have been.
    warning: Option<String>,
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// A listening socket with `SO_REUSEADDR`, so that reopening right after closing is not
/// refused by connections of the last open period still in `TIME_WAIT` (a port another socket
/// listens on is still refused).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

impl HealthProbe {
    /// Bind the probe's port (a TCP probe closes it again at once: the node starts closed).
    /// A port in use, or an address not on this host, is an error naming the field.
    pub fn start(config: &HealthProbeConfig) -> Result<HealthProbe, String> {
        let listener = listen(config.listen).map_err(|e| {
            format!(
                "health_probe.listen {}: {e}; pick a free port (`ss -ltnp` shows who holds it) or an address of this host",
                config.listen
            )
        })?;
        let open = Arc::new(AtomicBool::new(false));
        let server = match config.protocol {
            ProbeProtocol::Tcp => None,
            ProbeProtocol::Http => Some(tokio::spawn(serve_http(
                listener,
                open.clone(),
                config.http_path().to_string(),
            ))),
        };
        Ok(HealthProbe {
            config: config.clone(),
            listener: None,
            open,
            server,
            warning: None,
        })
    }

    /// Whether the probe answers "healthy" now.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// Why the probe is not answering although it should, if so.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// `listen` and protocol, for status.
    pub fn describe(&self) -> String {
        match self.config.protocol {
            ProbeProtocol::Tcp => format!("tcp {}", self.config.listen),
            ProbeProtocol::Http => {
                format!("http {}{}", self.config.listen, self.config.http_path())
            }
        }
    }

    /// Open or close the probe now; true when it changed. A TCP port that cannot be opened
    /// (taken meanwhile) is retried on the next call and reported by [`Self::warning`].
    pub fn set(&mut self, open: bool) -> bool {
        let was = self.is_open();
        if self.config.protocol == ProbeProtocol::Tcp {
            if !open {
                self.listener = None;
                self.warning = None;
            } else if self.listener.is_none() {
                match listen(self.config.listen) {
                    Ok(listener) => {
                        self.listener = Some(listener);
                        self.warning = None;
                    }
                    Err(e) => {
                        self.warning = Some(format!(
                            "the health probe cannot open {}: {e}; the load balancer sees this node down",
                            self.config.listen
                        ));
                        return false;
                    }
                }
            }
        }
        self.open.store(open, Ordering::SeqCst);
        was != open
    }

    /// The next TCP probe connection (pending forever while closed, or in HTTP mode).
    pub async fn accept(&self) -> Option<TcpStream> {
        match &self.listener {
            Some(listener) => listener.accept().await.ok().map(|(stream, _)| stream),
            None => std::future::pending().await,
        }
    }
}

/// Serve the HTTP probe until the task is aborted.
async fn serve_http(listener: TcpListener, open: Arc<AtomicBool>, path: String) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let path: Arc<str> = Arc::from(path);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors: wait rather than spin; the probe fails meanwhile.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (open, path) = (open.clone(), path.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: Request<Incoming>| {
                let healthy = open.load(Ordering::SeqCst);
                let on_path = req.uri().path() == &*path;
                async move { Ok::<_, Infallible>(answer(on_path, healthy)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, connection).await;
        });
    }
}

fn answer(on_path: bool, healthy: bool) -> Response<Full<Bytes>> {
    let (code, body) = match (on_path, healthy) {
        (true, true) => (StatusCode::OK, "active\n"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "not active\n"),
        (false, _) => (StatusCode::NOT_FOUND, "not the health probe path\n"),
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn config(text: &str) -> HealthProbeConfig {
        toml::from_str(text).expect("probe config")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    }

    async fn http_status(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("read");
        text.lines().next().unwrap_or_default().to_string()
    }

    #[tokio::test]
    async fn tcp_probe_listens_only_while_open() {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut probe =
            HealthProbe::start(&config(&format!("listen = \"{addr}\""))).expect("start");
        assert!(!probe.is_open());
        assert!(TcpStream::connect(addr).await.is_err(), "closed at start");
        assert!(probe.set(true));
        assert!(!probe.set(true), "no change");
        // The handshake completes in the kernel; the loop accepts and drops the connection.
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.is_ok() });
        let accepted = probe.accept().await;
        assert!(accepted.is_some());
        assert!(client.await.expect("join"));
        assert!(probe.set(false));
        // Closed synchronously: refused at once, without the runtime running anything.
        assert!(std::net::TcpStream::connect(addr).is_err());
        // Reopened straight away despite the connection just closed (SO_REUSEADDR).
        assert!(probe.set(true));
        assert!(std::net::TcpStream::connect(addr).is_ok());
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error_at_start_naming_the_field() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        for protocol in ["tcp", "http"] {
            let err = HealthProbe::start(&config(&format!(
                "listen = \"{addr}\"\nprotocol = \"{protocol}\""
            )))
            .expect_err("in use");
            assert!(
                err.starts_with(&format!("health_probe.listen {addr}:")) && err.contains("in use"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn http_probe_answers_200_while_open_and_503_while_closed() {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut probe = HealthProbe::start(&config(&format!(
            "listen = \"{addr}\"\nprotocol = \"http\"\npath = \"/healthz\""
        )))
        .expect("start");
        assert_eq!(
            http_status(addr, "/healthz").await,
            "HTTP/1.1 503 Service Unavailable"
        );
        probe.set(true);
        assert_eq!(http_status(addr, "/healthz").await, "HTTP/1.1 200 OK");
        assert_eq!(http_status(addr, "/other").await, "HTTP/1.1 404 Not Found");
        probe.set(false);
        assert_eq!(
            http_status(addr, "/healthz").await,
            "HTTP/1.1 503 Service Unavailable"
        );
        assert_eq!(probe.describe(), format!("http {addr}/healthz"));
    }
}
