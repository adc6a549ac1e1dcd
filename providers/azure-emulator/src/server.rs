//! HTTP serving and the request pipeline shared by every endpoint.
//!
//! Pipeline: log the call, apply an arrival fault (if one matches), complete due
//! operations, then either IMDS or ARM. ARM calls are authenticated (Bearer), need an
//! `api-version`, are routed, metered against the subscription's token buckets, and
//! finally handled; every ARM answer past routing carries the remaining-quota header.

use crate::arm::Ctx;
use crate::auth;
use crate::faults::{FaultKind, Phase};
use crate::http::{arm_error, Req, Resp};
use crate::lro::{self, LroCtx};
use crate::reqlog::LoggedRequest;
use crate::state::State;
use crate::throttle::Meter;
use crate::{apiversion, arm_compute, arm_nic, arm_routes, arm_vnet, imds, Emulator};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body accepted (ARM's own limit is 4 MiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What a listener serves.
#[derive(Clone, Debug)]
pub(crate) enum Binding {
    /// ARM, plus IMDS under `/metadata`, `/msi` and `/vms/{vm}/...`; requests are logged with
    /// this caller label, if any.
    Main(Option<String>),
    /// Only IMDS, as seen from this VM.
    Imds(String),
}

/// Accepts connections forever. Accept errors (e.g. out of file descriptors) are transient
/// for a test server, so they pause briefly instead of ending the server.
pub(crate) async fn serve(
    emu: Arc<Emulator>,
    listener: TcpListener,
    binding: Binding,
) -> std::io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let emu = emu.clone();
        let binding = binding.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let emu = emu.clone();
                let binding = binding.clone();
                async move { Ok::<_, Infallible>(handle(&emu, req, peer, &binding).await) }
            });
            // A client that hangs up mid-request is not an emulator error.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    emu: &Emulator,
    req: Request<Incoming>,
    peer: SocketAddr,
    binding: &Binding,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return to_hyper(arm_error(
                413,
                "RequestEntityTooLarge",
                "The request body is too large.",
            ))
        }
    };
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let r = Req::new(parts.method.as_str(), pq, headers, body, peer);
    to_hyper(dispatch(emu, r, binding).await)
}

