//! Azure Instance Metadata Service (IMDS) and the App Service-style managed identity
//! endpoint.
//!
//! IMDS endpoints follow the public IMDS documentation: every call needs `Metadata: true`
//! and an `api-version`; `/metadata/instance` (2021-02-01 shape: `compute` + `network`
//! with MACs in IMDS spelling `000D3A1A2B3C`), `/metadata/identity/oauth2/token`
//! (2018-02-01 / 2019-08-01; all values strings, `expires_on` in Unix seconds) and
//! `/metadata/scheduledevents` (2020-07-01; GET the document, POST `StartRequests` to ack).
//!
//! `/msi/token` is the App Service / Functions managed-identity protocol
//! (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, api-version 2019-08-01, secret in
//! `X-IDENTITY-HEADER`), which azure_identity 1.x's `ManagedIdentityCredential` selects from
//! the environment. Each VM has its own secret, so the secret also says which VM calls.

use crate::auth::issue_token;
use crate::clock::Clock;
use crate::http::{Req, Resp};
use crate::state::{ipconfigs, State, Vm};
use crate::validate::Ipv4Net;
use serde_json::{json, Value};

fn imds_error(status: u16, error: &str, description: &str) -> Resp {
    Resp::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn bad_request(message: &str) -> Resp {
    Resp::json(400, &json!({ "error": format!("Bad request. {message}") }))
}

fn metadata_ok(req: &Req) -> bool {
    req.header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Which VM's IMDS answers a request.
fn resolve_vm<'a>(st: &'a State, req: &Req, forced: Option<&str>) -> Option<&'a Vm> {
    if let Some(name) = forced {
        return st.vm_by_name(name);
    }
    let peer = req.peer.ip();
    if let Some(vm) = st.vms.values().find(|v| v.imds_source_ips.contains(&peer)) {
        return Some(vm);
    }
    st.settings
        .default_imds_vm
        .as_deref()
        .and_then(|n| st.vm_by_name(n))
}

/// Routes an IMDS request (path already stripped of any `/vms/{vm}` prefix).
pub(crate) fn handle(
    st: &mut State,
    clock: &dyn Clock,
    req: &Req,
    segs: &[String],
    forced_vm: Option<&str>,
) -> Resp {
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    match (req.method.as_str(), l.as_slice()) {
        ("GET", ["msi", "token"]) => app_service_token(st, clock, req, forced_vm),
        (_, ["metadata", "identity", "oauth2", "token"]) if req.method == "GET" => {
            imds_token(st, clock, req, forced_vm)
        }
        ("GET", ["metadata", "instance", rest @ ..]) => {
            instance(st, req, forced_vm, &segs[2..2 + rest.len()])
        }
        ("GET" | "POST", ["metadata", "scheduledevents"]) => {
            scheduled_events(st, clock, req, forced_vm)
        }
        _ => Resp::json(404, &json!({"error": "Not found"})),
    }
}

fn no_vm() -> Resp {
    bad_request("No virtual machine of the emulated scenario is bound to this IMDS endpoint.")
}

