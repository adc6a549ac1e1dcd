//! The data plane behind the ARM documents, for end-to-end tests that send real client
//! traffic: a load balancer's frontend delivering new flows to the backends its probe finds
//! healthy, and a NIC's private address delivering to the NIC that holds it once the
//! change has settled.
//!
//! Both run on whatever network the caller's sockets are in (tests bind the listeners in a
//! namespace and run this on a thread that entered it, so the probes and the backend
//! connections leave from there too). Delivery is a TCP relay: a flow accepted on a frontend
//! address is connected to the chosen backend at the same port (HA ports) or the rule's
//! backend port, and kept there for its life.
//!
//! Load-balancer behaviour from the Azure Load Balancer documentation ("Health probes"):
//! every backend is probed every `intervalInSeconds`; it is taken out of rotation after
//! `probeThreshold` consecutive failed probes and put back after as many consecutive
//! successes; a Tcp probe succeeds on an accepted connection, an Http(s) probe on `200 OK`
//! for `requestPath`; with a Standard SKU, established TCP flows continue when their backend
//! is probed down, and new flows reach only backends probed up (none: the flow is dropped).
//! A backend starts out of rotation until it has been probed up.

use crate::load_balancer::{LoadBalancerSettings, ProbeProtocol};
use crate::Emulator;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a relay waits for the backend to accept (a dead VM does not answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A probe that has not answered by then has failed (Azure: within the interval).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A backend's probe state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Health {
    up: bool,
    /// Consecutive probe results that disagree with `up`.
    contrary: u32,
}

/// The data plane of one load balancer.
#[derive(Debug)]
pub struct LoadBalancerDataPlane {
    emu: Arc<Emulator>,
    name: String,
    health: Mutex<BTreeMap<Ipv4Addr, Health>>,
    /// Probe rounds completed (tests wait on it instead of sleeping).
    rounds: std::sync::atomic::AtomicU64,
}

