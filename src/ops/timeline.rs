//! `cloudha events --failover [EPOCH]`: one failover drawn as a timeline, from the journal.
//!
//! The daemon writes the failover record (see [`FailoverRecord`]) into every `takeover_done`
//! and `takeover_failed` entry, so the picture can be drawn after the fact, with the daemon
//! down. Time runs left to right from the last keepalive heard from the peer (or from the
//! decision when the peer was alive: a switchover or a preemption): the detection, then each
//! operation as a bar where it started and as long as it ran, with the API requests it made
//! as marks under it, all on one axis, in 100 columns.
//!
//! API requests are reported by API name (`nic.put`), not by operation, so a request belongs to
//! the operation of the same resource kind (`nic.*` to `nic.remove ...`) that was running when it
//! was sent, else to the only operation running then; the rest are drawn on their own row.
//!
//! Everything here may come from outside: operation outcomes are cloud API error texts, the
//! reason may quote the peer. Text is drawn in printable ASCII only (control bytes shown as
//! `\xNN`, other characters as `?`), so no escape sequence reaches the terminal and every
//! character is one column.

use std::fmt::Write;

use crate::ops::journal::Entry;
use crate::status::{ApiCallRecord, FailoverRecord};

/// The whole drawing's width (columns).
pub const WIDTH: usize = 100;
/// Row labels.
const LABEL: usize = 24;
/// The time axis between the two `|`.
const BAR: usize = 52;
/// Durations and outcomes right of the axis (WIDTH - LABEL - BAR - the two `|` and two spaces).
const RIGHT: usize = WIDTH - LABEL - BAR - 4;
/// Columns between ticks on the axis.
const TICK: usize = 6;
/// Operations drawn at most; a takeover makes a handful, a long retry loop a few more.
const MAX_ROWS: usize = 40;

/// One failover found in the journal.
#[derive(Debug, Clone)]
pub struct Failover {
    /// The node that took over (the journal's writer).
    pub node: String,
    /// The record written with its last takeover_done / takeover_failed entry.
    pub record: FailoverRecord,
    /// The error of the last attempt when the failover did not converge.
    pub failed: Option<String>,
}

/// The failover of `epoch` (the newest when `None`) in `entries`.
pub fn find(entries: &[Entry], epoch: Option<u64>) -> Result<Failover, String> {
    let mut found = None;
    let mut epochs = Vec::new();
    for entry in entries {
        let failed = match entry.kind.as_str() {
            "takeover_done" => None,
            "takeover_failed" => Some(entry.message.clone()),
            _ => continue,
        };
        let Some(value) = entry.data.get("failover") else {
            continue;
        };
        let Ok(record) = serde_json::from_value::<FailoverRecord>(value.clone()) else {
            continue;
        };
        if !epochs.contains(&record.epoch) {
            epochs.push(record.epoch);
        }
        if epoch.is_none_or(|e| e == record.epoch) {
            found = Some(Failover {
                node: entry.node.clone(),
                record,
                failed,
            });
        }
    }
    match (found, epoch) {
        (Some(failover), _) => Ok(failover),
        (None, Some(e)) if !epochs.is_empty() => Err(format!(
            "no takeover for epoch {e} in the journal; epochs with one: {}",
            epochs
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        (None, _) => Err(
            "the journal holds no finished takeover with its failover record \
                          (written by this version on takeover_done / takeover_failed)"
                .to_string(),
        ),
    }
}

/// Printable ASCII only, at most `max` columns: control bytes as `\xNN`, other characters as
/// `?`, a cut shown by a final `~`.
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        match c {
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            _ => out.push('?'),
        }
    }
    if out.len() > max {
        out.truncate(max.saturating_sub(1));
        out.push('~');
    }
    out
}

/// `1234 ms` below ten seconds, `12.3 s` above.
fn duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms")
    } else {
        format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
    }
}

/// A request the provider had to retry (or gave up on): throttled, conflict, server error,
/// transport error.
fn is_retry(call: &ApiCallRecord) -> bool {
    !(200..300).contains(&call.status)
}

/// An operation placed on the axis (ms from the origin).
struct Bar<'a> {
    id: &'a str,
    outcome: &'a str,
    start: u64,
    end: u64,
    calls: Vec<&'a ApiCallRecord>,
}

/// The resource kind of an operation id or API name: `nic` for `nic.remove x` and `nic.put`.
fn kind_of(name: &str) -> &str {
    name.split(['.', ' ']).next().unwrap_or(name)
}

/// Column of time `t` on an axis of `span` ms.
fn column(t: u64, span: u64) -> usize {
    let c = (u128::from(t) * BAR as u128 / u128::from(span.max(1))) as usize;
    c.min(BAR - 1)
}

