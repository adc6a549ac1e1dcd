//! [`ConfigDuration`]: the duration type every config section uses (`"200ms"`, `"3s"`, `"2m"`,
//! `"1h"`). A leaf: the section modules import it, it imports none of them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as `"200ms"`, `"3s"`, `"2m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parse `"<integer><unit>"` with unit `ms`, `s`, `m` or `h`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let value: u64 = digits.parse().map_err(|_| {
            format!(
                "{} is not a duration; write e.g. \"200ms\", \"3s\" or \"2m\"",
                crate::secure_fs::excerpt(text)
            )
        })?;
        let duration = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "{} has no known unit; write e.g. \"200ms\", \"3s\" or \"2m\"",
                    crate::secure_fs::excerpt(text)
                ))
            }
        };
        Ok(Self(duration))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ConfigDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}
