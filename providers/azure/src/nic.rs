//! Edits of a NIC's raw JSON for the two-step move. Pure functions, no I/O.
//!
//! Only `properties.ipConfigurations` is touched, and within it only the floating entries:
//! every other key (IP forwarding, NSG, DNS, tags, accelerated networking, other ipconfigs,
//! properties this code does not know) goes back to ARM exactly as it came.

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

/// What a floating ipConfiguration is made from when no NIC holds it and nothing was kept of it:
/// the config's `ip_config_name`, the subnet and the config's `public_ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The ipConfiguration's name.
    pub name: String,
    /// Subnet id.
    pub subnet_id: String,
    /// Public IP id, if the config gives one.
    pub public_ip_id: Option<String>,
}

impl Template {
    /// The entry this template makes for `ip` (a static secondary ipConfiguration).
    pub fn entry(&self, ip: Ipv4Addr) -> Value {
        let mut properties = Map::new();
        properties.insert("privateIPAddress".into(), json!(ip.to_string()));
        properties.insert("privateIPAllocationMethod".into(), json!("Static"));
        properties.insert("privateIPAddressVersion".into(), json!("IPv4"));
        properties.insert("primary".into(), json!(false));
        properties.insert("subnet".into(), json!({ "id": self.subnet_id }));
        if let Some(pip) = &self.public_ip_id {
            properties.insert("publicIPAddress".into(), json!({ "id": pip }));
        }
        json!({ "name": self.name, "properties": properties })
    }
}

/// Keys of an ipConfiguration that ARM owns for the NIC it sits on: never carried to another NIC.
const ARM_OWNED: &[&str] = &["id", "etag", "type"];
/// Keys of an ipConfiguration's `properties` that ARM owns (read-only in the REST spec's
/// `NetworkInterfaceIPConfigurationPropertiesFormat`).
const ARM_OWNED_PROPERTIES: &[&str] = &["provisioningState", "privateLinkConnectionProperties"];

/// The ipConfiguration `entry` read on NIC `from_nic`, made ready for NIC `to_nic` holding `ip`:
/// every property kept (application security groups, backend pools, NAT rules, gateway load
/// balancer, prefix length, public IP, properties this code does not know), less what ARM owns
/// for the NIC (id, etag, type, provisioningState) and with nested ids that pointed into
/// `from_nic` pointed into `to_nic`. It stays a static secondary entry at `ip`, whatever the
/// source said, so the address cannot change on the way.
pub fn carried_entry(entry: &Value, from_nic: &str, to_nic: &str, ip: Ipv4Addr) -> Value {
    let mut out = entry.clone();
    if let Some(map) = out.as_object_mut() {
        for key in ARM_OWNED {
            map.remove(*key);
        }
    }
    if let Some(props) = out.get_mut("properties").and_then(Value::as_object_mut) {
        for key in ARM_OWNED_PROPERTIES {
            props.remove(*key);
        }
        props.insert("privateIPAddress".into(), json!(ip.to_string()));
        props.insert("privateIPAllocationMethod".into(), json!("Static"));
        props.insert("primary".into(), json!(false));
    }
    repoint_ids(&mut out, from_nic, to_nic);
    out
}

/// Rewrite every `id` string under `value` that lies inside `from` to lie inside `to`.
fn repoint_ids(value: &mut Value, from: &str, to: &str) {
    let prefix = format!("{}/", from.trim_end_matches('/').to_ascii_lowercase());
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "id" {
                    if let Value::String(id) = v {
                        if id.to_ascii_lowercase().starts_with(&prefix) {
                            *id = format!("{}/{}", to.trim_end_matches('/'), &id[prefix.len()..]);
                        }
                    }
                } else {
                    repoint_ids(v, from, to);
                }
            }
        }
        Value::Array(list) => list.iter_mut().for_each(|v| repoint_ids(v, from, to)),
        _ => {}
    }
}

