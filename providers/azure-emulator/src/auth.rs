//! Bearer tokens, RBAC and the Microsoft.Authorization permissions API.
//!
//! Tokens are issued only by the emulated IMDS (or a test accessor) and carry the calling
//! VM's managed identity. ARM requests must present one; every ARM handler then checks the
//! identity's role for the action it performs and answers 403 `AuthorizationFailed` (or
//! `LinkedAuthorizationFailed` for referenced resources) in ARM's own words.

use crate::clock::{fmt_arm_utc, Clock};
use crate::http::{arm_error, Req, Resp};
use crate::state::{Identity, State, TokenGrant};
use serde_json::{json, Value};
use std::time::Duration;

/// Audiences ARM accepts (the resource a token was requested for).
pub(crate) const ARM_AUDIENCES: [&str; 4] = [
    "https://management.azure.com/",
    "https://management.azure.com",
    "https://management.core.windows.net/",
    "https://management.core.windows.net",
];

fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Issues a token for `principal_id` and remembers it. The token is JWT-shaped (with
/// `oid`, `appid`, `tid`, `aud`, `exp` claims) so clients that peek at claims work, but it
/// is only valid against this emulator's token table.
pub(crate) fn issue_token(
    st: &mut State,
    clock: &dyn Clock,
    principal_id: &str,
    audience: &str,
) -> Option<(String, TokenGrant)> {
    let ident = st
        .identities
        .get(&principal_id.to_ascii_lowercase())?
        .clone();
    let tenant = st
        .subscriptions
        .values()
        .next()
        .map(|s| s.tenant_id.clone())
        .unwrap_or_default();
    let lifetime = st.settings.token_lifetime_secs;
    let now_unix = clock.unix_now();
    let exp = now_unix + lifetime;
    let header = json!({"typ": "JWT", "alg": "none", "kid": "cloudha-azure-emulator"});
    let claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now_unix, "nbf": now_unix, "exp": exp,
        "oid": ident.principal_id, "sub": ident.principal_id,
        "appid": ident.client_id, "tid": tenant,
        "idtyp": "app", "jti": uuid::Uuid::new_v4().to_string(),
    });
    let token = format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(uuid::Uuid::new_v4().as_bytes())
    );
    let grant = TokenGrant {
        principal_id: ident.principal_id.clone(),
        audience: audience.to_string(),
        expires_at: clock.now() + Duration::from_secs(lifetime),
        expires_unix: exp,
    };
    st.tokens.insert(token.clone(), grant.clone());
    Some((token, grant))
}

fn unauthorized(tenant: &str, code: &str, message: String, description: &str) -> Resp {
    arm_error(401, code, message).with_header(
        "www-authenticate",
        format!(
            "Bearer authorization_uri=\"https://login.windows.net/{tenant}\", error=\"invalid_token\", error_description=\"{description}\""
        ),
    )
}