fn to_hyper(resp: Resp) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(resp.status);
    for (k, v) in &resp.headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(resp.body)))
        .unwrap_or_else(|_| {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
}

/// Which IMDS (if any) a path belongs to: `(forced VM, path after the prefix)`.
fn imds_target(req: &Req, binding: &Binding) -> Option<(Option<String>, Vec<String>)> {
    if let Binding::Imds(vm) = binding {
        return Some((Some(vm.clone()), req.segments.clone()));
    }
    let first = req.segments.first().map(|s| s.to_ascii_lowercase());
    match first.as_deref() {
        Some("metadata") | Some("msi") => Some((None, req.segments.clone())),
        Some("vms") if req.segments.len() >= 3 => {
            Some((Some(req.segments[1].clone()), req.segments[2..].to_vec()))
        }
        _ => None,
    }
}

/// Runs one request through the pipeline.
pub(crate) async fn dispatch(emu: &Emulator, req: Req, binding: &Binding) -> Resp {
    let imds = imds_target(&req, binding);
    let (seq, entry, fault) = {
        let mut st = emu.lock();
        let seq = st.log.len();
        st.log.push(LoggedRequest {
            seq: seq as u64,
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.raw_query.clone(),
            if_match: req.header("if-match").map(str::to_string),
            if_none_match: req.header("if-none-match").map(str::to_string),
            authorization_present: req.header("authorization").is_some(),
            metadata_header: req.header("metadata").map(str::to_string),
            identity_header_present: req.header("x-identity-header").is_some(),
            body: req.body_text(),
            status: 0,
            caller: match binding {
                Binding::Main(caller) => caller.clone(),
                Binding::Imds(vm) => Some(vm.clone()),
            },
            at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        });
        let entry = st.log[seq].clone();
        (
            seq,
            entry,
            st.faults.take(&req.method, &req.path, Phase::Arrival),
        )
    };
    // Outside the state lock: a hook may take its time (e.g. kill the calling process).
    emu.run_request_hook(&entry);
    let mut resp = match fault {
        Some(FaultKind::Respond {
            status,
            code,
            message,
            retry_after,
        }) => {
            let r = if imds.is_some() {
                Resp::json(
                    status,
                    &json!({"error": code, "error_description": message}),
                )
            } else {
                arm_error(status, &code, message)
            };
            match retry_after {
                Some(s) => r.with_header("retry-after", s.to_string()),
                None => r,
            }
        }
        other => {
            if let Some(FaultKind::Delay(d)) = other {
                tokio::time::sleep(d).await;
            }
            let mut st = emu.lock();
            let now = emu.clock.now();
            st.tick(now);
            match &imds {
                Some((vm, segs)) => {
                    imds::handle(&mut st, emu.clock.as_ref(), &req, segs, vm.as_deref())
                }
                None => arm(&mut st, emu, &req),
            }
        }
    };
    if imds.is_none() {
        let correlation = req
            .header("x-ms-correlation-request-id")
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        resp = resp
            .with_header("x-ms-request-id", uuid::Uuid::new_v4().to_string())
            .with_header("x-ms-correlation-request-id", correlation)
            .with_header("cache-control", "no-cache");
        if let Some(id) = req.header("x-ms-client-request-id") {
            resp = resp.with_header("x-ms-client-request-id", id.to_string());
        }
    }
    let mut st = emu.lock();
    if let Some(entry) = st.log.get_mut(seq) {
        entry.status = resp.status;
    }
    resp
}

/// A recognised ARM endpoint.
enum Endpoint {
    NicList {
        sub: String,
        rg: Option<String>,
    },
    Nic {
        sub: String,
        rg: String,
        name: String,
    },
    RouteTable {
        sub: String,
        rg: String,
        rt: String,
    },
    Routes {
        sub: String,
        rg: String,
        rt: String,
    },
    Route {
        sub: String,
        rg: String,
        rt: String,
        name: String,
    },
    Vnet {
        sub: String,
        rg: String,
        name: String,
    },
    Subnet {
        sub: String,
        rg: String,
        vnet: String,
        name: String,
    },
    MoveIp {
        sub: String,
        rg: String,
        vnet: String,
    },
    LoadBalancer {
        sub: String,
        rg: String,
        name: String,
    },
    PublicIp {
        sub: String,
        rg: String,
        name: String,
    },
    Vm {
        sub: String,
        rg: String,
        name: String,
    },
    OpStatus {
        sub: String,
        id: String,
    },
    OpResult {
        sub: String,
        id: String,
    },
    Permissions {
        sub: String,
        scope: String,
    },
}

impl Endpoint {
    /// The resource type ARM resolves the request to, and the resource group it is in (ARM
    /// knows the region of a request in a resource group; of a subscription-level one, not).
    fn type_info(&self) -> (apiversion::TypeInfo, Option<&str>) {
        use apiversion::{TypeInfo, AUTHORIZATION, COMPUTE, NETWORK};
        let net = |type_name| TypeInfo {
            namespace: "Microsoft.Network",
            type_name,
            versions: NETWORK,
        };
        match self {
            Endpoint::NicList { rg, .. } => (net("networkInterfaces"), rg.as_deref()),
            Endpoint::Nic { rg, .. } => (net("networkInterfaces"), Some(rg)),
            Endpoint::RouteTable { rg, .. } => (net("routeTables"), Some(rg)),
            Endpoint::Routes { rg, .. } | Endpoint::Route { rg, .. } => {
                (net("routeTables/routes"), Some(rg))
            }
            Endpoint::Vnet { rg, .. } | Endpoint::MoveIp { rg, .. } => {
                (net("virtualNetworks"), Some(rg))
            }
            Endpoint::Subnet { rg, .. } => (net("virtualNetworks/subnets"), Some(rg)),
            Endpoint::PublicIp { rg, .. } => (net("publicIPAddresses"), Some(rg)),
            Endpoint::LoadBalancer { rg, .. } => (net("loadBalancers"), Some(rg)),
            Endpoint::OpStatus { .. } => (net("locations/operations"), None),
            Endpoint::OpResult { .. } => (net("locations/operationResults"), None),
            Endpoint::Vm { rg, .. } => (
                TypeInfo {
                    namespace: "Microsoft.Compute",
                    type_name: "virtualMachines",
                    versions: COMPUTE,
                },
                Some(rg),
            ),
            Endpoint::Permissions { .. } => (
                TypeInfo {
                    namespace: "Microsoft.Authorization",
                    type_name: "permissions",
                    versions: AUTHORIZATION,
                },
                None,
            ),
        }
    }

    fn subscription(&self) -> &str {
        match self {
            Endpoint::NicList { sub, .. }
            | Endpoint::Nic { sub, .. }
            | Endpoint::RouteTable { sub, .. }
            | Endpoint::Routes { sub, .. }
            | Endpoint::Route { sub, .. }
            | Endpoint::Vnet { sub, .. }
            | Endpoint::Subnet { sub, .. }
            | Endpoint::MoveIp { sub, .. }
            | Endpoint::PublicIp { sub, .. }
            | Endpoint::LoadBalancer { sub, .. }
            | Endpoint::Vm { sub, .. }
            | Endpoint::OpStatus { sub, .. }
            | Endpoint::OpResult { sub, .. }
            | Endpoint::Permissions { sub, .. } => sub,
        }
    }
}

fn route(segs: &[String]) -> Option<Endpoint> {
    let l: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = l.iter().map(String::as_str).collect();
    let s = |i: usize| segs[i].clone();
    // {scope}/providers/Microsoft.Authorization/permissions
    if l.len() >= 5
        && l[0] == "subscriptions"
        && l[l.len() - 3..] == ["providers", "microsoft.authorization", "permissions"]
    {
        return Some(Endpoint::Permissions {
            sub: s(1),
            scope: format!("/{}", segs[..segs.len() - 3].join("/")),
        });
    }
    Some(match l.as_slice() {
        ["subscriptions", _, "providers", "microsoft.network", "networkinterfaces"] => {
            Endpoint::NicList {
                sub: s(1),
                rg: None,
            }
        }
        ["subscriptions", _, "providers", "microsoft.network", "locations", _, "operations", _] => {
            Endpoint::OpStatus {
                sub: s(1),
                id: s(7),
            }
        }
        ["subscriptions", _, "providers", "microsoft.network", "locations", _, "operationresults", _] => {
            Endpoint::OpResult {
                sub: s(1),
                id: s(7),
            }
        }
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.network", rest @ ..] => {
            let (sub, rg) = (s(1), s(3));
            match rest {
                ["networkinterfaces"] => Endpoint::NicList { sub, rg: Some(rg) },
                ["networkinterfaces", _] => Endpoint::Nic {
                    sub,
                    rg,
                    name: s(7),
                },
                ["routetables", _] => Endpoint::RouteTable { sub, rg, rt: s(7) },
                ["routetables", _, "routes"] => Endpoint::Routes { sub, rg, rt: s(7) },
                ["routetables", _, "routes", _] => Endpoint::Route {
                    sub,
                    rg,
                    rt: s(7),
                    name: s(9),
                },
                ["virtualnetworks", _] => Endpoint::Vnet {
                    sub,
                    rg,
                    name: s(7),
                },
                ["virtualnetworks", _, "subnets", _] => Endpoint::Subnet {
                    sub,
                    rg,
                    vnet: s(7),
                    name: s(9),
                },
                ["virtualnetworks", _, "moveipconfigurations"] => Endpoint::MoveIp {
                    sub,
                    rg,
                    vnet: s(7),
                },
                ["loadbalancers", _] => Endpoint::LoadBalancer {
                    sub,
                    rg,
                    name: s(7),
                },
                ["publicipaddresses", _] => Endpoint::PublicIp {
                    sub,
                    rg,
                    name: s(7),
                },
                _ => return None,
            }
        }
        ["subscriptions", _, "resourcegroups", _, "providers", "microsoft.compute", "virtualmachines", _] => {
            Endpoint::Vm {
                sub: s(1),
                rg: s(3),
                name: s(7),
            }
        }
        _ => return None,
    })
}