/// One row: label, the axis cells, the right-hand text.
fn row(out: &mut String, label: &str, cells: &[u8], right: &str) {
    let cells = String::from_utf8_lossy(cells);
    let _ = writeln!(
        out,
        "{:<LABEL$} |{cells}| {}",
        sanitize(label, LABEL),
        sanitize(right, RIGHT)
    );
}

/// The timeline of one failover, every line at most [`WIDTH`] columns.
pub fn render(failover: &Failover) -> String {
    let f = &failover.record;
    // The origin is the last keepalive heard when the peer went silent, else the decision.
    let detection = f.detection_ms.unwrap_or(0);
    let mut bars: Vec<Bar> = f
        .operations
        .iter()
        .map(|op| {
            let start = detection + op.started_ms.unwrap_or(0);
            Bar {
                id: &op.id,
                outcome: &op.outcome,
                start,
                end: start + op.elapsed_ms,
                calls: Vec::new(),
            }
        })
        .collect();
    bars.sort_by_key(|b| (b.start, b.end));
    let mut other: Vec<&ApiCallRecord> = Vec::new();
    for call in &f.calls {
        let sent = detection + call.sent_ms;
        let running: Vec<usize> = (0..bars.len())
            .filter(|&i| bars[i].start <= sent && sent <= bars[i].end)
            .collect();
        let same_kind = running
            .iter()
            .copied()
            .find(|&i| kind_of(bars[i].id) == kind_of(&call.api));
        match same_kind.or(if running.len() == 1 {
            Some(running[0])
        } else {
            None
        }) {
            Some(i) => bars[i].calls.push(call),
            None => other.push(call),
        }
    }
    let ends = bars.iter().map(|b| b.end);
    let call_ends = f
        .calls
        .iter()
        .map(|c| detection + c.sent_ms + c.duration_ms);
    let span = ends
        .chain(call_ends)
        .chain(f.total_ms.map(|t| detection + t))
        .chain([detection])
        .max()
        .unwrap_or(0)
        .max(1);

    let mut out = String::new();
    let calls: u64 = f.api_calls.values().sum();
    let outcome = match (&failover.failed, f.total_ms) {
        (Some(_), _) => "FAILED".to_string(),
        (None, Some(total)) => format!("converged {} after the decision", duration(total)),
        (None, None) => "running".to_string(),
    };
    let header = format!(
        "Failover to epoch {} on {}: {outcome}, {} attempt(s), {calls} API call(s)",
        f.epoch,
        sanitize(&failover.node, 40),
        f.attempts
    );
    let _ = writeln!(out, "{}", sanitize(&header, WIDTH));
    let _ = writeln!(out, "{}", sanitize(&format!("Reason: {}", f.reason), WIDTH));
    let left = "0";
    let right_label = duration(span);
    let _ = writeln!(
        out,
        "{:LABEL$}  {left}{right_label:>width$}",
        "",
        width = BAR - left.len()
    );

    let mut cells = [b' '; BAR];
    match f.detection_ms {
        Some(d) => {
            fill(&mut cells, 0, d, span, b'-');
            cells[column(d, span)] = b'>';
            row(&mut out, "detection", &cells, &duration(d));
        }
        None => {
            cells[0] = b'>';
            row(&mut out, "decided (peer alive)", &cells, "no detection");
        }
    }
    for bar in bars.iter().take(MAX_ROWS) {
        let mut cells = [b' '; BAR];
        fill(&mut cells, bar.start, bar.end, span, b'#');
        let verdict = if bar.outcome == "ok" { "ok" } else { "FAILED" };
        row(
            &mut out,
            bar.id,
            &cells,
            &format!("{} {verdict}", duration(bar.end - bar.start)),
        );
        if !bar.calls.is_empty() {
            calls_row(&mut out, "  API calls", &bar.calls, detection, span);
        }
    }
    if bars.len() > MAX_ROWS {
        let _ = writeln!(out, "  ... {} more operation(s)", bars.len() - MAX_ROWS);
    }
    if !other.is_empty() {
        calls_row(&mut out, "other API calls", &other, detection, span);
    }
    if let Some(w) = f.first_write_ms {
        let mut cells = [b' '; BAR];
        cells[column(detection + w, span)] = b'^';
        row(
            &mut out,
            "first write",
            &cells,
            &format!("+{}", duration(w)),
        );
    }
    let mut axis = [b'-'; BAR];
    for tick in (0..BAR).step_by(TICK) {
        axis[tick] = b'+';
    }
    let _ = writeln!(out, "{:LABEL$}  {}", "", String::from_utf8_lossy(&axis));
    let _ = writeln!(
        out,
        "{}",
        sanitize(
            &format!(
                "- silence  > decision  # operation  * API call 2xx  ! failed call (retried)  \
                 ^ 1st write  + {}",
                duration(span * TICK as u64 / BAR as u64)
            ),
            WIDTH
        )
    );
    for bar in bars.iter().filter(|b| b.outcome != "ok") {
        let line = format!("{}: {}", bar.id, bar.outcome);
        let _ = writeln!(out, "{}", sanitize(&line, WIDTH));
    }
    if let Some(e) = &failover.failed {
        let _ = writeln!(out, "{}", sanitize(e, WIDTH));
    }
    out
}

