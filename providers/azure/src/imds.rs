//! Discovery of this VM and its LAN NIC from the Instance Metadata Service.
//!
//! IMDS gives the subscription, resource group, VM name and location, and each interface's MAC
//! address and subnets, but no NIC ids. The LAN interface is the one whose subnet holds the
//! floating IP; its ARM id comes from the VM's `networkProfile`, matched on the MAC address
//! (IMDS writes `000D3A1A2B3C`, ARM `00-0D-3A-1A-2B-3C`).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::Value;

use crate::arm::{ArmClient, CallLog, COMPUTE_API_VERSION, NETWORK_API_VERSION};
use crate::config::normalize_mac;
use crate::nic;

/// IMDS answers locally; anything slower means it is not there.
const IMDS_TIMEOUT: Duration = Duration::from_secs(3);
/// api-version of the instance document.
const INSTANCE_API_VERSION: &str = "2021-02-01";

/// What IMDS told us about this VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Subscription id.
    pub subscription: String,
    /// Resource group of the VM.
    pub resource_group: String,
    /// VM name.
    pub vm_name: String,
    /// Azure region.
    pub location: String,
    /// `(normalised MAC, subnets as (network, prefix length))` per interface.
    pub interfaces: Vec<(String, Vec<(Ipv4Addr, u8)>)>,
}

/// Read and parse the instance document.
pub async fn instance(endpoint: &str) -> Result<Instance, String> {
    // IMDS must never go through a proxy (it is link-local, and Azure refuses proxied requests).
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(IMDS_TIMEOUT)
        .build()
        .map_err(|e| format!("building the IMDS client: {e}"))?;
    let url = format!(
        "{}/metadata/instance?api-version={INSTANCE_API_VERSION}",
        endpoint.trim_end_matches('/')
    );
    let response = http
        .get(&url)
        .header("Metadata", "true")
        .send()
        .await
        .map_err(|e| format!("instance metadata service at {endpoint} unreachable: {e}"))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| format!("reading the instance document: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "instance metadata service answered {status}: {text}"
        ));
    }
    let doc: Value =
        serde_json::from_str(&text).map_err(|e| format!("instance document is not JSON: {e}"))?;
    parse_instance(&doc)
}

/// Parse `/metadata/instance` (api-version 2021-02-01).
pub fn parse_instance(doc: &Value) -> Result<Instance, String> {
    let field = |path: &str| -> Result<String, String> {
        doc.pointer(path)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| format!("instance document has no {path}"))
    };
    let interfaces = doc
        .pointer("/network/interface")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|i| {
                    let mac = normalize_mac(i.get("macAddress")?.as_str()?);
                    let subnets = i
                        .pointer("/ipv4/subnet")
                        .and_then(Value::as_array)
                        .map(|s| {
                            s.iter()
                                .filter_map(|n| {
                                    let address = n.get("address")?.as_str()?.parse().ok()?;
                                    let prefix = n.get("prefix")?.as_str()?.parse().ok()?;
                                    Some((address, prefix))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Some((mac, subnets))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Ok(Instance {
        subscription: field("/compute/subscriptionId")?,
        resource_group: field("/compute/resourceGroupName")?,
        vm_name: field("/compute/name")?,
        location: field("/compute/location")?,
        interfaces,
    })
}

fn contains(network: Ipv4Addr, prefix: u8, ip: Ipv4Addr) -> bool {
    if prefix > 32 {
        return false;
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(network) & mask == u32::from(ip) & mask
}

/// The MAC of the LAN interface: the one whose subnet holds `floating`, or the only one.
pub fn lan_mac(instance: &Instance, floating: Option<Ipv4Addr>) -> Result<String, String> {
    if let Some(ip) = floating {
        if let Some((mac, _)) = instance
            .interfaces
            .iter()
            .find(|(_, subnets)| subnets.iter().any(|(n, p)| contains(*n, *p, ip)))
        {
            return Ok(mac.clone());
        }
    }
    match instance.interfaces.as_slice() {
        [(mac, _)] => Ok(mac.clone()),
        [] => Err("the instance document lists no network interface".into()),
        _ => Err(format!(
            "{} interfaces and none has a subnet holding the floating IP; set provider.azure.own_nic",
            instance.interfaces.len()
        )),
    }
}

/// The ARM id of this VM's NIC with `mac`, from the VM's `networkProfile`.
pub async fn nic_id_for_mac(
    arm: &ArmClient,
    log: &CallLog,
    instance: &Instance,
    mac: &str,
) -> Result<String, String> {
    let vm_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{}",
        instance.subscription, instance.resource_group, instance.vm_name
    );
    let vm = arm
        .get(log, "vm.get", &vm_id, COMPUTE_API_VERSION)
        .await
        .map_err(|e| format!("reading this VM to find its NIC: {e}"))?;
    let ids: Vec<String> = vm
        .body
        .pointer("/properties/networkProfile/networkInterfaces")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|n| n.get("id").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for id in &ids {
        let nic_doc = arm
            .get(log, "nic.get", id, NETWORK_API_VERSION)
            .await
            .map_err(|e| format!("reading NIC {id}: {e}"))?;
        if nic::mac_address(&nic_doc.body)
            .map(normalize_mac)
            .as_deref()
            == Some(mac)
        {
            return Ok(id.clone());
        }
    }
    Err(format!(
        "none of the VM's {} NICs has MAC {mac}; set provider.azure.own_nic",
        ids.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "compute": {"subscriptionId": "s", "resourceGroupName": "rg", "name": "vm-a", "location": "westeurope"},
            "network": {"interface": [
                {"macAddress": "000D3A000001", "ipv4": {"subnet": [{"address": "10.0.0.0", "prefix": "24"}]}},
                {"macAddress": "000D3A000002", "ipv4": {"subnet": [{"address": "10.0.1.0", "prefix": "24"}]}}
            ]}
        })
    }

    #[test]
    fn picks_the_interface_whose_subnet_holds_the_floating_ip() {
        let i = parse_instance(&doc()).expect("parses");
        assert_eq!(i.vm_name, "vm-a");
        let floating = "10.0.1.100".parse().ok();
        assert_eq!(lan_mac(&i, floating).as_deref(), Ok("000D3A000002"));
        let e = lan_mac(&i, "192.168.0.1".parse().ok()).expect_err("ambiguous");
        assert!(e.contains("own_nic"), "{e}");
    }

    #[test]
    fn missing_compute_fields_are_named() {
        let e = parse_instance(&json!({"compute": {}})).expect_err("missing");
        assert!(e.contains("/compute/subscriptionId"), "{e}");
    }

    #[test]
    fn subnet_containment() {
        let net: Ipv4Addr = "10.0.1.0".parse().expect("ip");
        assert!(contains(net, 24, "10.0.1.255".parse().expect("ip")));
        assert!(!contains(net, 24, "10.0.2.1".parse().expect("ip")));
        assert!(contains(net, 0, "1.2.3.4".parse().expect("ip")));
    }
}
