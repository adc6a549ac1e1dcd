//! The result of one `cloudha selftest` check. Both cloud providers return lists of these, and
//! the root crate renders them (text and JSON) and turns them into the exit code.

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything the check looked at is as a failover needs it.
    Pass,
    /// Not fatal to a failover, but worth the operator's attention (or could not be checked).
    Warn,
    /// A failover would fail or misbehave because of this.
    Fail,
}

/// One check: what it looked at, how it came out, and what to do about a failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable short name, e.g. `permission`, `ip_forwarding` (for scripts reading the JSON).
    pub name: String,
    /// How it came out.
    pub outcome: Outcome,
    /// What was looked at, and what was found.
    pub detail: String,
    /// One sentence telling the operator what to change (empty on a pass).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fix: String,
    /// How a permission was proved (`permissions API`, `DryRun`, `policy simulation`, `call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: &str, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: String::new(),
            method: None,
        }
    }

    /// A warning, with what to do about it.
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix: fix.into(),
            method: None,
        }
    }

    /// A failure, with the fix in one sentence.
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: fix.into(),
            method: None,
        }
    }

    /// The same check, saying how it was proved.
    pub fn proved_by(mut self, method: &str) -> Self {
        self.method = Some(method.into());
        self
    }
}

/// Whether any check in `checks` failed.
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.outcome == Outcome::Fail)
}

/// `host:port` of an endpoint URL (the scheme's default port when none is given).
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains(':') {
        authority.to_string()
    } else if url.starts_with("http://") {
        format!("{authority}:80")
    } else {
        format!("{authority}:443")
    }
}

/// The proxy an HTTP client configured from the environment uses for `url` (reqwest and the AWS
/// SDK both read `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` and skip hosts listed in `NO_PROXY`).
pub fn proxy_for(url: &str) -> Option<String> {
    let env = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let names: &[&str] = if url.starts_with("https://") {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    };
    let proxy = env(names)?;
    let no_proxy = env(&["NO_PROXY", "no_proxy"]).unwrap_or_default();
    (!excluded_by_no_proxy(&authority(url), &no_proxy)).then_some(proxy)
}

/// Whether `NO_PROXY` (comma-separated hosts, `.domain` suffixes or `*`) excludes `authority`.
pub fn excluded_by_no_proxy(authority: &str, no_proxy: &str) -> bool {
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority)
        .to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches('.').to_ascii_lowercase();
        entry == "*"
            || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
    })
}

/// Resolve the endpoint's host name (the first step of reaching a cloud API).
pub async fn resolve(url: &str) -> Result<Vec<std::net::SocketAddr>, String> {
    let target = authority(url);
    let found: Result<Vec<_>, _> = tokio::net::lookup_host(target.as_str())
        .await
        .map(|addrs| addrs.collect());
    match found {
        Ok(addrs) if addrs.is_empty() => Err(format!("{target} resolves to no address")),
        Ok(addrs) => Ok(addrs),
        Err(e) => Err(format!("cannot resolve {target}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matches_hosts_and_domain_suffixes() {
        assert_eq!(
            authority("https://management.azure.com"),
            "management.azure.com:443"
        );
        assert_eq!(authority("http://127.0.0.1:8080/x"), "127.0.0.1:8080");
        let list = "localhost, .internal,169.254.169.254";
        assert!(excluded_by_no_proxy("ec2.internal:443", list));
        assert!(excluded_by_no_proxy("169.254.169.254:80", list));
        assert!(!excluded_by_no_proxy("management.azure.com:443", list));
        assert!(excluded_by_no_proxy("anything:1", "*"));
        assert!(!excluded_by_no_proxy("anything:1", ""));
    }

    #[tokio::test]
    async fn resolves_an_address_literal_without_a_dns_query() {
        // Tests send nothing off the machine, so only a literal (no resolver traffic) is used.
        let found = resolve("http://127.0.0.1:9").await.expect("loopback");
        assert_eq!(found[0].port(), 9);
    }

    #[test]
    fn only_failures_count_as_failed() {
        let mut checks = vec![Check::pass("a", "ok"), Check::warn("b", "meh", "look")];
        assert!(!any_failed(&checks));
        checks.push(Check::fail("c", "broken", "fix it").proved_by("DryRun"));
        assert!(any_failed(&checks));
        let json = serde_json::to_value(&checks[2]).expect("serialises");
        assert_eq!(json["outcome"], "fail");
        assert_eq!(json["method"], "DryRun");
        assert!(serde_json::to_value(&checks[0])
            .expect("serialises")
            .get("fix")
            .is_none());
    }
}
