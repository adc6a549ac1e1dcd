//! IAM policy simulation for the actions EC2 gives no `DryRun` (and for probes that have no
//! harmless form), evaluated against the *real* resources: a policy narrowed to the pair's ENIs,
//! route tables and Elastic IPs (as the README recommends) is judged as EC2 would judge the
//! failover's requests, not against `*`.
//!
//! Requests are SigV4-signed Query calls (`iam:SimulatePrincipalPolicy`, and
//! `sts:GetCallerIdentity` to learn the principal when IMDS is not used): two calls do not
//! justify compiling `aws-sdk-iam` and `aws-sdk-sts`.

use std::time::{Duration, SystemTime};

use crate::Credentials;

/// The IAM Query API's global endpoint.
pub const DEFAULT_IAM_ENDPOINT: &str = "https://iam.amazonaws.com";

/// One simulated request: an action on one resource ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub action: String,
    pub resource: String,
}

/// IAM's decision for one [`Request`]: `allowed`, `implicitDeny` or `explicitDeny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: String,
    pub resource: String,
    pub decision: String,
}

/// Where ARNs of this account's EC2 resources live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArnScope {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl ArnScope {
    /// The scope of `principal_arn` (`arn:PARTITION:iam::ACCOUNT:...` or `arn:...:sts::...`) in
    /// `region`.
    pub fn of(principal_arn: &str, region: &str) -> Option<ArnScope> {
        let parts: Vec<&str> = principal_arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", partition, "iam" | "sts", "", account, _] if !account.is_empty() => {
                Some(ArnScope {
                    partition: partition.to_string(),
                    region: region.to_string(),
                    account: account.to_string(),
                })
            }
            _ => None,
        }
    }

    /// `arn:aws:ec2:REGION:ACCOUNT:KIND/ID`.
    pub fn ec2(&self, kind: &str, id: &str) -> String {
        format!(
            "arn:{}:ec2:{}:{}:{kind}/{id}",
            self.partition, self.region, self.account
        )
    }
}

/// The role (or user) ARN IAM simulates for the principal `arn` that STS names: an assumed
/// role's session ARN becomes its role's ARN.
pub fn principal_for_simulation(arn: &str) -> Option<String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "sts", "", account, resource] => {
            let role = resource.strip_prefix("assumed-role/")?.split('/').next()?;
            Some(format!("arn:{partition}:iam::{account}:role/{role}"))
        }
        ["arn", _, "iam", "", _, resource]
            if resource.starts_with("user/") || resource.starts_with("role/") =>
        {
            Some(arn.to_string())
        }
        _ => None,
    }
}

/// `sts:GetCallerIdentity`: the ARN of the principal these credentials belong to.
pub async fn caller_arn(
    endpoint: &str,
    region: &str,
    credentials: &Credentials,
) -> Result<String, String> {
    let params = [
        ("Action".to_string(), "GetCallerIdentity".to_string()),
        ("Version".to_string(), "2011-06-15".to_string()),
    ];
    let (status, body) = query(endpoint, "sts", region, credentials, &params).await?;
    if status != 200 {
        return Err(error_of(status, &body));
    }
    xml_text(&body, "Arn")
        .map(str::to_string)
        .ok_or_else(|| "GetCallerIdentity answered without an Arn".to_string())
}

/// `iam:SimulatePrincipalPolicy` for `principal_arn`: every request's decision. Requests are
/// grouped by action (one call per action, with its resource ARNs) and carry the region context
/// keys EC2 sets on every request (`aws:RequestedRegion`, `ec2:Region`).
pub async fn simulate(
    endpoint: &str,
    credentials: &Credentials,
    principal_arn: &str,
    region: &str,
    requests: &[Request],
) -> Result<Vec<Decision>, String> {
    let mut actions: Vec<&str> = requests.iter().map(|r| r.action.as_str()).collect();
    actions.dedup();
    actions.sort_unstable();
    actions.dedup();
    let mut out = Vec::new();
    for action in actions {
        let mut params = vec![
            ("Action".to_string(), "SimulatePrincipalPolicy".to_string()),
            ("Version".to_string(), "2010-05-08".to_string()),
            ("PolicySourceArn".to_string(), principal_arn.to_string()),
            ("ActionNames.member.1".to_string(), action.to_string()),
        ];
        let resources: Vec<&str> = requests
            .iter()
            .filter(|r| r.action == action)
            .map(|r| r.resource.as_str())
            .collect();
        for (i, resource) in resources.iter().enumerate() {
            params.push((
                format!("ResourceArns.member.{}", i + 1),
                resource.to_string(),
            ));
        }
        for (i, key) in ["aws:RequestedRegion", "ec2:Region"].iter().enumerate() {
            let n = i + 1;
            params.push((
                format!("ContextEntries.member.{n}.ContextKeyName"),
                key.to_string(),
            ));
            params.push((
                format!("ContextEntries.member.{n}.ContextKeyType"),
                "string".into(),
            ));
            params.push((
                format!("ContextEntries.member.{n}.ContextKeyValues.member.1"),
                region.to_string(),
            ));
        }
        let (status, body) = query(endpoint, "iam", "us-east-1", credentials, &params).await?;
        if status != 200 {
            return Err(error_of(status, &body));
        }
        out.extend(parse_decisions(&body));
    }
    Ok(out)
}

