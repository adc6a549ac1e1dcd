//! Owns the permissions API (`Microsoft.Authorization/permissions`, which returns the caller's
//! effective `actions`/`notActions` at a scope): its api-version and how its answer is read
//! ([`grants`], [`action_matches`]). Both the pre-strip [`crate::gate`] and `cloudha selftest`
//! ask it.

use serde_json::Value;

/// api-version of `Microsoft.Authorization/permissions`.
pub const PERMISSIONS_API_VERSION: &str = "2022-04-01";

/// Case-insensitive RBAC wildcard match (`*` matches any run of characters).
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Whether the permissions API answer (`value[]` of `{actions, notActions}`) grants `action`:
/// some entry allows it and that same entry does not exclude it.
pub fn grants(permissions: &Value, action: &str) -> bool {
    let list = |entry: &Value, key: &str| -> Vec<String> {
        entry
            .get(key)
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    permissions
        .get("value")
        .and_then(Value::as_array)
        .is_some_and(|entries| {
            entries.iter().any(|e| {
                list(e, "actions").iter().any(|p| action_matches(p, action))
                    && !list(e, "notActions")
                        .iter()
                        .any(|p| action_matches(p, action))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards_match_like_rbac() {
        assert!(action_matches(
            "*",
            "Microsoft.Network/networkInterfaces/write"
        ));
        assert!(action_matches(
            "microsoft.network/*",
            "Microsoft.Network/networkInterfaces/write"
        ));
        assert!(action_matches(
            "Microsoft.Network/*/read",
            "Microsoft.Network/routeTables/routes/read"
        ));
        assert!(!action_matches(
            "Microsoft.Network/*/read",
            "Microsoft.Network/routeTables/write"
        ));
        assert!(!action_matches(
            "Microsoft.Compute/*",
            "Microsoft.Network/x"
        ));
    }

    #[test]
    fn not_actions_subtract_within_their_entry() {
        let p = json!({"value": [
            {"actions": ["Microsoft.Network/*"], "notActions": ["Microsoft.Network/networkInterfaces/write"]},
        ]});
        assert!(grants(&p, "Microsoft.Network/networkInterfaces/read"));
        assert!(!grants(&p, "Microsoft.Network/networkInterfaces/write"));
        let two = json!({"value": [
            {"actions": ["Microsoft.Network/*"], "notActions": ["Microsoft.Network/networkInterfaces/write"]},
            {"actions": ["Microsoft.Network/networkInterfaces/write"], "notActions": []},
        ]});
        assert!(grants(&two, "Microsoft.Network/networkInterfaces/write"));
        assert!(!grants(&json!({"value": []}), "x"));
    }
}