/// Mark `from..to` (ms) with `mark`: at least one cell, so a 2 ms operation still shows.
fn fill(cells: &mut [u8; BAR], from: u64, to: u64, span: u64, mark: u8) {
    let a = column(from, span);
    let b = column(to, span).max(a);
    for cell in &mut cells[a..=b] {
        *cell = mark;
    }
}

/// A row of API-call marks at their send times; the right column counts them and the retries.
fn calls_row(out: &mut String, label: &str, calls: &[&ApiCallRecord], detection: u64, span: u64) {
    let mut cells = [b' '; BAR];
    for call in calls {
        let cell = &mut cells[column(detection + call.sent_ms, span)];
        // An error wins the cell: a retry must not hide behind a success next to it.
        if is_retry(call) {
            *cell = b'!';
        } else if *cell != b'!' {
            *cell = b'*';
        }
    }
    let retries = calls.iter().filter(|c| is_retry(c)).count();
    row(
        out,
        label,
        &cells,
        &format!("{} calls, {retries} retried", calls.len()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::OperationRecord;
    use serde_json::json;

    fn op(id: &str, started: u64, elapsed: u64) -> OperationRecord {
        OperationRecord {
            id: id.into(),
            outcome: "ok".into(),
            elapsed_ms: elapsed,
            started_ms: Some(started),
        }
    }

    fn call(api: &str, status: u16, sent: u64) -> ApiCallRecord {
        ApiCallRecord {
            api: api.into(),
            status,
            write: api.ends_with("put"),
            sent_ms: sent,
            duration_ms: 40,
        }
    }

    fn sample() -> Failover {
        let mut record = FailoverRecord {
            epoch: 7,
            reason: "peer fw-a silent on every path".into(),
            decided_unix_ms: 1_763_769_600_000,
            detection_ms: Some(600),
            first_request_ms: Some(5),
            first_write_ms: Some(60),
            total_ms: Some(2400),
            attempts: 1,
            operations: vec![
                op("route.put rt-lan/default", 10, 400),
                op("nic.remove nic-a", 5, 1200),
                op("nic.add nic-b", 1210, 1150),
            ],
            ..Default::default()
        };
        record.calls = vec![
            call("nic.get", 200, 5),
            call("nic.put", 200, 60),
            call("route.put", 429, 12),
            call("route.put", 200, 200),
            call("nic.put", 200, 1215),
            call("nic.get", 200, 2000),
        ];
        record.api_calls.insert("nic.get".into(), 2);
        record.api_calls.insert("nic.put".into(), 2);
        record.api_calls.insert("route.put".into(), 2);
        Failover {
            node: "fw-b".into(),
            record,
            failed: None,
        }
    }

    /// Columns of the `#` run on the row labelled `label`.
    fn bar_of(drawing: &str, label: &str) -> (usize, usize) {
        let line = drawing
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label} in\n{drawing}"));
        let axis: Vec<char> = line.chars().skip(LABEL + 2).take(BAR).collect();
        let first = axis.iter().position(|&c| c == '#').expect("a bar");
        let last = axis.iter().rposition(|&c| c == '#').expect("a bar");
        (first, last)
    }

    #[test]
    fn golden_drawing_of_a_failover() {
        let drawing = render(&sample());
        let expected = "\
Failover to epoch 7 on fw-b: converged 2400 ms after the decision, 1 attempt(s), 6 API call(s)
Reason: peer fw-a silent on every path
                          0                                            3000 ms
detection                |---------->                                         | 600 ms
nic.remove nic-a         |          ######################                    | 1200 ms ok
  API calls              |          **                                        | 2 calls, 0 retried
route.put rt-lan/default |          ########                                  | 400 ms ok
  API calls              |          !  *                                      | 2 calls, 1 retried
nic.add nic-b            |                               #####################| 1150 ms ok
  API calls              |                               *             *      | 2 calls, 0 retried
first write              |           ^                                        | +60 ms
                          +-----+-----+-----+-----+-----+-----+-----+-----+---
- silence  > decision  # operation  * API call 2xx  ! failed call (retried)  ^ 1st write  + 346 ms
";
        assert_eq!(drawing, expected, "\n{drawing}");
    }

    #[test]
    fn every_line_fits_100_columns_even_with_long_hostile_text() {
        let mut f = sample();
        f.record.reason = format!("\x1b]0;owned\x07\x1b[2J{}", "x".repeat(500));
        f.record.operations[0].outcome =
            format!("403 \x1b[31mforbidden\u{202e} {}", "é".repeat(300));
        f.record.operations[1].id = "nic.remove \x1b[1m".repeat(20);
        f.node = "fw-b\r\nspoofed line".into();
        f.failed = Some("\x1b[?1049h".repeat(50));
        let drawing = render(&f);
        for line in drawing.lines() {
            assert!(line.len() <= WIDTH, "{} columns: {line}", line.len());
            assert!(line.is_ascii(), "{line}");
            assert!(
                !line.chars().any(|c| c.is_control()),
                "control character in {line:?}"
            );
        }
        assert!(drawing.contains("\\x1b[31mforbidden?"), "{drawing}");
        assert!(!drawing.contains("\nspoofed line"), "{drawing}");
    }

    #[test]
    fn bars_are_ordered_by_start_and_proportional_to_duration() {
        let drawing = render(&sample());
        let lines: Vec<&str> = drawing.lines().collect();
        let position = |label: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(label))
                .unwrap_or_else(|| panic!("no {label}"))
        };
        assert!(position("nic.remove") < position("route.put"));
        assert!(position("route.put") < position("nic.add"));
        // 3000 ms over 52 columns: 20.8 columns for 1200 ms, 6.9 for 400 ms (+-1 for rounding).
        let span = 3000.0;
        for (label, start, elapsed) in [
            ("nic.remove", 605.0, 1200.0),
            ("route.put", 610.0, 400.0),
            ("nic.add", 1810.0, 1150.0),
        ] {
            let (first, last) = bar_of(&drawing, label);
            let want_first = start * BAR as f64 / span;
            let want_len = elapsed * BAR as f64 / span;
            assert!(
                (first as f64 - want_first).abs() <= 1.0,
                "{label} at {first}"
            );
            let len = (last - first) as f64;
            assert!(
                (len - want_len).abs() <= 1.5,
                "{label}: {len} vs {want_len}"
            );
        }
    }

    #[test]
    fn a_switchover_has_no_detection_and_a_failure_is_named() {
        let mut f = sample();
        f.record.detection_ms = None;
        f.record.total_ms = None;
        f.record.operations[1].outcome = "nic.put: 403 AuthorizationFailed".into();
        f.failed = Some("takeover attempt failed: permission denied".into());
        let drawing = render(&f);
        assert!(drawing.contains("decided (peer alive)"), "{drawing}");
        assert!(drawing.contains(": FAILED,"), "{drawing}");
        assert!(drawing.contains("1200 ms FAILED"), "{drawing}");
        assert!(
            drawing.contains("nic.remove nic-a: nic.put: 403 AuthorizationFailed"),
            "{drawing}"
        );
        // Without detection the first operation starts at the left edge.
        assert_eq!(bar_of(&drawing, "nic.remove").0, 0);
    }

    #[test]
    fn finds_the_newest_or_the_asked_epoch_from_journal_entries() {
        let entry = |kind: &str, epoch: u64, data| Entry {
            at_unix_ms: 1,
            node: "fw-b".into(),
            role: "active".into(),
            epoch,
            kind: kind.into(),
            message: format!("{kind} {epoch}"),
            data,
        };
        let mut record = sample().record;
        let first = json!({ "failover": record.clone() });
        record.epoch = 9;
        let second = json!({ "failover": record });
        let entries = vec![
            entry("takeover_failed", 7, first.clone()),
            entry("takeover_done", 7, first),
            entry("transition", 8, serde_json::Value::Null),
            entry("takeover_failed", 9, second.clone()),
            entry("operation", 9, json!({ "failover": 3 })),
        ];
        let newest = find(&entries, None).expect("newest");
        assert_eq!(newest.record.epoch, 9);
        assert_eq!(newest.failed.as_deref(), Some("takeover_failed 9"));
        let seven = find(&entries, Some(7)).expect("epoch 7");
        assert_eq!(seven.failed, None);
        let missing = find(&entries, Some(8)).expect_err("no epoch 8");
        assert!(missing.contains("epochs with one: 7, 9"), "{missing}");
        let empty = find(&entries[2..3], None).expect_err("none");
        assert!(empty.contains("no finished takeover"), "{empty}");
    }
}