/// `YYYY-MM-DD` with an optional `-preview`-style suffix.
fn valid_api_version(v: &str) -> bool {
    let (date, suffix) = match v.get(10..) {
        Some(rest) => (&v[..10], rest),
        None => return false,
    };
    let b = date.as_bytes();
    let date_ok = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    date_ok
        && (suffix.is_empty()
            || (suffix.len() > 1
                && suffix.starts_with('-')
                && suffix[1..].chars().all(|c| c.is_ascii_alphanumeric())))
}

fn unknown_path(req: &Req, api: &str) -> Resp {
    let l: Vec<String> = req
        .segments
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    match l.iter().position(|s| s == "providers") {
        Some(i) if i + 2 < req.segments.len() => arm_error(
            404,
            "InvalidResourceType",
            format!(
                "The resource type '{}' could not be found in the namespace '{}' for api version '{api}'.",
                req.segments[i + 2],
                req.segments[i + 1]
            ),
        ),
        _ => arm_error(404, "NotFound", format!("The requested path {} was not found.", req.path)),
    }
}

fn method_not_allowed(req: &Req) -> Resp {
    arm_error(
        405,
        "MethodNotAllowed",
        format!(
            "The requested method {} is not allowed for {}.",
            req.method, req.path
        ),
    )
}

