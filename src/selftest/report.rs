//! The self-test's output: one line per check (text) or one JSON document, and the exit code.

use cloudha_provider_core::{any_failed, Check, Outcome};
use serde::Serialize;

/// Everything one run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// This node's name.
    pub node: String,
    /// The provider kind.
    pub provider: String,
    /// The config file checked.
    pub config: String,
    /// Every check, in the order it ran.
    pub checks: Vec<Check>,
    /// How long the whole run took.
    pub duration_ms: u64,
}

/// Counts by outcome, for the summary line and the JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub warnings: usize,
    pub failed: usize,
}

impl Report {
    /// How many checks passed, warned and failed.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.checks {
            match c.outcome {
                Outcome::Pass => s.passed += 1,
                Outcome::Warn => s.warnings += 1,
                Outcome::Fail => s.failed += 1,
            }
        }
        s
    }

    /// Whether a failover can be trusted: no check failed.
    pub fn ok(&self) -> bool {
        !any_failed(&self.checks)
    }

    /// The exit code: 0 when no check failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.ok() {
            0
        } else {
            1
        }
    }

    /// The report as text: one line per check, the fix under each failure and warning.
    pub fn render_human(&self) -> String {
        let mut out = format!(
            "cloudha selftest: node {}, provider {}, config {}\n",
            self.node, self.provider, self.config
        );
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            let tag = match c.outcome {
                Outcome::Pass => "PASS",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
            };
            let method = c
                .method
                .as_deref()
                .map(|m| format!(" [{m}]"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  [{tag}] {:width$}  {}{method}\n",
                c.name, c.detail
            ));
            if !c.fix.is_empty() && c.outcome != Outcome::Pass {
                out.push_str(&format!("         {:width$}  fix: {}\n", "", c.fix));
            }
        }
        let s = self.summary();
        out.push_str(&format!(
            "Result: {} ({} failed, {} warning(s), {} passed, {:.1} s)\n",
            if self.ok() {
                "OK, nothing found that would stop a failover"
            } else {
                "FAILED, a failover would not complete"
            },
            s.failed,
            s.warnings,
            s.passed,
            self.duration_ms as f64 / 1000.0
        ));
        out
    }

    /// The report as one JSON document: `{node, provider, config, ok, summary, checks: [...]}`.
    pub fn render_json(&self) -> String {
        let doc = serde_json::json!({
            "node": self.node,
            "provider": self.provider,
            "config": self.config,
            "ok": self.ok(),
            "summary": self.summary(),
            "duration_ms": self.duration_ms,
            "checks": self.checks,
        });
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(checks: Vec<Check>) -> Report {
        Report {
            node: "fw-a".into(),
            provider: "azure".into(),
            config: "/etc/cloudha/cloudha.toml".into(),
            checks,
            duration_ms: 1200,
        }
    }

    #[test]
    fn a_failure_sets_the_exit_code_and_prints_its_fix() {
        let ok = report(vec![
            Check::pass("config", "valid"),
            Check::warn("peer", "daemon not running", "start it"),
        ]);
        assert_eq!(ok.exit_code(), 0);
        let bad = report(vec![
            Check::pass("config", "valid"),
            Check::fail("permission", "missing x on y", "grant x").proved_by("permissions API"),
        ]);
        assert_eq!(bad.exit_code(), 1);
        let text = bad.render_human();
        assert!(text.contains("[FAIL] permission"), "{text}");
        assert!(text.contains("[permissions API]"), "{text}");
        assert!(text.contains("fix: grant x"), "{text}");
        assert!(
            text.contains("1 failed, 0 warning(s), 1 passed, 1.2 s"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(&bad.render_json()).expect("json");
        assert_eq!(json["ok"], false);
        assert_eq!(json["summary"]["failed"], 1);
        assert_eq!(json["checks"][1]["fix"], "grant x");
    }
}