impl Emulator {
    /// The data plane of load balancer `name` (default resource group), if the scenario has it.
    pub fn load_balancer_data_plane(
        self: &Arc<Self>,
        name: &str,
    ) -> Option<Arc<LoadBalancerDataPlane>> {
        self.load_balancer_settings(name)?;
        Some(Arc::new(LoadBalancerDataPlane {
            emu: self.clone(),
            name: name.to_string(),
            health: Mutex::new(BTreeMap::new()),
            rounds: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Delivers every flow accepted on `listener` (bound to a NIC's private address, e.g. the
    /// floating secondary IP) to the NIC whose *settled* document holds `ip`, at its primary
    /// address and the same port: what a VNet does while an IP move is still propagating.
    pub async fn serve_private_ip(
        self: Arc<Self>,
        ip: Ipv4Addr,
        listener: TcpListener,
    ) -> std::io::Result<()> {
        loop {
            let (client, _) = listener.accept().await?;
            let port = client.local_addr()?.port();
            let target = self.settled_primary_of(ip);
            tokio::spawn(async move {
                if let Some(backend) = target {
                    relay(client, SocketAddr::V4(SocketAddrV4::new(backend, port))).await;
                }
                // Nobody holds it: the flow goes nowhere (dropped with `client`).
            });
        }
    }
}

impl LoadBalancerDataPlane {
    fn settings(&self) -> Option<LoadBalancerSettings> {
        self.emu.load_balancer_settings(&self.name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Ipv4Addr, Health>> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backends in rotation now.
    pub fn healthy(&self) -> Vec<Ipv4Addr> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.up)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Probe rounds completed so far.
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Probes the backends and relays flows accepted on `listeners` (bound to the frontend
    /// address) until dropped.
    pub async fn run(self: Arc<Self>, listeners: Vec<TcpListener>) -> std::io::Result<()> {
        for listener in listeners {
            let me = self.clone();
            tokio::spawn(async move { me.accept_loop(listener).await });
        }
        self.probe_loop().await;
        Ok(())
    }

    /// A round every `intervalInSeconds`, each backend's result applied as soon as it is in
    /// (a probe of a dead VM waiting out its timeout does not hold up the others).
    async fn probe_loop(&self) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let Some(s) = self.settings() else { return };
            let period = Duration::from_secs(u64::from(s.interval_secs));
            if tick.period() != period {
                tick = tokio::time::interval(period);
            }
            tick.tick().await;
            self.lock().retain(|ip, _| s.backends.contains(ip));
            let mut set = tokio::task::JoinSet::new();
            for ip in s.backends.iter().copied() {
                let s = s.clone();
                set.spawn(async move { (ip, probe(&s, ip).await) });
            }
            while let Some(Ok((ip, ok))) = set.join_next().await {
                let mut health = self.lock();
                let h = health.entry(ip).or_default();
                if ok == h.up {
                    h.contrary = 0;
                } else {
                    h.contrary += 1;
                    if h.contrary >= s.probe_threshold {
                        *h = Health {
                            up: ok,
                            contrary: 0,
                        };
                    }
                }
            }
            self.rounds
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (client, peer) = listener.accept().await?;
            let Some(s) = self.settings() else { continue };
            let local = client.local_addr()?;
            let port = match s.ports {
                None => local.port(),
                Some((front, back)) if front == local.port() => back,
                Some(_) => continue, // no rule for this port: dropped
            };
            let healthy = self.healthy();
            if healthy.is_empty() {
                continue; // all probed down: new flows are not delivered
            }
            // A flow hash over the client's address spreads flows over the healthy backends.
            let hash = match peer {
                SocketAddr::V4(a) => u32::from(*a.ip()) ^ u32::from(a.port()),
                SocketAddr::V6(a) => u32::from(a.port()),
            };
            let backend = healthy[hash as usize % healthy.len()];
            tokio::spawn(relay(
                client,
                SocketAddr::V4(SocketAddrV4::new(backend, port)),
            ));
        }
    }
}

/// One probe of `ip` as the settings say.
async fn probe(s: &LoadBalancerSettings, ip: Ipv4Addr) -> bool {
    let addr = SocketAddr::V4(SocketAddrV4::new(ip, s.probe_port));
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        match s.probe_protocol {
            ProbeProtocol::Tcp => Some(true),
            // The emulator speaks no TLS: an Https probe never passes (its document is served).
            ProbeProtocol::Https => Some(false),
            ProbeProtocol::Http => {
                let path = s.request_path.as_deref().unwrap_or("/");
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {ip}\r\nUser-Agent: Load Balancer Agent\r\nConnection: close\r\n\r\n"
                );
                stream.write_all(request.as_bytes()).await.ok()?;
                let mut head = [0u8; 12];
                stream.read_exact(&mut head).await.ok()?;
                Some(head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200")
            }
        }
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

/// Connects `client`'s flow to `backend` and copies both ways until either side ends.
async fn relay(mut client: TcpStream, backend: SocketAddr) {
    let Ok(Ok(mut server)) =
        tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await
    else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request HTTP server on loopback answering `status` to whatever it is asked.
    async fn http_backend(status: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 1024];
            let n = stream.read(&mut request).await.expect("read");
            let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            stream.write_all(answer.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        (port, server)
    }

    fn settings(protocol: ProbeProtocol, port: u16) -> LoadBalancerSettings {
        LoadBalancerSettings {
            frontend_ip: Ipv4Addr::LOCALHOST,
            probe_protocol: protocol,
            probe_port: port,
            request_path: Some("/healthz".into()),
            interval_secs: 5,
            probe_threshold: 1,
            ports: None,
            backends: vec![Ipv4Addr::LOCALHOST],
        }
    }

    #[tokio::test]
    async fn an_http_probe_passes_on_200_for_its_path_only() {
        let (port, server) = http_backend("200 OK").await;
        assert!(probe(&settings(ProbeProtocol::Http, port), Ipv4Addr::LOCALHOST).await);
        let request = server.await.expect("server");
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );

        let (port, server) = http_backend("503 Service Unavailable").await;
        assert!(!probe(&settings(ProbeProtocol::Http, port), Ipv4Addr::LOCALHOST).await);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn a_tcp_probe_passes_on_an_accepted_connection_and_fails_on_a_refused_one() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(probe(&settings(ProbeProtocol::Tcp, port), Ipv4Addr::LOCALHOST).await);
        drop(listener);
        assert!(!probe(&settings(ProbeProtocol::Tcp, port), Ipv4Addr::LOCALHOST).await);
        // No TLS in the emulator: an Https probe never passes.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(!probe(&settings(ProbeProtocol::Https, port), Ipv4Addr::LOCALHOST).await);
    }
}