/// The ids of every resource an ipConfiguration links to, with the `join` action ARM checks on
/// each when a NIC PUT references it (the "linked authorization" of a write): subnet, public
/// IP, application security groups, load balancer backend pools and inbound NAT rules,
/// application gateway backend pools, gateway load balancer frontend.
pub fn linked_resources(entry: &Value) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let one = |pointer: &str| {
        entry
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let many = |key: &str| -> Vec<String> {
        entry
            .pointer(&format!("/properties/{key}"))
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|r| r.get("id").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(id) = one("/properties/subnet/id") {
        out.push(("Microsoft.Network/virtualNetworks/subnets/join/action", id));
    }
    if let Some(id) = one("/properties/publicIPAddress/id") {
        out.push(("Microsoft.Network/publicIPAddresses/join/action", id));
    }
    if let Some(id) = one("/properties/gatewayLoadBalancer/id") {
        out.push((
            "Microsoft.Network/loadBalancers/frontendIPConfigurations/join/action",
            id,
        ));
    }
    for (key, action) in [
        (
            "applicationSecurityGroups",
            "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action",
        ),
        (
            "loadBalancerBackendAddressPools",
            "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
        ),
        (
            "loadBalancerInboundNatRules",
            "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
        ),
        (
            "applicationGatewayBackendAddressPools",
            "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
        ),
    ] {
        for id in many(key) {
            out.push((action, id));
        }
    }
    out
}

/// What of `entry` a [`Template`] from the config would not recreate (for `selftest`): the
/// properties beyond address, subnet, allocation and version, and a public IP other than the
/// config's.
pub fn beyond_template(entry: &Value, config_public_ip: Option<&str>) -> Vec<String> {
    const PLAIN: &[&str] = &[
        "privateIPAddress",
        "privateIPAllocationMethod",
        "privateIPAddressVersion",
        "primary",
        "subnet",
        "provisioningState",
        "privateLinkConnectionProperties",
        "publicIPAddress",
    ];
    let mut out: Vec<String> = entry
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .filter(|(k, v)| {
                    !PLAIN.contains(&k.as_str())
                        && !v.is_null()
                        && v.as_array().is_none_or(|l| !l.is_empty())
                })
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    if let Some(pip) = entry
        .pointer("/properties/publicIPAddress/id")
        .and_then(Value::as_str)
    {
        if !config_public_ip.is_some_and(|c| c.eq_ignore_ascii_case(pip)) {
            out.push("publicIPAddress".into());
        }
    }
    out
}

/// The NIC's ipConfigurations (empty if absent).
pub fn ipconfigs(nic: &Value) -> &[Value] {
    nic.pointer("/properties/ipConfigurations")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The private IPv4 address of an ipConfiguration.
pub fn address_of(ipconfig: &Value) -> Option<Ipv4Addr> {
    ipconfig
        .pointer("/properties/privateIPAddress")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

fn is_primary(ipconfig: &Value, count: usize) -> bool {
    ipconfig
        .pointer("/properties/primary")
        .and_then(Value::as_bool)
        .unwrap_or(count == 1)
}

fn name_of(ipconfig: &Value) -> &str {
    ipconfig
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The ipConfiguration holding `ip`, if any.
pub fn ipconfig_with(nic: &Value, ip: Ipv4Addr) -> Option<&Value> {
    ipconfigs(nic).iter().find(|c| address_of(c) == Some(ip))
}

/// Whether the NIC has `ip` on one of its ipConfigurations.
pub fn holds(nic: &Value, ip: Ipv4Addr) -> bool {
    ipconfig_with(nic, ip).is_some()
}

/// The NIC's primary private address (the node's own LAN address).
pub fn primary_address(nic: &Value) -> Option<Ipv4Addr> {
    let all = ipconfigs(nic);
    all.iter()
        .find(|c| is_primary(c, all.len()))
        .and_then(address_of)
}

/// The subnet of the primary ipConfiguration.
pub fn primary_subnet(nic: &Value) -> Option<String> {
    let all = ipconfigs(nic);
    all.iter()
        .find(|c| is_primary(c, all.len()))
        .and_then(|c| c.pointer("/properties/subnet/id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The document says its last update has been applied: `provisioningState` is `Succeeded`
/// (strictly: a document without one says nothing).
pub fn update_applied(resource: &Value) -> bool {
    resource
        .pointer("/properties/provisioningState")
        .and_then(Value::as_str)
        == Some("Succeeded")
}

/// `properties.provisioningState` (`Succeeded`, `Updating`, `Failed`).
pub fn provisioning_state(resource: &Value) -> &str {
    resource
        .pointer("/properties/provisioningState")
        .and_then(Value::as_str)
        .unwrap_or("Succeeded")
}

/// `properties.enableIPForwarding`.
pub fn ip_forwarding(nic: &Value) -> Option<bool> {
    nic.pointer("/properties/enableIPForwarding")
        .and_then(Value::as_bool)
}

/// The NIC's MAC address as ARM writes it.
pub fn mac_address(nic: &Value) -> Option<&str> {
    nic.pointer("/properties/macAddress")
        .and_then(Value::as_str)
}

/// The NIC without the ipConfigurations holding any of `ips`; `None` when none of them is there.
/// Refuses to drop the primary ipConfiguration (ARM would answer `IpConfigDeleteNotSupported`).
pub fn without_addresses(nic: &Value, ips: &[Ipv4Addr]) -> Result<Option<Value>, String> {
    let all = ipconfigs(nic);
    let count = all.len();
    let mut kept = Vec::with_capacity(count);
    let mut removed = false;
    for c in all {
        match address_of(c) {
            Some(ip) if ips.contains(&ip) => {
                if is_primary(c, count) {
                    return Err(format!(
                        "{ip} is the primary address (ipConfiguration {}) of the NIC; a floating IP must be a secondary ipConfiguration",
                        name_of(c)
                    ));
                }
                removed = true;
            }
            _ => kept.push(c.clone()),
        }
    }
    if !removed {
        return Ok(None);
    }
    let mut out = nic.clone();
    if let Some(slot) = out.pointer_mut("/properties/ipConfigurations") {
        *slot = Value::Array(kept);
    }
    Ok(Some(out))
}

/// The NIC with each `(ip, entry)` added that it does not hold yet (`entry` as made by
/// [`carried_entry`] or [`Template::entry`]); `None` when it already holds them all.
pub fn with_addresses(nic: &Value, wanted: &[(Ipv4Addr, Value)]) -> Result<Option<Value>, String> {
    let mut added = Vec::new();
    for (ip, entry) in wanted {
        if holds(nic, *ip) {
            continue;
        }
        let name = name_of(entry);
        if let Some(clash) = ipconfigs(nic)
            .iter()
            .find(|c| name_of(c).eq_ignore_ascii_case(name))
        {
            return Err(format!(
                "the NIC already has an ipConfiguration named {name} (address {}); give the floating IP {ip} another ip_config_name",
                address_of(clash).map(|a| a.to_string()).unwrap_or_else(|| "dynamic".into())
            ));
        }
        added.push(entry.clone());
    }
    if added.is_empty() {
        return Ok(None);
    }
    let mut out = nic.clone();
    match out
        .pointer_mut("/properties/ipConfigurations")
        .and_then(Value::as_array_mut)
    {
        Some(list) => list.extend(added),
        None => return Err("the NIC document has no properties.ipConfigurations".into()),
    }
    Ok(Some(out))
}

/// The NIC's ETag: NRP puts it in the body; the header is the fallback.
pub fn etag(body: &Value, header: Option<&str>) -> Option<String> {
    body.get("etag")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| header.map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic() -> Value {
        json!({
            "name": "nic-a",
            "etag": "W/\"1\"",
            "tags": {"role": "fw"},
            "properties": {
                "enableIPForwarding": true,
                "networkSecurityGroup": {"id": "/nsg"},
                "dnsSettings": {"dnsServers": ["10.0.0.10"]},
                "enableAcceleratedNetworking": true,
                "somethingNew": {"kept": [1, 2, 3]},
                "ipConfigurations": [
                    {"name": "ipconfig1", "properties": {"primary": true, "privateIPAddress": "10.0.1.4",
                        "privateIPAllocationMethod": "Static", "subnet": {"id": "/sub/a"}}},
                    {"name": "floating", "properties": {"primary": false, "privateIPAddress": "10.0.1.100",
                        "subnet": {"id": "/sub/a"}, "publicIPAddress": {"id": "/pip/f"}}},
                    {"name": "other", "properties": {"privateIPAddress": "10.0.1.50", "subnet": {"id": "/sub/a"}}}
                ]
            }
        })
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test address")
    }

    #[test]
    fn removal_keeps_every_other_property_byte_for_byte() {
        let before = nic();
        let after = without_addresses(&before, &[ip("10.0.1.100")])
            .expect("ok")
            .expect("changed");
        let mut expected = before.clone();
        if let Some(list) = expected
            .pointer_mut("/properties/ipConfigurations")
            .and_then(Value::as_array_mut)
        {
            list.remove(1);
        }
        assert_eq!(after.to_string(), expected.to_string());
        assert!(!holds(&after, ip("10.0.1.100")));
        assert!(holds(&after, ip("10.0.1.50")));
    }

    #[test]
    fn removal_of_an_absent_address_changes_nothing() {
        assert_eq!(without_addresses(&nic(), &[ip("10.0.1.99")]), Ok(None));
    }

    #[test]
    fn the_primary_is_never_removed() {
        let e = without_addresses(&nic(), &[ip("10.0.1.4")]).expect_err("primary");
        assert!(e.contains("primary"), "{e}");
    }

    #[test]
    fn several_addresses_are_added_in_one_document() {
        let base = without_addresses(&nic(), &[ip("10.0.1.100")])
            .expect("ok")
            .expect("changed");
        let carried = carried_entry(
            ipconfig_with(&nic(), ip("10.0.1.100")).expect("entry"),
            "/nic-a",
            "/nic-b",
            ip("10.0.1.100"),
        );
        let t2 = Template {
            name: "floating-2".into(),
            subnet_id: "/sub/a".into(),
            public_ip_id: None,
        };
        let after = with_addresses(
            &base,
            &[
                (ip("10.0.1.100"), carried.clone()),
                (ip("10.0.1.101"), t2.entry(ip("10.0.1.101"))),
            ],
        )
        .expect("ok")
        .expect("changed");
        assert_eq!(ipconfigs(&after).len(), 4);
        let added = ipconfig_with(&after, ip("10.0.1.100")).expect("added");
        assert_eq!(added["name"], "floating");
        assert_eq!(added["properties"]["publicIPAddress"]["id"], "/pip/f");
        assert_eq!(added["properties"]["privateIPAllocationMethod"], "Static");
        let made = ipconfig_with(&after, ip("10.0.1.101")).expect("made");
        assert_eq!(made["properties"]["subnet"]["id"], "/sub/a");
        assert!(made["properties"].get("publicIPAddress").is_none());
        // Everything else is untouched.
        assert_eq!(
            after["properties"]["somethingNew"],
            base["properties"]["somethingNew"]
        );
        assert_eq!(after["tags"], base["tags"]);
        assert_eq!(
            with_addresses(&after, &[(ip("10.0.1.100"), carried)]),
            Ok(None)
        );
    }

    #[test]
    fn a_carried_entry_keeps_every_property_but_what_arm_owns_for_the_nic() {
        let peer = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic-b";
        let own = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic-a";
        let entry = json!({
            "name": "floating",
            "id": format!("{peer}/ipConfigurations/floating"),
            "etag": "W/\"7\"",
            "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
            "properties": {
                "provisioningState": "Succeeded",
                "privateIPAddress": "10.0.1.100",
                "privateIPAllocationMethod": "Dynamic",
                "privateIPAddressPrefixLength": 28,
                "primary": false,
                "subnet": {"id": "/sub/a"},
                "publicIPAddress": {"id": "/pip/f"},
                "applicationSecurityGroups": [{"id": "/asg/web"}],
                "loadBalancerBackendAddressPools": [{"id": "/lb/x/backendAddressPools/p"}],
                "loadBalancerInboundNatRules": [{"id": "/lb/x/inboundNatRules/ssh"}],
                "applicationGatewayBackendAddressPools": [{"id": "/agw/g/backendAddressPools/p"}],
                "gatewayLoadBalancer": {"id": "/lb/gw/frontendIPConfigurations/f"},
                "virtualNetworkTaps": [{"id": "/tap/t"}],
                "somethingNew": {"nested": {"id": format!("{peer}/ipConfigurations/floating/x")}}
            }
        });
        let out = carried_entry(&entry, peer, own, ip("10.0.1.100"));
        let mut expected = entry.clone();
        let map = expected.as_object_mut().expect("object");
        map.remove("id");
        map.remove("etag");
        map.remove("type");
        let props = expected["properties"].as_object_mut().expect("props");
        props.remove("provisioningState");
        props.insert("privateIPAllocationMethod".into(), json!("Static"));
        props.insert(
            "somethingNew".into(),
            json!({"nested": {"id": format!("{own}/ipConfigurations/floating/x")}}),
        );
        assert_eq!(out, expected);
        let linked: Vec<&str> = linked_resources(&out).iter().map(|(a, _)| *a).collect();
        assert_eq!(linked.len(), 7, "{linked:?}");
        assert!(linked
            .contains(&"Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action"));
        let beyond = beyond_template(&out, Some("/pip/f"));
        assert!(
            beyond.contains(&"applicationSecurityGroups".to_string()),
            "{beyond:?}"
        );
        assert!(
            !beyond.contains(&"publicIPAddress".to_string()),
            "{beyond:?}"
        );
        assert!(beyond_template(&out, None).contains(&"publicIPAddress".to_string()));
    }

    #[test]
    fn a_name_clash_is_reported() {
        let t = Template {
            name: "other".into(),
            subnet_id: "/sub/a".into(),
            public_ip_id: None,
        };
        let e = with_addresses(&nic(), &[(ip("10.0.1.200"), t.entry(ip("10.0.1.200")))])
            .expect_err("clash");
        assert!(e.contains("ip_config_name"), "{e}");
    }

    #[test]
    fn reads_primary_forwarding_and_etag() {
        let n = nic();
        assert_eq!(primary_address(&n), Some(ip("10.0.1.4")));
        assert_eq!(primary_subnet(&n).as_deref(), Some("/sub/a"));
        assert_eq!(ip_forwarding(&n), Some(true));
        assert_eq!(etag(&n, Some("W/\"h\"")).as_deref(), Some("W/\"1\""));
        assert_eq!(
            etag(&json!({}), Some("W/\"h\"")).as_deref(),
            Some("W/\"h\"")
        );
        assert_eq!(provisioning_state(&n), "Succeeded");
    }
}