/// The `EvaluationResults` of a `SimulatePrincipalPolicy` answer.
pub fn parse_decisions(body: &str) -> Vec<Decision> {
    // Each result is a top-level <member> of <EvaluationResults>; nested members (matched
    // statements) carry none of these three tags.
    body.split("<member>")
        .filter_map(|m| {
            Some(Decision {
                action: xml_text(m, "EvalActionName")?.to_string(),
                resource: xml_text(m, "EvalResourceName").unwrap_or("*").to_string(),
                decision: xml_text(m, "EvalDecision")?.to_string(),
            })
        })
        .collect()
}

fn error_of(status: u16, body: &str) -> String {
    let code = xml_text(body, "Code").unwrap_or("?");
    let message = xml_text(body, "Message").unwrap_or("no message");
    one_line(&format!("HTTP {status} {code}: {message}"))
}

/// At most one line of 200 characters.
pub fn one_line(s: &str) -> String {
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > 200 {
        format!("{}…", line.chars().take(200).collect::<String>())
    } else {
        line
    }
}

/// The text of the first `<tag>` in `xml`.
pub fn xml_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One SigV4-signed IAM Query API request (POST, form-encoded); returns status and body.
pub async fn iam_query(
    endpoint: &str,
    credentials: &Credentials,
    params: &[(String, String)],
) -> Result<(u16, String), String> {
    // IAM is global; its SigV4 scope is us-east-1 (aws partition).
    query(endpoint, "iam", "us-east-1", credentials, params).await
}

/// One SigV4-signed Query API request to `service` (POST, form-encoded).
async fn query(
    endpoint: &str,
    service: &str,
    region: &str,
    credentials: &Credentials,
    params: &[(String, String)],
) -> Result<(u16, String), String> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4;

    let url = format!("{}/", endpoint.trim_end_matches('/'));
    let body = params
        .iter()
        .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    let host = url
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(&url)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let content_type = "application/x-www-form-urlencoded; charset=utf-8";
    let identity = credentials.clone().into();
    let signing = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing parameters: {e}"))?
        .into();
    let headers = [("content-type", content_type), ("host", host.as_str())];
    let signable = SignableRequest::new(
        "POST",
        &url,
        headers.into_iter(),
        SignableBody::Bytes(body.as_bytes()),
    )
    .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(signable, &signing)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let mut request = client
        .post(&url)
        .header("content-type", content_type)
        .body(body);
    for (name, value) in instructions.headers() {
        request = request.header(name, value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| one_line(&format!("{url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| one_line(&format!("{url}: {e}")))?;
    Ok((status, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_per_action_and_resource() {
        let xml = "<EvaluationResults><member><EvalActionName>ec2:A</EvalActionName><EvalResourceName>arn:x</EvalResourceName><EvalDecision>allowed</EvalDecision><MatchedStatements><member><SourcePolicyId>p</SourcePolicyId></member></MatchedStatements></member><member><EvalActionName>ec2:B</EvalActionName><EvalDecision>implicitDeny</EvalDecision></member></EvaluationResults>";
        let found = parse_decisions(xml);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].resource, "arn:x");
        assert_eq!(found[0].decision, "allowed");
        assert_eq!(found[1].action, "ec2:B");
        assert_eq!(found[1].resource, "*");
        assert_eq!(
            form_encode("arn:aws:iam::1:role/x y"),
            "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx%20y"
        );
    }

    #[test]
    fn principals_and_arns() {
        assert_eq!(
            principal_for_simulation("arn:aws:sts::123456789012:assumed-role/cloudha/i-0abc")
                .as_deref(),
            Some("arn:aws:iam::123456789012:role/cloudha")
        );
        assert_eq!(
            principal_for_simulation("arn:aws:iam::123456789012:user/ops").as_deref(),
            Some("arn:aws:iam::123456789012:user/ops")
        );
        assert!(principal_for_simulation("arn:aws:iam::123456789012:root").is_none());
        let scope =
            ArnScope::of("arn:aws-cn:iam::123456789012:role/x", "cn-north-1").expect("scope");
        assert_eq!(
            scope.ec2("network-interface", "eni-1"),
            "arn:aws-cn:ec2:cn-north-1:123456789012:network-interface/eni-1"
        );
        assert!(ArnScope::of("garbage", "r").is_none());
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        let s = one_line(&format!("a\nb\x1b[31m{}", "x".repeat(500)));
        assert!(!s.contains('\n') && !s.contains('\x1b'));
        assert!(s.chars().count() <= 201);
    }
}
