//! Test harness: a served emulator on 127.0.0.1, a minimal HTTP/1.1 client, and helpers
//! for the paths and bodies the Azure provider sends.

use bytes::Bytes;
use cloudha_azure_emulator::{Clock, Emulator, ManualClock, Scenario, TokioClock};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub const API: &str = "2024-05-01";
pub const VM_A: &str = "vm-appliance-a";
pub const VM_B: &str = "vm-appliance-b";
pub const NIC_A: &str = "nic-appliance-a";
pub const NIC_B: &str = "nic-appliance-b";
pub const FLOATING_IP: &str = "10.10.1.100";

/// A response as the test sees it.
#[derive(Debug)]
pub struct TestResp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub text: String,
    pub body: Value,
}

impl TestResp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// `error.code` of an ARM error body.
    pub fn code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn message(&self) -> &str {
        self.body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// First `error.details[].code`.
    pub fn detail_code(&self) -> &str {
        self.body
            .pointer("/error/details/0/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// One HTTP/1.1 exchange on a fresh connection, with a JSON body.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> TestResp {
    call_raw(addr, method, path, headers, body.map(|v| v.to_string())).await
}

/// One HTTP/1.1 exchange on a fresh connection, with a raw body.
pub async fn call_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> TestResp {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let payload = body.unwrap_or_default();
    let req = b.body(Full::new(Bytes::from(payload))).expect("request");
    let resp = sender.send_request(req).await.expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    TestResp {
        status,
        headers,
        text,
        body,
    }
}

/// A served emulator with the two-appliance scenario.
pub struct Env {
    pub emu: Arc<Emulator>,
    pub addr: SocketAddr,
    /// Set when the environment runs on a manual clock.
    pub manual: Option<Arc<ManualClock>>,
    pub token_a: String,
    pub token_b: String,
}

impl Env {
    /// Manual clock, 1 s propagation delays, Retry-After 1.
    pub async fn manual() -> Self {
        let clock = Arc::new(ManualClock::new(1_800_000_000));
        Self::build(clock.clone(), Some(clock)).await
    }

    /// Real (tokio) time.
    pub async fn real_time() -> Self {
        Self::build(Arc::new(TokioClock::new()), None).await
    }

    async fn build(clock: Arc<dyn Clock>, manual: Option<Arc<ManualClock>>) -> Self {
        let mut scenario = Scenario::two_appliances();
        scenario.settings.nic_propagation_ms = 1000;
        scenario.settings.route_propagation_ms = 1000;
        scenario.settings.move_propagation_ms = 1000;
        scenario.settings.lro_retry_after_secs = 1;
        let emu = Emulator::with_clock(&scenario, clock).expect("scenario");
        let addr = emu.start().await.expect("serve");
        let token_a = emu.issue_token(VM_A).expect("token a");
        let token_b = emu.issue_token(VM_B).expect("token b");
        Self {
            emu,
            addr,
            manual,
            token_a,
            token_b,
        }
    }

    /// Advances the manual clock.
    pub fn advance_ms(&self, ms: u64) {
        self.manual
            .as_ref()
            .expect("manual clock")
            .advance(Duration::from_millis(ms));
    }

    pub fn sub(&self) -> String {
        self.emu.subscription_id().to_string()
    }

    /// `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.Network`
    pub fn net(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network",
            self.emu.subscription_id(),
            self.emu.resource_group()
        )
    }

    pub fn nic_path(&self, nic: &str) -> String {
        format!("{}/networkInterfaces/{nic}?api-version={API}", self.net())
    }

    pub fn route_path(&self, table: &str, route: &str) -> String {
        format!(
            "{}/routeTables/{table}/routes/{route}?api-version={API}",
            self.net()
        )
    }

    pub async fn get(&self, token: &str, path: &str) -> TestResp {
        let auth = format!("Bearer {token}");
        call(self.addr, "GET", path, &[("authorization", &auth)], None).await
    }

    pub async fn put(
        &self,
        token: &str,
        path: &str,
        body: &Value,
        if_match: Option<&str>,
    ) -> TestResp {
        let auth = format!("Bearer {token}");
        let mut h = vec![("authorization", auth.as_str())];
        if let Some(e) = if_match {
            h.push(("if-match", e));
        }
        call(self.addr, "PUT", path, &h, Some(body)).await
    }

    pub async fn post(&self, token: &str, path: &str, body: &Value) -> TestResp {
        let auth = format!("Bearer {token}");
        call(
            self.addr,
            "POST",
            path,
            &[("authorization", &auth)],
            Some(body),
        )
        .await
    }

    /// GETs a NIC and returns (document, etag).
    pub async fn nic(&self, nic: &str) -> (Value, String) {
        let r = self.get(&self.token_a, &self.nic_path(nic)).await;
        assert_eq!(r.status, 200, "GET {nic}: {}", r.text);
        let etag = r.body["etag"].as_str().expect("etag").to_string();
        (r.body, etag)
    }

    /// GETs the operation status URL from an `Azure-AsyncOperation` header.
    pub async fn op_status(&self, async_url: &str) -> String {
        let path = path_of(async_url);
        let r = self.get(&self.token_a, &path).await;
        assert_eq!(r.status, 200, "status: {}", r.text);
        r.body["status"].as_str().expect("status").to_string()
    }
}

/// Path and query of an absolute URL.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    }
}

/// Names of a NIC document's ipConfigurations.
pub fn ipconfig_names(doc: &Value) -> Vec<String> {
    doc["properties"]["ipConfigurations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The floating ipConfiguration of NIC A as the client would carry it over.
pub fn floating_config(doc_a: &Value) -> Value {
    doc_a["properties"]["ipConfigurations"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "floating"))
        .cloned()
        .expect("floating ipconfig on A")
}

/// `doc` without the named ipConfiguration.
pub fn without_config(doc: &Value, name: &str) -> Value {
    let mut d = doc.clone();
    if let Some(a) = d["properties"]["ipConfigurations"].as_array_mut() {
        a.retain(|c| c["name"] != name);
    }
    d
}

/// `doc` with an extra ipConfiguration.
pub fn with_config(doc: &Value, cfg: Value) -> Value {
    let mut d = doc.clone();
    if let Some(a) = d["properties"]["ipConfigurations"].as_array_mut() {
        a.push(cfg);
    }
    d
}
