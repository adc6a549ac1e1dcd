//! IMDS Scheduled Events (api-version 2020-07-01), as the public documentation describes them
//! ("Azure Metadata Service: Scheduled Events for Linux VMs"):
//!
//! - An event is `Scheduled` with a `NotBefore` time (RFC 1123). It becomes `Started`, with
//!   `NotBefore` blank, once any VM that sees it approves it (`POST` `StartRequests`: approval
//!   lets the event proceed for every VM in its `Resources`), or once `NotBefore` passes.
//! - A started event is removed from the document when it completes; the emulator completes it
//!   `Settings::scheduled_event_impact_ms` after it started (the docs' rough guideline is ten
//!   minutes from `Started` to removal).
//! - `DocumentIncarnation` increases whenever the events array changes.
//! - Events of every VM of an availability set are delivered to all its VMs, whose `Resources`
//!   say which VMs an event affects. The emulator treats the scenario's VMs as one availability
//!   set (how an HA pair is deployed): every VM sees, and may approve, every event.
//! - The POST answers 200 for a known event id (also when it was approved before) and 400 for a
//!   malformed body or an unknown id.
//!
//! Nothing runs in the background: [`ScheduledEvents::advance`] applies what is due whenever a
//! request or a test accessor looks at the events.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::time::Instant;

/// What a test asks to schedule (see `Emulator::schedule_event_with`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// `Freeze`, `Reboot`, `Redeploy`, `Preempt` or `Terminate`.
    pub event_type: String,
    /// VM names the event affects.
    pub resources: Vec<String>,
    /// Time from now until `NotBefore`; `None` creates the event already `Started` (what
    /// Azure does after a host hardware failure).
    pub not_before: Option<Duration>,
    /// `Description`.
    pub description: String,
    /// `EventSource`: `Platform` or `User`.
    pub source: String,
    /// `DurationInSeconds` (-1 when unknown).
    pub duration_secs: i64,
}

impl EventSpec {
    /// A platform event of `event_type` for one VM, with the description and duration Azure
    /// typically gives that type.
    pub fn new(vm: &str, event_type: &str, not_before: Duration) -> Self {
        let (description, duration_secs) = match event_type {
            "Freeze" => (
                "Virtual machine is being paused because of a memory-preserving Live Migration operation.",
                5,
            ),
            "Reboot" => ("Host server is undergoing maintenance.", -1),
            "Redeploy" => ("Host server is undergoing an emergency repair.", -1),
            "Preempt" => ("Spot virtual machine is being evicted.", -1),
            _ => ("Virtual machine is scheduled to be deleted.", -1),
        };
        Self {
            event_type: event_type.to_string(),
            resources: vec![vm.to_string()],
            not_before: Some(not_before),
            description: description.to_string(),
            source: "Platform".to_string(),
            duration_secs,
        }
    }
}

/// One approval a VM sent through `POST /metadata/scheduledevents`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcknowledgedEvent {
    /// The VM whose IMDS received the approval.
    pub vm: String,
    /// The `EventId` approved.
    pub event_id: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Scheduled,
    Started,
}

#[derive(Clone, Debug)]
pub(crate) struct Event {
    id: String,
    event_type: String,
    resources: Vec<String>,
    status: Status,
    not_before_unix: Option<u64>,
    description: String,
    source: String,
    duration_secs: i64,
    approved: bool,
    started_at: Option<Instant>,
}

/// Every scheduled event of the scenario and the document's incarnation.
#[derive(Clone, Debug)]
pub(crate) struct ScheduledEvents {
    incarnation: u64,
    events: Vec<Event>,
    acks: Vec<AcknowledgedEvent>,
}

impl Default for ScheduledEvents {
    fn default() -> Self {
        // A VM's first document is incarnation 1 with no events.
        Self {
            incarnation: 1,
            events: Vec::new(),
            acks: Vec::new(),
        }
    }
}

