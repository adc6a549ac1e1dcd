//! Edits of a NIC's raw JSON for the two-step move. Pure functions, no I/O.
//!
//! Only `properties.ipConfigurations` is touched, and within it only the floating entries:
//! every other key (IP forwarding, NSG, DNS, tags, accelerated networking, other ipconfigs,
//! properties this code does not know) goes back to ARM exactly as it came.

use std::net::Ipv4Addr;

use serde_json::{json, Map, Value};

/// What an ipConfiguration for a floating IP needs besides its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The ipConfiguration's name (kept across the move).
    pub name: String,
    /// Subnet id.
    pub subnet_id: String,
    /// Public IP id, if the floating ipConfiguration carries one.
    pub public_ip_id: Option<String>,
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

/// The template of the ipConfiguration holding `ip` (to recreate it on the other NIC).
pub fn template_of(nic: &Value, ip: Ipv4Addr) -> Option<Template> {
    let c = ipconfig_with(nic, ip)?;
    Some(Template {
        name: name_of(c).to_string(),
        subnet_id: c
            .pointer("/properties/subnet/id")
            .and_then(Value::as_str)?
            .to_string(),
        public_ip_id: c
            .pointer("/properties/publicIPAddress/id")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
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

/// The NIC with an ipConfiguration added for each `(ip, template)` it does not hold yet; `None`
/// when it already holds them all.
pub fn with_addresses(
    nic: &Value,
    wanted: &[(Ipv4Addr, Template)],
) -> Result<Option<Value>, String> {
    let mut added = Vec::new();
    for (ip, template) in wanted {
        if holds(nic, *ip) {
            continue;
        }
        if let Some(clash) = ipconfigs(nic)
            .iter()
            .find(|c| name_of(c).eq_ignore_ascii_case(&template.name))
        {
            return Err(format!(
                "the NIC already has an ipConfiguration named {} (address {}); give the floating IP {ip} another ip_config_name",
                template.name,
                address_of(clash).map(|a| a.to_string()).unwrap_or_else(|| "dynamic".into())
            ));
        }
        let mut properties = Map::new();
        properties.insert("privateIPAddress".into(), json!(ip.to_string()));
        properties.insert("privateIPAllocationMethod".into(), json!("Static"));
        properties.insert("privateIPAddressVersion".into(), json!("IPv4"));
        properties.insert("primary".into(), json!(false));
        properties.insert("subnet".into(), json!({ "id": template.subnet_id }));
        if let Some(pip) = &template.public_ip_id {
            properties.insert("publicIPAddress".into(), json!({ "id": pip }));
        }
        added.push(json!({ "name": template.name, "properties": properties }));
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
        let mut base = nic();
        base = without_addresses(&base, &[ip("10.0.1.100")])
            .expect("ok")
            .expect("changed");
        let t1 = template_of(&nic(), ip("10.0.1.100")).expect("template");
        assert_eq!(t1.public_ip_id.as_deref(), Some("/pip/f"));
        let t2 = Template {
            name: "floating-2".into(),
            subnet_id: "/sub/a".into(),
            public_ip_id: None,
        };
        let after = with_addresses(&base, &[(ip("10.0.1.100"), t1), (ip("10.0.1.101"), t2)])
            .expect("ok")
            .expect("changed");
        assert_eq!(ipconfigs(&after).len(), 4);
        let added = ipconfig_with(&after, ip("10.0.1.100")).expect("added");
        assert_eq!(added["name"], "floating");
        assert_eq!(added["properties"]["publicIPAddress"]["id"], "/pip/f");
        assert_eq!(added["properties"]["privateIPAllocationMethod"], "Static");
        // Everything else is untouched.
        assert_eq!(
            after["properties"]["somethingNew"],
            base["properties"]["somethingNew"]
        );
        assert_eq!(after["tags"], base["tags"]);
        assert_eq!(
            with_addresses(
                &after,
                &[(
                    ip("10.0.1.100"),
                    template_of(&after, ip("10.0.1.100")).expect("t")
                )]
            ),
            Ok(None)
        );
    }

    #[test]
    fn a_name_clash_is_reported() {
        let t = Template {
            name: "other".into(),
            subnet_id: "/sub/a".into(),
            public_ip_id: None,
        };
        let e = with_addresses(&nic(), &[(ip("10.0.1.200"), t)]).expect_err("clash");
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
