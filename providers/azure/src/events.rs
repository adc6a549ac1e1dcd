//! Scheduled Events: the maintenance Azure announces through IMDS
//! (`/metadata/scheduledevents`, api-version 2020-07-01), and their approval.
//!
//! The document lists the events of every VM of the availability set; `Resources` names the
//! VMs an event affects, so only events naming this VM are kept. `Scheduled` events are coming
//! (`NotBefore` is the earliest start); `Started` ones are happening (`NotBefore` blank). Azure
//! drops an event from the document when it is over, and starts a scheduled event once any VM
//! of the set approves it (`POST` `StartRequests`) or its `NotBefore` passes.
//!
//! The first request for scheduled events enables the service for the VM, and Azure documents
//! that its answer can take up to two minutes. A request that times out therefore means "none
//! known yet", not a failure.

use std::time::Duration;

use cloudha_provider_core::maintenance::parse_http_date_ms;
use cloudha_provider_core::Maintenance;
use serde_json::{json, Value};

/// api-version of the Scheduled Events endpoint (the current one).
pub const API_VERSION: &str = "2020-07-01";

/// How long one request may take. The very first one can take up to two minutes on Azure;
/// it is asked again at the daemon's next poll, and the service keeps enabling meanwhile.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// No answer (timed out, refused, unreachable): nothing is known, nothing is wrong yet.
    NoAnswer(String),
    /// IMDS answered, but not with a document.
    BadAnswer(String),
}

fn url(endpoint: &str) -> String {
    format!(
        "{}/metadata/scheduledevents?api-version={API_VERSION}",
        endpoint.trim_end_matches('/')
    )
}

fn no_answer(endpoint: &str, timeout: Duration, e: &reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::NoAnswer(format!(
            "IMDS scheduled events at {endpoint} did not answer within {timeout:?} (the first request can take up to 2 minutes while Azure enables the service); no maintenance assumed"
        ))
    } else {
        FetchError::NoAnswer(format!(
            "IMDS scheduled events at {endpoint} unreachable ({e}); no maintenance assumed"
        ))
    }
}

/// `GET` the scheduled events document.
pub async fn fetch(
    http: &reqwest::Client,
    endpoint: &str,
    timeout: Duration,
) -> Result<Value, FetchError> {
    let response = http
        .get(url(endpoint))
        .header("Metadata", "true")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| no_answer(endpoint, timeout, &e))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| no_answer(endpoint, timeout, &e))?;
    if !status.is_success() {
        return Err(FetchError::BadAnswer(format!(
            "IMDS scheduled events answered {status}: {text}"
        )));
    }
    serde_json::from_str(&text).map_err(|e| {
        FetchError::BadAnswer(format!("IMDS scheduled events document is not JSON: {e}"))
    })
}

/// `POST` `StartRequests` for `event_id`; returns the HTTP status and body.
pub async fn approve(
    http: &reqwest::Client,
    endpoint: &str,
    timeout: Duration,
    event_id: &str,
) -> Result<(u16, String), FetchError> {
    let response = http
        .post(url(endpoint))
        .header("Metadata", "true")
        .header("Content-Type", "application/json")
        .body(json!({"StartRequests": [{"EventId": event_id}]}).to_string())
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| no_answer(endpoint, timeout, &e))?;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    Ok((status, text))
}

/// Whether an event of `event_type` calls for a handover. Every type Azure documents
/// (`Freeze`, `Reboot`, `Redeploy`, `Preempt`, `Terminate`) interrupts the VM for at least
/// seconds, and a type added later is assumed to as well.
pub fn needs_handover(_event_type: &str) -> bool {
    true
}

/// The events of the document that affect `vm_name` and are `Scheduled` or `Started`.
pub fn for_vm(document: &Value, vm_name: &str) -> Result<Vec<Maintenance>, String> {
    let events = document
        .get("Events")
        .and_then(Value::as_array)
        .ok_or("the scheduled events document has no Events array")?;
    let text = |e: &Value, key: &str| {
        e.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut out = Vec::new();
    for event in events {
        let affects_me = event
            .get("Resources")
            .and_then(Value::as_array)
            .is_some_and(|r| {
                r.iter()
                    .filter_map(Value::as_str)
                    .any(|name| name.eq_ignore_ascii_case(vm_name))
            });
        let in_progress = match event.get("EventStatus").and_then(Value::as_str) {
            Some("Scheduled") => false,
            Some("Started") => true,
            _ => continue,
        };
        let id = text(event, "EventId");
        if !affects_me || id.is_empty() {
            continue;
        }
        let kind = text(event, "EventType");
        out.push(Maintenance {
            id,
            needs_handover: needs_handover(&kind),
            kind,
            not_before_unix_ms: parse_http_date_ms(&text(event, "NotBefore")),
            description: text(event, "Description"),
            in_progress,
        });
    }
    Ok(out)
}

/// Whether the document still lists `event_id` (any status).
pub fn lists(document: &Value, event_id: &str) -> bool {
    document
        .get("Events")
        .and_then(Value::as_array)
        .is_some_and(|events| {
            events.iter().any(|e| {
                e.get("EventId")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id.eq_ignore_ascii_case(event_id))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, status: &str, kind: &str, resources: &[&str], not_before: &str) -> Value {
        json!({
            "EventId": id, "EventStatus": status, "EventType": kind,
            "ResourceType": "VirtualMachine", "Resources": resources,
            "NotBefore": not_before, "Description": "Host server is undergoing maintenance.",
            "EventSource": "Platform", "DurationInSeconds": -1
        })
    }

    #[test]
    fn keeps_this_vms_scheduled_and_started_events() {
        let doc = json!({"DocumentIncarnation": 7, "Events": [
            event("a", "Scheduled", "Reboot", &["fw-A", "fw-c"], "Mon, 19 Sep 2016 18:29:47 GMT"),
            event("b", "Scheduled", "Freeze", &["fw-b"], "Mon, 19 Sep 2016 18:29:47 GMT"),
            event("c", "Started", "Redeploy", &["fw-a"], ""),
            event("d", "Completed", "Reboot", &["fw-a"], ""),
        ]});
        let mine = for_vm(&doc, "fw-a").expect("parses");
        assert_eq!(mine.len(), 2, "{mine:?}");
        assert_eq!(mine[0].id, "a", "VM names compare case-insensitively");
        assert_eq!(mine[0].kind, "Reboot");
        assert_eq!(mine[0].not_before_unix_ms, Some(1_474_309_787_000));
        assert!(mine[0].needs_handover && !mine[0].in_progress);
        assert_eq!(mine[1].id, "c");
        assert!(mine[1].in_progress);
        assert_eq!(mine[1].not_before_unix_ms, None, "blank once started");
    }

    #[test]
    fn every_documented_type_needs_a_handover() {
        for kind in ["Freeze", "Reboot", "Redeploy", "Preempt", "Terminate"] {
            assert!(needs_handover(kind), "{kind}");
        }
    }

    #[test]
    fn a_document_without_events_is_an_error() {
        assert!(for_vm(&json!({"DocumentIncarnation": 1}), "fw-a").is_err());
        let doc = json!({"Events": [event("X-1", "Started", "Freeze", &["fw-b"], "")]});
        assert!(lists(&doc, "x-1"));
        assert!(!lists(&doc, "x-2"));
    }
}
