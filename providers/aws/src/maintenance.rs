//! Maintenance EC2 announces through IMDSv2: a spot interruption notice
//! (`/latest/meta-data/spot/instance-action`, `{"action": "terminate|stop|hibernate",
//! "time": "2026-01-21T09:00:43Z"}`, 404 when there is none) and scheduled events
//! (`/latest/meta-data/events/maintenance/scheduled`, a JSON list of
//! `{"NotBefore", "NotAfter", "Code", "Description", "EventId", "State"}` with dates such as
//! `21 Jan 2019 09:00:43 GMT`; empty or 404 when there is none).
//!
//! EC2 needs no acknowledgement: the instance is interrupted at the announced time whatever it
//! does, so the node hands over before then.

use cloudha_provider_core::maintenance::{parse_http_date_ms, parse_rfc3339_ms};
use cloudha_provider_core::Maintenance;
use serde::Deserialize;

/// The metadata path of a spot interruption notice.
pub(crate) const SPOT_PATH: &str = "/latest/meta-data/spot/instance-action";
/// The metadata path of scheduled maintenance events.
pub(crate) const SCHEDULED_PATH: &str = "/latest/meta-data/events/maintenance/scheduled";

/// Whether an event with this code interrupts the instance. Every code EC2 documents does:
/// `instance-reboot`, `system-reboot`, `system-maintenance` (network or power maintenance),
/// `instance-retirement`, `instance-stop`, and the spot actions; an unknown code is assumed to.
pub(crate) fn needs_handover(_code: &str) -> bool {
    true
}

#[derive(Deserialize)]
struct SpotAction {
    action: String,
    time: String,
}

/// The spot notice, if the body holds one.
pub(crate) fn parse_spot(body: &str, now_ms: u64) -> Result<Option<Maintenance>, String> {
    if body.trim().is_empty() {
        return Ok(None);
    }
    let notice: SpotAction = serde_json::from_str(body)
        .map_err(|e| format!("spot/instance-action is not {{\"action\", \"time\"}}: {e}"))?;
    let not_before = parse_rfc3339_ms(&notice.time);
    let kind = format!("spot-{}", notice.action);
    Ok(Some(Maintenance {
        id: format!("spot-{}-{}", notice.action, notice.time),
        needs_handover: needs_handover(&kind),
        kind,
        not_before_unix_ms: not_before,
        description: format!(
            "spot instance interruption: {} at {}",
            notice.action, notice.time
        ),
        in_progress: not_before.is_some_and(|t| t <= now_ms),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduledEvent {
    #[serde(default)]
    not_before: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    event_id: String,
    #[serde(default)]
    state: String,
}

/// The events of the scheduled list that are still to come or under way (not `completed` or
/// `canceled`).
pub(crate) fn parse_scheduled(body: &str, now_ms: u64) -> Result<Vec<Maintenance>, String> {
    if body.trim().is_empty() {
        return Ok(Vec::new());
    }
    let events: Vec<ScheduledEvent> = serde_json::from_str(body)
        .map_err(|e| format!("events/maintenance/scheduled is not a JSON list of events: {e}"))?;
    Ok(events
        .into_iter()
        .filter(|e| {
            let over = ["completed", "canceled"]
                .iter()
                .any(|s| e.state.eq_ignore_ascii_case(s))
                || e.description.starts_with("[Completed]")
                || e.description.starts_with("[Canceled]");
            !over && !e.event_id.is_empty()
        })
        .map(|e| {
            let not_before = parse_http_date_ms(&e.not_before);
            Maintenance {
                id: e.event_id,
                needs_handover: needs_handover(&e.code),
                kind: e.code,
                not_before_unix_ms: not_before,
                description: e.description,
                in_progress: not_before.is_some_and(|t| t <= now_ms),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_21_2019_090043: u64 = 1_548_061_243_000;

    #[test]
    fn spot_notice() {
        let m = parse_spot(
            r#"{"action": "terminate", "time": "2019-01-21T09:00:43Z"}"#,
            JAN_21_2019_090043 - 120_000,
        )
        .unwrap()
        .unwrap();
        assert_eq!(m.kind, "spot-terminate");
        assert_eq!(m.id, "spot-terminate-2019-01-21T09:00:43Z");
        assert_eq!(m.not_before_unix_ms, Some(JAN_21_2019_090043));
        assert!(m.needs_handover);
        assert!(!m.in_progress);
        let later = parse_spot(
            r#"{"action": "stop", "time": "2019-01-21T09:00:43Z"}"#,
            JAN_21_2019_090043,
        )
        .unwrap()
        .unwrap();
        assert!(later.in_progress, "the interruption time has come");
        assert_eq!(parse_spot("", 0), Ok(None));
        assert!(parse_spot("terminate", 0).is_err());
    }

    #[test]
    fn scheduled_events_skip_completed_and_canceled() {
        let body = r#"[
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot",
           "Description": "scheduled reboot", "EventId": "instance-event-0d59937288b749b32",
           "NotAfter": "21 Jan 2019 09:17:23 GMT", "State": "active"},
          {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot",
           "Description": "[Canceled] scheduled reboot", "EventId": "instance-event-1",
           "State": "canceled"},
          {"NotBefore": "29 Jan 2019 09:00:43 GMT", "Code": "instance-stop",
           "Description": "[Completed] stop", "EventId": "instance-event-2", "State": "completed"}
        ]"#;
        let events = parse_scheduled(body, 0).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "instance-event-0d59937288b749b32");
        assert_eq!(events[0].kind, "system-reboot");
        assert_eq!(events[0].not_before_unix_ms, Some(JAN_21_2019_090043));
        assert!(events[0].needs_handover);
        assert_eq!(parse_scheduled("[]", 0).unwrap(), vec![]);
        assert_eq!(parse_scheduled("", 0).unwrap(), vec![]);
        assert!(parse_scheduled("{}", 0).is_err());
    }
}