/// Checks the `Authorization: Bearer` header and returns the caller's principal ID.
pub(crate) fn authenticate(st: &State, req: &Req, clock: &dyn Clock) -> Result<String, Resp> {
    let tenant = st
        .subscriptions
        .values()
        .next()
        .map(|s| s.tenant_id.as_str())
        .unwrap_or("common");
    let Some(h) = req.header("authorization") else {
        return Err(unauthorized(
            tenant,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".into(),
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let token = match h.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty() => {
            t.trim()
        }
        _ => return Err(unauthorized(
            tenant,
            "AuthenticationFailedInvalidHeader",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .into(),
            "The authentication failed because of an invalid 'Authorization' header.",
        )),
    };
    let Some(grant) = st.tokens.get(token) else {
        return Err(unauthorized(
            tenant,
            "InvalidAuthenticationToken",
            "The access token is invalid.".into(),
            "The access token is invalid.",
        ));
    };
    if !ARM_AUDIENCES.contains(&grant.audience.as_str()) {
        return Err(unauthorized(
            tenant,
            "InvalidAuthenticationTokenAudience",
            format!(
                "The access token has been obtained for wrong audience or resource '{}'. It should exactly match with one of the allowed audiences '{}'.",
                grant.audience,
                ARM_AUDIENCES.join("','")
            ),
            "The access token has been obtained for wrong audience or resource.",
        ));
    }
    if clock.now() >= grant.expires_at {
        return Err(unauthorized(
            tenant,
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                fmt_arm_utc(grant.expires_unix),
                fmt_arm_utc(clock.unix_now())
            ),
            "The access token expiry UTC time is earlier than current UTC time.",
        ));
    }
    Ok(grant.principal_id.clone())
}

/// Case-insensitive glob where `*` matches any run of characters (RBAC action syntax).
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn in_scope(ident: &Identity, scope: &str) -> bool {
    let s = scope.to_ascii_lowercase();
    ident.scopes.iter().any(|a| {
        let a = a.trim_end_matches('/').to_ascii_lowercase();
        s == a || s.starts_with(&format!("{a}/"))
    })
}

/// Whether the identity may perform `action` on `scope`.
pub(crate) fn allowed(ident: &Identity, action: &str, scope: &str) -> bool {
    in_scope(ident, scope)
        && ident.actions.iter().any(|a| glob(a, action))
        && !ident.not_actions.iter().any(|a| glob(a, action))
}

/// 403 `AuthorizationFailed` unless the caller may perform `action` on `scope`.
pub(crate) fn authorize(
    st: &State,
    principal: &str,
    action: &str,
    scope: &str,
) -> Result<(), Resp> {
    let ident = st.identities.get(&principal.to_ascii_lowercase());
    if ident.is_some_and(|i| allowed(i, action, scope)) {
        Ok(())
    } else {
        // ARM names the client by its application (client) ID, then its object ID.
        let client = ident.map_or(principal, |i| i.client_id.as_str());
        Err(arm_error(
            403,
            "AuthorizationFailed",
            format!(
                "The client '{client}' with object id '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        ))
    }
}

/// 403 `LinkedAuthorizationFailed` unless the caller may perform every linked
/// `(action, scope)` (e.g. joining the subnet a NIC's ipConfiguration references).
///
/// ARM runs these "linked access checks" itself, before the request reaches the resource
/// provider, on the resource ids the request body references (learn.microsoft.com,
/// "Troubleshoot ... LinkedAuthorizationFailed": the client "has permission to perform
/// action ... on scope ...; however, it does not have permission to perform action ... on
/// the linked scope(s)"). Every failing pair is named in one message, as ARM does: one
/// action as `action 'A' on the linked scope(s) 'S1,S2'`, several as `action(s) 'A1,A2' on
/// the linked scope(s) 'S1,S2' (respectively)`. The client is named by its application
/// (client) ID, then its object ID, as in ARM's answers.
pub(crate) fn authorize_linked(
    st: &State,
    principal: &str,
    main_action: &str,
    main_scope: &str,
    linked: &[(String, String)],
) -> Result<(), Resp> {
    let Some(ident) = st.identities.get(&principal.to_ascii_lowercase()) else {
        return authorize(st, principal, main_action, main_scope);
    };
    let mut denied: Vec<(&str, &str)> = Vec::new();
    for (action, scope) in linked {
        let pair = (action.as_str(), scope.as_str());
        if !allowed(ident, action, scope)
            && !denied
                .iter()
                .any(|(a, s)| a.eq_ignore_ascii_case(pair.0) && s.eq_ignore_ascii_case(pair.1))
        {
            denied.push(pair);
        }
    }
    if denied.is_empty() {
        return Ok(());
    }
    let scopes = denied.iter().map(|(_, s)| *s).collect::<Vec<_>>().join(",");
    let first = denied[0].0;
    let what = if denied.iter().all(|(a, _)| a.eq_ignore_ascii_case(first)) {
        format!("action '{first}' on the linked scope(s) '{scopes}'")
    } else {
        let actions = denied.iter().map(|(a, _)| *a).collect::<Vec<_>>().join(",");
        format!("action(s) '{actions}' on the linked scope(s) '{scopes}' (respectively)")
    };
    let client = &ident.client_id;
    Err(arm_error(
        403,
        "LinkedAuthorizationFailed",
        format!(
            "The client '{client}' with object id '{principal}' has permission to perform action '{main_action}' on scope '{main_scope}'; however, it does not have permission to perform {what} or the linked scope(s) are invalid."
        ),
    ))
}

/// `GET {scope}/providers/Microsoft.Authorization/permissions` (api-version 2022-04-01):
/// the caller's effective actions at `scope`.
pub(crate) fn permissions_api(st: &State, principal: &str, scope: &str) -> Resp {
    let value: Vec<Value> = st
        .identities
        .get(&principal.to_ascii_lowercase())
        .filter(|i| in_scope(i, scope))
        .map(|i| {
            vec![json!({
                "actions": i.actions,
                "notActions": i.not_actions,
                "dataActions": [],
                "notDataActions": [],
            })]
        })
        .unwrap_or_default();
    Resp::json(200, &json!({ "value": value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_rbac_patterns() {
        assert!(glob("*", "Microsoft.Network/networkInterfaces/write"));
        assert!(glob(
            "Microsoft.Network/*",
            "microsoft.network/networkInterfaces/write"
        ));
        assert!(glob(
            "Microsoft.Network/*/read",
            "Microsoft.Network/routeTables/read"
        ));
        assert!(!glob(
            "Microsoft.Network/*/read",
            "Microsoft.Network/routeTables/write"
        ));
        assert!(!glob("Microsoft.Compute/*", "Microsoft.Network/x"));
    }

    #[test]
    fn base64url_without_padding() {
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