fn rfc1123(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

impl ScheduledEvents {
    /// Adds an event and returns its `EventId`.
    pub fn schedule(&mut self, spec: EventSpec, now: Instant, unix_now: u64) -> String {
        let id = uuid::Uuid::new_v4().to_string().to_ascii_uppercase();
        let started = spec.not_before.is_none();
        self.events.push(Event {
            id: id.clone(),
            event_type: spec.event_type,
            resources: spec.resources,
            status: if started {
                Status::Started
            } else {
                Status::Scheduled
            },
            // Whole seconds, rounded up: the event never starts before the time asked for.
            not_before_unix: spec
                .not_before
                .map(|d| unix_now + d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            description: spec.description,
            source: spec.source,
            duration_secs: spec.duration_secs,
            approved: false,
            started_at: started.then_some(now),
        });
        self.incarnation += 1;
        id
    }

    /// Adds an event given as a raw IMDS event object (scenario files); `Resources` defaults to
    /// `vm`.
    pub fn schedule_raw(
        &mut self,
        vm: &str,
        raw: &Value,
        now: Instant,
        unix_now: u64,
    ) -> Result<(), String> {
        let text = |key: &str| raw.get(key).and_then(Value::as_str).map(str::to_string);
        let event_type = text("EventType")
            .ok_or_else(|| format!("vm {vm}: a scheduled event needs an EventType"))?;
        let resources = match raw.get("Resources").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
            None => vec![vm.to_string()],
        };
        let status = match text("EventStatus").as_deref() {
            None | Some("Scheduled") => Status::Scheduled,
            Some("Started") => Status::Started,
            Some(other) => {
                return Err(format!(
                    "vm {vm}: EventStatus {other:?} is neither Scheduled nor Started"
                ))
            }
        };
        let not_before_unix = match text("NotBefore").filter(|s| !s.is_empty()) {
            Some(s) => Some(
                httpdate::parse_http_date(&s)
                    .map_err(|e| format!("vm {vm}: NotBefore {s:?} is not an RFC 1123 date: {e}"))?
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            ),
            None if status == Status::Scheduled => Some(unix_now),
            None => None,
        };
        self.events.push(Event {
            id: text("EventId")
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string().to_ascii_uppercase()),
            event_type,
            resources,
            status,
            not_before_unix,
            description: text("Description").unwrap_or_default(),
            source: text("EventSource").unwrap_or_else(|| "Platform".into()),
            duration_secs: raw
                .get("DurationInSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(-1),
            approved: false,
            started_at: (status == Status::Started).then_some(now),
        });
        self.incarnation += 1;
        Ok(())
    }

    /// Starts approved and due events, removes completed ones; one incarnation per change.
    pub fn advance(&mut self, now: Instant, unix_now: u64, impact: Duration) {
        let mut changed = false;
        for e in &mut self.events {
            let due = e.not_before_unix.is_some_and(|t| t <= unix_now);
            if e.status == Status::Scheduled && (e.approved || due) {
                e.status = Status::Started;
                e.not_before_unix = None;
                e.started_at = Some(now);
                changed = true;
            }
        }
        let before = self.events.len();
        self.events.retain(|e| {
            e.started_at
                .is_none_or(|at| now.saturating_duration_since(at) < impact)
        });
        if changed || self.events.len() != before {
            self.incarnation += 1;
        }
    }

    /// Removes an event as Azure does when it cancels a maintenance. False if unknown.
    pub fn cancel(&mut self, event_id: &str) -> bool {
        let before = self.events.len();
        self.events.retain(|e| !e.id.eq_ignore_ascii_case(event_id));
        let removed = self.events.len() != before;
        if removed {
            self.incarnation += 1;
        }
        removed
    }

    /// The document `GET /metadata/scheduledevents` answers.
    pub fn document(&self) -> Value {
        let events: Vec<Value> = self
            .events
            .iter()
            .map(|e| {
                json!({
                    "EventId": e.id,
                    "EventStatus": match e.status {
                        Status::Scheduled => "Scheduled",
                        Status::Started => "Started",
                    },
                    "EventType": e.event_type,
                    "ResourceType": "VirtualMachine",
                    "Resources": e.resources,
                    "NotBefore": e.not_before_unix.map(rfc1123).unwrap_or_default(),
                    "Description": e.description,
                    "EventSource": e.source,
                    "DurationInSeconds": e.duration_secs,
                })
            })
            .collect();
        json!({"DocumentIncarnation": self.incarnation, "Events": events})
    }

    /// Applies `POST` `StartRequests` from `vm`. `Err` is the 400 message.
    pub fn approve(&mut self, vm: &str, body: &[u8]) -> Result<(), String> {
        let body: Value = serde_json::from_slice(body)
            .map_err(|_| "The request body is not valid JSON.".to_string())?;
        let starts = body
            .get("StartRequests")
            .and_then(Value::as_array)
            .ok_or("The request body must contain StartRequests.")?;
        let mut ids = Vec::new();
        for s in starts {
            let id = s
                .get("EventId")
                .and_then(Value::as_str)
                .ok_or("Each StartRequest must contain an EventId.")?;
            if !self.events.iter().any(|e| e.id.eq_ignore_ascii_case(id)) {
                return Err(format!("EventId {id} is not a current scheduled event."));
            }
            ids.push(id.to_string());
        }
        for id in ids {
            if let Some(e) = self
                .events
                .iter_mut()
                .find(|e| e.id.eq_ignore_ascii_case(&id))
            {
                e.approved = true;
            }
            self.acks.push(AcknowledgedEvent {
                vm: vm.to_string(),
                event_id: id,
            });
        }
        Ok(())
    }

    /// Every approval received so far, in order.
    pub fn acknowledged(&self) -> &[AcknowledgedEvent] {
        &self.acks
    }
}
