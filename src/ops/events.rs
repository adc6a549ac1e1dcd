//! `cloudha events`: the journal printed for people (or as JSON lines), optionally followed as
//! it grows. Reads the file directly, so it works when the daemon is down: after a crash is
//! when it is needed most.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use crate::ops::journal::{self, Entry};

/// How often `--follow` looks for new entries.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// One entry as a line for people: time (UTC), role, epoch, kind, message.
pub fn render(entry: &Entry) -> String {
    let secs = entry.at_unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let days = secs / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{:03} UTC [{}] epoch {} {:<16} {}",
        entry.at_unix_ms % 1000,
        entry.role,
        entry.epoch,
        entry.kind,
        entry.message
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm): no date crate needed for one timestamp format.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn print(out: &mut impl Write, entry: &Entry, json: bool) -> io::Result<()> {
    if json {
        let line = serde_json::to_string(entry).map_err(io::Error::other)?;
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{}", render(entry))
    }
}

/// Draw the failover of `epoch` (the newest when `None`) as a timeline (see `ops::timeline`).
/// The error says what the journal holds instead when there is no such failover.
pub fn show_failover(path: &Path, epoch: Option<u64>) -> Result<String, String> {
    let (entries, _) = journal::read_all(path).map_err(|e| e.to_string())?;
    let failover = crate::ops::timeline::find(&entries, epoch)?;
    Ok(crate::ops::timeline::render(&failover))
}

/// Print the last `lines` entries (all when `None`); with `follow`, keep printing new ones
/// (across rotations) until the process is stopped.
pub async fn show(path: &Path, lines: Option<usize>, json: bool, follow: bool) -> io::Result<()> {
    let (entries, skipped) = journal::read_all(path)?;
    let mut out = io::stdout().lock();
    let start = lines.map_or(0, |n| entries.len().saturating_sub(n));
    for entry in &entries[start..] {
        print(&mut out, entry, json)?;
    }
    if skipped > 0 {
        eprintln!("({skipped} unreadable line(s) skipped: a torn write at a crash)");
    }
    out.flush()?;
    drop(out);
    if !follow {
        return Ok(());
    }
    // Follow by the last entry printed: a rotation renames the file, and the entries are
    // re-read from both generations, so nothing is printed twice or missed.
    let mut last = entries.last().cloned();
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let (entries, _) = journal::read_all(path)?;
        let new_from = match &last {
            Some(l) => entries.iter().rposition(|e| e == l).map_or(0, |i| i + 1),
            None => 0,
        };
        let mut out = io::stdout().lock();
        for entry in &entries[new_from..] {
            print(&mut out, entry, json)?;
        }
        out.flush()?;
        if let Some(e) = entries.last() {
            last = Some(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_414), (2025, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let entry = Entry {
            at_unix_ms: 1_763_769_600_123,
            node: "fw-a".into(),
            role: "active".into(),
            epoch: 3,
            kind: "transition".into(),
            message: "standby -> active".into(),
            data: serde_json::Value::Null,
        };
        assert_eq!(
            render(&entry),
            "2025-11-22 00:00:00.123 UTC [active] epoch 3 transition       standby -> active"
        );
    }
}
