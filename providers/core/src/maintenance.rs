//! Maintenance the cloud has scheduled for this VM, and the date formats its metadata services
//! write.
//!
//! # Which events call for a handover
//! An active node should hand its role to a healthy peer before an event that interrupts it, and
//! acknowledge the event only once the handover has completed:
//!
//! | cloud | `kind` | `needs_handover` |
//! |---|---|---|
//! | Azure | `Freeze` (paused for seconds), `Reboot`, `Redeploy`, `Preempt` (Spot eviction), `Terminate` | yes: each one stops the data path for at least seconds |
//! | Azure | any other `EventType` a later API version adds | yes: unknown impact is treated as an interruption |
//! | AWS | `spot-terminate`, `spot-stop`, `spot-hibernate` (spot `instance-action`) | yes |
//! | AWS | `instance-reboot`, `system-reboot`, `instance-stop`, `instance-retirement`, `system-maintenance` | yes |
//! | AWS | any other code | yes: unknown impact is treated as an interruption |
//!
//! Events that are over are not returned at all: Azure drops them from its document, AWS marks
//! them `completed`/`canceled` (and its description starts with `[Completed]`/`[Canceled]`).
//! An event Azure has already `Started` is returned with `in_progress` set: it is happening now
//! (the node must not take the role back until it is gone), and acknowledging it is harmless.

use serde::{Deserialize, Serialize};

/// One maintenance event the platform announced for this VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// The platform's id of the event: what [`crate::Provider::acknowledge_maintenance`] takes
    /// (Azure `EventId`, AWS `EventId`, or `spot-<action>-<time>` for a spot notice).
    pub id: String,
    /// Azure `EventType` (`Freeze`, `Reboot`, `Redeploy`, `Preempt`, `Terminate`) or the AWS code
    /// (`spot-terminate`, `system-reboot`, `instance-stop`, ...).
    pub kind: String,
    /// The earliest time the platform may start it, in Unix milliseconds; `None` when the
    /// platform gave none (Azure leaves `NotBefore` blank once an event has started).
    pub not_before_unix_ms: Option<u64>,
    /// The platform's description, for logs and status.
    pub description: String,
    /// Whether the event interrupts the VM, so an active node should hand over first
    /// (see the module documentation for the rules).
    pub needs_handover: bool,
    /// Whether the platform may be carrying it out now (Azure `EventStatus: Started`; AWS: its
    /// `NotBefore` has passed). Not a reason to hand over again, but one not to take the role back.
    #[serde(default)]
    pub in_progress: bool,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of a UTC date and time, after range checks; `None` before 1970.
