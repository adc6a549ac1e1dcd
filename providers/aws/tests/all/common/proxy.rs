//! A fault-injecting HTTP proxy in front of moto: it logs every EC2 request the provider makes
//! and answers the ones a test queued a fault for with that fault instead of moto's answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with a request a fault matches.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this HTTP status and EC2 error code; moto never sees the request.
    Error { status: u16, code: &'static str },
    /// Hold the request this long, then forward it (a slow or hung EC2).
    Delay(Duration),
    /// Answer with this HTTP status and a body that is not EC2's (a load balancer's error page).
    Status(u16),
}

#[derive(Debug)]
struct Queued {
    action: &'static str,
    fault: Fault,
    remaining: u32,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The EC2 action (`AssignPrivateIpAddresses`, ...).
    pub action: String,
    /// The request's form parameters, decoded.
    pub params: BTreeMap<String, String>,
    /// The fault it got, if any.
    pub fault: Option<Fault>,
    /// The SigV4 `Authorization` header, which names the access key that signed the request.
    pub authorization: String,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<Queued>,
    log: Vec<Logged>,
}

/// The proxy, serving on a loopback port until the test's runtime ends.
#[derive(Clone)]
pub struct Proxy {
    /// The proxy's endpoint URL, to give the provider as `endpoint`.
    pub url: String,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    /// Serve on a free loopback port, forwarding to moto on `upstream_port`.
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let proxy = Proxy {
            url: format!("http://{}", listener.local_addr().unwrap()),
            upstream: SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)),
            state: Arc::new(Mutex::new(State::default())),
        };
        proxy.serve(listener);
        proxy
    }

    /// Serve on `listener` as well (e.g. one bound inside a test's network namespace), with the
    /// same log and faults; call from within a tokio runtime.
    pub fn serve(&self, listener: TcpListener) {
        let (served, upstream) = (self.state.clone(), self.upstream);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), upstream, req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    /// Answer the next `times` requests for `action` with `fault`.
    pub fn inject(&self, action: &'static str, fault: Fault, times: u32) {
        self.state.lock().unwrap().queue.push(Queued {
            action,
            fault,
            remaining: times,
        });
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// Requests so far by action, as the provider's report counts them.
    pub fn counts(&self) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for r in self.log() {
            *counts.entry(r.action).or_default() += 1;
        }
        counts
    }

    /// Drop the queued faults not yet met (a fault campaign's faults stop).
    #[allow(dead_code)] // used by the root crate's fault campaign, which shares this harness
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().queue.clear();
    }

    /// Forget the log (between two phases of a test).
    pub fn clear(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

/// The actions that change something; the rest are `Describe*`.
pub fn mutating(counts: &BTreeMap<String, u32>) -> Vec<String> {
    counts
        .keys()
        .filter(|a| !a.starts_with("Describe"))
        .cloned()
        .collect()
}

async fn handle(
    state: Arc<Mutex<State>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let authorization = parts
        .headers
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let params = form(&body);
    let action = params.get("Action").cloned().unwrap_or_default();
    let fault = {
        let mut state = state.lock().unwrap();
        let fault = state
            .queue
            .iter_mut()
            .find(|q| q.action == action && q.remaining > 0)
            .map(|q| {
                q.remaining -= 1;
                q.fault.clone()
            });
        state.log.push(Logged {
            action: action.clone(),
            params,
            fault: fault.clone(),
            authorization,
        });
        fault
    };
    match fault {
        Some(Fault::Error { status, code }) => return Ok(ec2_error(status, code)),
        Some(Fault::Status(status)) => {
            return Ok(plain(
                StatusCode::from_u16(status).unwrap(),
                "<html><body>Bad Gateway</body></html>",
            ))
        }
        Some(Fault::Delay(wait)) => tokio::time::sleep(wait).await,
        None => {}
    }
    Ok(forward(upstream, parts, body)
        .await
        .unwrap_or_else(|e| plain(StatusCode::BAD_GATEWAY, &format!("moto: {e}"))))
}

async fn forward(
    upstream: SocketAddr,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::from_parts(parts, Full::new(body));
    request.headers_mut().remove(CONNECTION);
    let response = sender.send_request(request).await?;
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    // The body is passed on whole: hyper sets its length; moto's framing headers no longer apply.
    for header in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
        parts.headers.remove(header);
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}

/// The error document EC2's query protocol sends.
fn ec2_error(status: u16, code: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{code}</Code>\
         <Message>{code} injected by the test proxy</Message></Error></Errors>\
         <RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>"
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/xml;charset=UTF-8"),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    *response.status_mut() = status;
    response
}

/// Decode an `application/x-www-form-urlencoded` body.
fn form(body: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
