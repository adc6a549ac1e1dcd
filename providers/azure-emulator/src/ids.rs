//! ARM resource IDs: building canonical IDs and parsing the references clients send.
//!
//! ARM IDs are case-insensitive, so state is keyed by the lower-cased ID while documents
//! keep the casing the resource was created with.

/// The lower-cased form used as a map key.
pub(crate) fn key(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

/// `/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider}/{type}/{name}`.
pub(crate) fn resource_id(sub: &str, rg: &str, provider_type: &str, name: &str) -> String {
    format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/{provider_type}/{name}")
}

/// Canonical NIC ID.
pub(crate) fn nic_id(sub: &str, rg: &str, name: &str) -> String {
    resource_id(sub, rg, "Microsoft.Network/networkInterfaces", name)
}

/// A parsed ARM resource ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ArmId {
    /// Subscription ID as written.
    pub subscription: String,
    /// Resource group as written.
    pub resource_group: String,
    /// Provider namespace, e.g. `Microsoft.Network`.
    pub provider: String,
    /// `(type, name)` pairs from the top-level resource down to the child.
    pub types: Vec<(String, String)>,
}

impl ArmId {
    /// Parses `/subscriptions/s/resourceGroups/rg/providers/P/t1/n1[/t2/n2...]`.
    pub fn parse(id: &str) -> Option<Self> {
        let segs: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
        if segs.len() < 8 || !segs.len().is_multiple_of(2) {
            return None;
        }
        if !segs[0].eq_ignore_ascii_case("subscriptions")
            || !segs[2].eq_ignore_ascii_case("resourceGroups")
            || !segs[4].eq_ignore_ascii_case("providers")
        {
            return None;
        }
        let types = segs[6..]
            .chunks(2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect();
        Some(Self {
            subscription: segs[1].to_string(),
            resource_group: segs[3].to_string(),
            provider: segs[5].to_string(),
            types,
        })
    }

    /// The full resource type, e.g. `Microsoft.Network/virtualNetworks/subnets`.
    pub fn full_type(&self) -> String {
        let mut t = self.provider.clone();
        for (ty, _) in &self.types {
            t.push('/');
            t.push_str(ty);
        }
        t
    }

    /// The ID of the top-level resource (the parent of a child resource).
    pub fn top_level_id(&self) -> String {
        let (ty, name) = &self.types[0];
        resource_id(
            &self.subscription,
            &self.resource_group,
            &format!("{}/{}", self.provider, ty),
            name,
        )
    }

    /// The last (most specific) resource name.
    #[cfg(test)]
    pub fn leaf_name(&self) -> &str {
        self.types.last().map(|(_, n)| n.as_str()).unwrap_or("")
    }

    /// The RBAC action that lets a resource be referenced ("joined") by another one, e.g.
    /// a subnet by a NIC's ipConfiguration: `Microsoft.Network/virtualNetworks/subnets/join/action`.
    /// Application security groups are the documented exception (`joinIpConfiguration`).
    pub fn join_action(&self) -> String {
        let t = self.full_type();
        if t.eq_ignore_ascii_case("Microsoft.Network/applicationSecurityGroups") {
            format!("{t}/joinIpConfiguration/action")
        } else {
            format!("{t}/join/action")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_child_ids() {
        let id = ArmId::parse(
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/v/subnets/sn",
        )
        .expect("valid id");
        assert_eq!(id.full_type(), "Microsoft.Network/virtualNetworks/subnets");
        assert_eq!(id.leaf_name(), "sn");
        assert_eq!(
            id.top_level_id(),
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Network/virtualNetworks/v"
        );
        assert_eq!(
            id.join_action(),
            "Microsoft.Network/virtualNetworks/subnets/join/action"
        );
        assert!(ArmId::parse("/subscriptions/S/resourceGroups/RG").is_none());
        assert!(ArmId::parse("garbage").is_none());
    }
}