fn unix_ms(year: i64, month: u32, day: u32, h: u32, m: u32, s: u32, ms: u32) -> Option<u64> {
    let valid = (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && h < 24
        && m < 60
        && s < 61
        && ms < 1000;
    if !valid {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(h) * 3600
        + i64::from(m) * 60
        + i64::from(s);
    u64::try_from(secs)
        .ok()?
        .checked_mul(1000)?
        .checked_add(u64::from(ms))
}

fn number<T: std::str::FromStr>(text: &str, digits: usize) -> Option<T> {
    (text.len() == digits && text.bytes().all(|b| b.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn clock(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split(':');
    let h = number(parts.next()?, 2)?;
    let m = number(parts.next()?, 2)?;
    let s = number(parts.next()?, 2)?;
    parts.next().is_none().then_some((h, m, s))
}

/// Parse the dates both metadata services write in their maintenance documents, as Unix
/// milliseconds: Azure's RFC 1123 `Mon, 19 Sep 2016 18:29:47 GMT` and AWS's
/// `21 Jan 2019 09:00:43 GMT` (the same without the weekday). The weekday, when present, is
/// not checked against the date. `None` for anything else, including an empty string.
pub fn parse_http_date_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    // Drop an optional "Mon, " prefix.
    let text = match text.split_once(',') {
        Some((weekday, rest)) if weekday.len() == 3 => rest.trim_start(),
        Some(_) => return None,
        None => text,
    };
    let fields: Vec<&str> = text.split_ascii_whitespace().collect();
    let [day, month, year, time, zone] = fields.as_slice() else {
        return None;
    };
    if !(zone.eq_ignore_ascii_case("GMT") || zone.eq_ignore_ascii_case("UTC")) {
        return None;
    }
    let day: u32 = if day.len() == 1 {
        number(day, 1)?
    } else {
        number(day, 2)?
    };
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month))
        .and_then(|i| u32::try_from(i + 1).ok())?;
    let year: i64 = number(year, 4)?;
    let (h, m, s) = clock(time)?;
    unix_ms(year, month, day, h, m, s, 0)
}

/// Parse an RFC 3339 timestamp as AWS's spot `instance-action` writes it
/// (`2026-01-21T09:00:43Z`, optionally with fractional seconds or a `+hh:mm` offset), as Unix
/// milliseconds. `None` for anything else.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let (date, rest) = text.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let year: i64 = number(d.next()?, 4)?;
    let month: u32 = number(d.next()?, 2)?;
    let day: u32 = number(d.next()?, 2)?;
    if d.next().is_some() {
        return None;
    }
    // Split the time of day from its zone: `Z`, or `+hh:mm` / `-hh:mm`.
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0i64)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (t, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = zone[1..].split_once(':')?;
        let zh: i64 = number(zh, 2)?;
        let zm: i64 = number(zm, 2)?;
        (t, sign * (zh * 3600 + zm * 60))
    };
    let (time, fraction) = match time.split_once('.') {
        Some((t, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (t, f),
        Some(_) => return None,
        None => (time, ""),
    };
    let ms: u32 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    let (h, m, s) = clock(time)?;
    let local = unix_ms(year, month, day, h, m, s, ms)?;
    let offset_ms = offset_secs * 1000;
    u64::try_from(i64::try_from(local).ok()? - offset_ms).ok()
}

/// Now, in Unix milliseconds (0 if the system clock is before 1970).
pub fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_rfc1123_dates() {
        // 2016-09-19T18:29:47Z, as `date -u -d ... +%s` gives it.
        assert_eq!(
            parse_http_date_ms("Mon, 19 Sep 2016 18:29:47 GMT"),
            Some(1_474_309_787_000)
        );
        assert_eq!(
            parse_http_date_ms("Thu, 22 Jul 2021 04:50:17 GMT"),
            Some(1_626_929_417_000)
        );
        assert_eq!(parse_http_date_ms(""), None, "blank once started");
    }

    #[test]
    fn aws_dates_without_a_weekday() {
        assert_eq!(
            parse_http_date_ms("21 Jan 2019 09:00:43 GMT"),
            Some(1_548_061_243_000)
        );
        assert_eq!(
            parse_http_date_ms("1 Mar 2024 00:00:00 GMT"),
            Some(1_709_251_200_000),
            "single-digit day, after a leap February"
        );
    }

    #[test]
    fn leap_days_and_year_ends() {
        assert_eq!(
            parse_http_date_ms("29 Feb 2024 12:00:00 GMT"),
            Some(1_709_208_000_000)
        );
        assert_eq!(parse_http_date_ms("29 Feb 2023 12:00:00 GMT"), None);
        assert_eq!(
            parse_http_date_ms("31 Dec 1999 23:59:59 GMT"),
            Some(946_684_799_000)
        );
        assert_eq!(parse_http_date_ms("01 Jan 1970 00:00:00 GMT"), Some(0));
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "Mon 19 Sep 2016 18:29:47 GMT",
            "Monday, 19 Sep 2016 18:29:47 GMT",
            "19 Sept 2016 18:29:47 GMT",
            "19 Sep 16 18:29:47 GMT",
            "19 Sep 2016 18:29 GMT",
            "19 Sep 2016 24:00:00 GMT",
            "19 Sep 2016 18:29:47 CET",
            "32 Jan 2016 18:29:47 GMT",
            "19 Sep 2016 18:29:47",
            "2016-09-19T18:29:47Z",
        ] {
            assert_eq!(parse_http_date_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_as_spot_notices_write_it() {
        assert_eq!(
            parse_rfc3339_ms("2019-01-21T09:00:43Z"),
            Some(1_548_061_243_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2019-01-21T09:00:43.5Z"),
            Some(1_548_061_243_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2019-01-21T10:00:43+01:00"),
            Some(1_548_061_243_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2019-01-21T08:30:43-00:30"),
            Some(1_548_061_243_000)
        );
        for bad in [
            "",
            "2019-01-21 09:00:43Z",
            "2019-01-21T09:00:43",
            "2019-13-21T09:00:43Z",
            "2019-01-21T09:00Z",
            "2019-01-21T09:00:43.Z",
            "21 Jan 2019 09:00:43 GMT",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn maintenance_round_trips_through_json() {
        let m = Maintenance {
            id: "602d9444".into(),
            kind: "Freeze".into(),
            not_before_unix_ms: Some(1_474_309_787_000),
            description: "Host server is undergoing maintenance.".into(),
            needs_handover: true,
            in_progress: false,
        };
        let text = serde_json::to_string(&m).expect("serialize");
        assert_eq!(
            serde_json::from_str::<Maintenance>(&text).expect("parse"),
            m
        );
    }
}