/// `GET /metadata/instance[/path...]`.
fn instance(st: &State, req: &Req, forced: Option<&str>, path: &[String]) -> Resp {
    if !metadata_ok(req) {
        return bad_request("Required metadata header not specified");
    }
    if req.query("api-version").is_none() {
        return Resp::json(
            400,
            &json!({
                "error": "Bad request. api-version was not specified in the request. For more information refer to aka.ms/azureimds",
                "newest-versions": ["2023-07-01", "2021-12-13", "2021-11-15"]
            }),
        );
    }
    let Some(vm) = resolve_vm(st, req, forced) else {
        return no_vm();
    };
    let doc = instance_doc(st, vm);
    let mut node = &doc;
    for seg in path {
        let next = match node {
            Value::Object(m) => m.get(seg.as_str()),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => return Resp::json(404, &json!({"error": "Not found"})),
        }
    }
    if req
        .query("format")
        .is_some_and(|f| f.eq_ignore_ascii_case("text"))
    {
        let text = match node {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Resp {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: text.into_bytes(),
        };
    }
    Resp::json(200, node)
}

/// The instance document as IMDS reports it: the *settled* network state (what the
/// data plane has), with IMDS's MAC spelling.
fn instance_doc(st: &State, vm: &Vm) -> Value {
    let mut interfaces = Vec::new();
    for nic_id in &vm.nic_ids {
        let Some(nic) = st.nics.get(&crate::ids::key(nic_id)) else {
            continue;
        };
        let doc = &nic.applied;
        let mut cfgs: Vec<&Value> = ipconfigs(doc).iter().collect();
        // The primary address comes first, as on a real VM.
        cfgs.sort_by_key(|c| {
            c.pointer("/properties/primary").and_then(Value::as_bool) != Some(true)
        });
        let mut addrs = Vec::new();
        let mut subnets: Vec<Ipv4Net> = Vec::new();
        for c in cfgs {
            let private = c
                .pointer("/properties/privateIPAddress")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let public = c
                .pointer("/properties/publicIPAddress/id")
                .and_then(Value::as_str)
                .and_then(|id| st.public_ips.get(&crate::ids::key(id)))
                .and_then(|p| {
                    p.doc
                        .pointer("/properties/ipAddress")
                        .and_then(Value::as_str)
                })
                .unwrap_or_default();
            addrs.push(json!({"privateIpAddress": private, "publicIpAddress": public}));
            if let Some(sn) = c
                .pointer("/properties/subnet/id")
                .and_then(Value::as_str)
                .and_then(|id| st.subnet(id))
            {
                if !subnets.contains(&sn.prefix) {
                    subnets.push(sn.prefix);
                }
            }
        }
        let mac = doc
            .pointer("/properties/macAddress")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace(['-', ':'], "")
            .to_ascii_uppercase();
        let subnet_list: Vec<Value> = subnets
            .iter()
            .map(|p| json!({"address": p.network_addr().to_string(), "prefix": p.prefix_len().to_string()}))
            .collect();
        interfaces.push(json!({
            "ipv4": {"ipAddress": addrs, "subnet": subnet_list},
            "ipv6": {"ipAddress": []},
            "macAddress": mac,
        }));
    }
    json!({
        "compute": {
            "azEnvironment": "AzurePublicCloud",
            "location": vm.location,
            "name": vm.name,
            "osType": "Linux",
            "provider": "Microsoft.Compute",
            "resourceGroupName": vm.resource_group,
            "resourceId": vm.id,
            "subscriptionId": vm.subscription,
            "tags": "",
            "tagsList": [],
            "vmId": vm.vm_id,
            "vmSize": vm.vm_size,
            "zone": "",
        },
        "network": {"interface": interfaces},
    })
}

/// Common identity selection: `client_id` / `object_id` must name the VM's identity;
/// resource IDs never match (only system-assigned identities are modelled).
fn identity_matches(st: &State, vm: &Vm, req: &Req) -> bool {
    let Some(ident) = st.identities.get(&vm.principal_id.to_ascii_lowercase()) else {
        return false;
    };
    if let Some(c) = req.query("client_id") {
        return c.eq_ignore_ascii_case(&ident.client_id);
    }
    if let Some(o) = req.query("object_id").or_else(|| req.query("principal_id")) {
        return o.eq_ignore_ascii_case(&ident.principal_id);
    }
    req.query("msi_res_id").is_none() && req.query("mi_res_id").is_none()
}

/// Issues a token for `vm`'s identity after checking the request names that identity; both
/// token endpoints share this. Returns the token, its grant and the identity's client id.
fn grant_token(
    st: &mut State,
    clock: &dyn Clock,
    vm: &Vm,
    req: &Req,
    resource: &str,
) -> Result<(String, crate::state::TokenGrant, String), Resp> {
    let not_found = || imds_error(400, "invalid_request", "Identity not found");
    if !identity_matches(st, vm, req) {
        return Err(not_found());
    }
    let (token, grant) =
        issue_token(st, clock, &vm.principal_id, resource).ok_or_else(not_found)?;
    let client_id = st
        .identities
        .get(&vm.principal_id.to_ascii_lowercase())
        .map(|i| i.client_id.clone())
        .unwrap_or_default();
    Ok((token, grant, client_id))
}

/// The `resource` a token request asks for, after the checks both token endpoints share.
fn token_resource(req: &Req) -> Result<String, Resp> {
    if req.query("api-version").is_none() {
        return Err(imds_error(
            400,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        ));
    }
    req.query("resource").map(str::to_string).ok_or_else(|| {
        imds_error(
            400,
            "invalid_request",
            "Required audience parameter not specified",
        )
    })
}

/// `GET /metadata/identity/oauth2/token`.
fn imds_token(st: &mut State, clock: &dyn Clock, req: &Req, forced: Option<&str>) -> Resp {
    if !metadata_ok(req) {
        return imds_error(
            400,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let resource = match token_resource(req) {
        Ok(resource) => resource,
        Err(resp) => return resp,
    };
    let Some(vm) = resolve_vm(st, req, forced).cloned() else {
        return no_vm();
    };
    let (token, grant, client_id) = match grant_token(st, clock, &vm, req, &resource) {
        Ok(granted) => granted,
        Err(resp) => return resp,
    };
    let lifetime = grant
        .expires_unix
        .saturating_sub(clock.unix_now())
        .to_string();
    Resp::json(
        200,
        &json!({
            "access_token": token,
            "client_id": client_id,
            "expires_in": lifetime,
            "expires_on": grant.expires_unix.to_string(),
            "ext_expires_in": lifetime,
            "not_before": clock.unix_now().to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
    )
}

/// `GET /msi/token` (App Service protocol, what `IDENTITY_ENDPOINT` points at).
fn app_service_token(st: &mut State, clock: &dyn Clock, req: &Req, forced: Option<&str>) -> Resp {
    let secret = req.header("x-identity-header").unwrap_or_default();
    let vm = st
        .vms
        .values()
        .find(|v| !secret.is_empty() && v.identity_header == secret)
        .filter(|v| forced.is_none_or(|f| v.name.eq_ignore_ascii_case(f)))
        .cloned();
    let Some(vm) = vm else {
        return imds_error(
            401,
            "invalid_request",
            "The X-IDENTITY-HEADER header is missing or does not match this endpoint's secret.",
        );
    };
    let resource = match token_resource(req) {
        Ok(resource) => resource,
        Err(resp) => return resp,
    };
    let (token, grant, client_id) = match grant_token(st, clock, &vm, req, &resource) {
        Ok(granted) => granted,
        Err(resp) => return resp,
    };
    Resp::json(
        200,
        &json!({
            "access_token": token,
            "expires_on": grant.expires_unix.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
    )
}

/// `GET|POST /metadata/scheduledevents` (see [`crate::events`]).
fn scheduled_events(st: &mut State, clock: &dyn Clock, req: &Req, forced: Option<&str>) -> Resp {
    if !metadata_ok(req) {
        return bad_request("Required metadata header not specified");
    }
    if req.query("api-version").is_none() {
        return bad_request("api-version was not specified in the request. For more information refer to aka.ms/azureimds");
    }
    let Some(vm) = resolve_vm(st, req, forced).map(|v| v.name.clone()) else {
        return no_vm();
    };
    let impact = std::time::Duration::from_millis(st.settings.scheduled_event_impact_ms);
    st.scheduled.advance(clock.now(), clock.unix_now(), impact);
    if req.method == "GET" {
        return Resp::json(200, &st.scheduled.document());
    }
    match st.scheduled.approve(&vm, &req.body) {
        Ok(()) => Resp::empty(200),
        Err(message) => bad_request(&message),
    }
}
