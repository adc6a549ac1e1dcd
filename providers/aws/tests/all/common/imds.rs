//! A fake IMDSv2 on a loopback port: the session token is required, as on EC2.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const TOKEN: &str = "fake-imds-session-token";
const TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";

/// What the fake IMDS saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Session tokens handed out.
    pub tokens: u32,
    /// Metadata paths read with a valid token.
    pub paths: Vec<String>,
    /// Requests refused for a missing or wrong token (IMDSv1-style).
    pub refused: u32,
}

/// The fake IMDS, serving until the test's runtime ends.
pub struct FakeImds {
    /// Its base URL, to give the provider as `imds_endpoint`.
    pub url: String,
    seen: Arc<Mutex<Seen>>,
}

impl FakeImds {
    /// Serve `values` (full path such as `/latest/meta-data/instance-id` to body).
    pub async fn start(values: BTreeMap<String, String>) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        Self::serve(listener, values)
    }

    /// Serve `values` on `listener` (e.g. one bound at 169.254.169.254 inside a test's network
    /// namespace); call from within a tokio runtime.
    pub fn serve(listener: TcpListener, values: BTreeMap<String, String>) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let values = Arc::new(values);
        let recorded = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (seen, values) = (recorded.clone(), values.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let answer = answer(&seen, &values, &req);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeImds { url, seen }
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(
    seen: &Mutex<Seen>,
    values: &BTreeMap<String, String>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut seen = seen.lock().unwrap();
    let path = req.uri().path().to_string();
    if req.method() == Method::PUT && path == "/latest/api/token" {
        if !req.headers().contains_key(TTL_HEADER) {
            return reply(StatusCode::BAD_REQUEST, "");
        }
        seen.tokens += 1;
        let mut response = reply(StatusCode::OK, TOKEN);
        // aws-config reads the token's lifetime from this header, as EC2 sends it.
        response
            .headers_mut()
            .insert(TTL_HEADER, hyper::header::HeaderValue::from_static("21600"));
        return response;
    }
    let token_ok = req
        .headers()
        .get(TOKEN_HEADER)
        .is_some_and(|t| t.as_bytes() == TOKEN.as_bytes());
    if !token_ok {
        seen.refused += 1;
        return reply(StatusCode::UNAUTHORIZED, "");
    }
    seen.paths.push(path.clone());
    match values.get(&path) {
        Some(body) => reply(StatusCode::OK, body),
        None => reply(StatusCode::NOT_FOUND, ""),
    }
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