/// The ARM side of the pipeline.
fn arm(st: &mut State, emu: &Emulator, req: &Req) -> Resp {
    let clock = emu.clock.as_ref();
    let principal = match auth::authenticate(st, req, clock) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let api = match req.query("api-version") {
        None => {
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        }
        Some(v) if !valid_api_version(v) => {
            return arm_error(
                400,
                "InvalidApiVersionParameter",
                format!("The api-version '{v}' is invalid. The supported versions are '2025-05-01,2024-07-01,2024-05-01'."),
            )
        }
        Some(v) => v.to_string(),
    };
    let Some(route) = route(&req.segments) else {
        return unknown_path(req, &api);
    };
    let sub = route.subscription().to_string();
    if !st.subscriptions.contains_key(&sub.to_ascii_lowercase()) {
        return arm_error(
            404,
            "SubscriptionNotFound",
            format!("The subscription '{sub}' could not be found."),
        );
    }
    // A well-formed api-version the type is not registered for (see `apiversion`).
    let (info, rg) = route.type_info();
    if !apiversion::supported(&info, &api) {
        let location = rg.and_then(|rg| st.resource_group(&sub, rg));
        return match location {
            Some(g) => apiversion::no_registered_provider(&info, &api, &g.location),
            None => apiversion::invalid_resource_type(&info, &api),
        };
    }
    let now = clock.now();
    let meter = Meter::for_method(&req.method);
    if let Err(wait) = st.throttle.take(&sub, meter, now) {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return arm_error(
            429,
            "SubscriptionRequestsThrottled",
            format!(
                "Number of '{}' requests for subscription '{sub}' actor '{principal}' exceeded. Please try again after '{secs}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling for additional information.",
                meter.word()
            ),
        )
        .with_header("retry-after", secs.to_string())
        .with_header(meter.header(), "0");
    }
    let ctx = Ctx {
        principal: principal.clone(),
        now,
        lro: LroCtx {
            base_url: req.base_url(),
            api_version: api,
        },
        req,
    };
    let m = req.method.as_str();
    let resp = match (m, &route) {
        ("GET", Endpoint::NicList { sub, rg }) => arm_nic::list(st, &ctx, sub, rg.as_deref()),
        ("GET", Endpoint::Nic { sub, rg, name }) => arm_nic::get(st, &ctx, sub, rg, name),
        ("PUT", Endpoint::Nic { sub, rg, name }) => arm_nic::put(st, &ctx, sub, rg, name),
        ("GET", Endpoint::RouteTable { sub, rg, rt }) => {
            arm_routes::get_table(st, &ctx, sub, rg, rt)
        }
        ("GET", Endpoint::Routes { sub, rg, rt }) => arm_routes::list_routes(st, &ctx, sub, rg, rt),
        ("GET", Endpoint::Route { sub, rg, rt, name }) => {
            arm_routes::get_route(st, &ctx, sub, rg, rt, name)
        }
        ("PUT", Endpoint::Route { sub, rg, rt, name }) => {
            arm_routes::put_route(st, &ctx, sub, rg, rt, name)
        }
        ("GET", Endpoint::Vnet { sub, rg, name }) => arm_vnet::get_vnet(st, &ctx, sub, rg, name),
        (
            "GET",
            Endpoint::Subnet {
                sub,
                rg,
                vnet,
                name,
            },
        ) => arm_vnet::get_subnet(st, &ctx, sub, rg, vnet, name),
        ("POST", Endpoint::MoveIp { sub, rg, vnet }) => {
            arm_vnet::move_ip_configurations(st, &ctx, sub, rg, vnet)
        }
        ("GET", Endpoint::PublicIp { sub, rg, name }) => {
            arm_vnet::get_public_ip(st, &ctx, sub, rg, name)
        }
        ("GET", Endpoint::LoadBalancer { sub, rg, name }) => {
            crate::load_balancer::get(st, &ctx, sub, rg, name)
        }
        ("GET", Endpoint::Vm { sub, rg, name }) => arm_compute::get_vm(st, &ctx, sub, rg, name),
        ("GET", Endpoint::OpStatus { sub, id }) => {
            let scope = format!("/subscriptions/{sub}/providers/Microsoft.Network/locations");
            match auth::authorize(
                st,
                &principal,
                "Microsoft.Network/locations/operations/read",
                &scope,
            ) {
                Ok(()) => lro::status(st, sub, id),
                Err(r) => r,
            }
        }
        ("GET", Endpoint::OpResult { sub, id }) => {
            let scope = format!("/subscriptions/{sub}/providers/Microsoft.Network/locations");
            match auth::authorize(
                st,
                &principal,
                "Microsoft.Network/locations/operationResults/read",
                &scope,
            ) {
                Ok(()) => lro::result(st, &ctx.lro, sub, id),
                Err(r) => r,
            }
        }
        ("GET", Endpoint::Permissions { scope, .. }) => {
            auth::permissions_api(st, &principal, scope)
        }
        _ => method_not_allowed(req),
    };
    let remaining = st.throttle.remaining(&sub, meter, now);
    resp.with_header(meter.header(), remaining.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_format() {
        assert!(valid_api_version("2024-05-01"));
        assert!(valid_api_version("2025-09-01-preview"));
        assert!(!valid_api_version("2024-5-01"));
        assert!(!valid_api_version("latest"));
        assert!(!valid_api_version("2024-05-01-"));
    }

    #[test]
    fn routes_permissions_at_any_scope() {
        let segs: Vec<String> =
            "subscriptions/S/resourceGroups/rg/providers/Microsoft.Authorization/permissions"
                .split('/')
                .map(str::to_string)
                .collect();
        match route(&segs) {
            Some(Endpoint::Permissions { scope, .. }) => {
                assert_eq!(scope, "/subscriptions/S/resourceGroups/rg")
            }
            _ => panic!("not routed to permissions"),
        }
    }
}
