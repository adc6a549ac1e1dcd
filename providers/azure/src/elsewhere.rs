//! A floating IP held by a NIC that is neither node's: who holds it, and what in the
//! configuration that says.
//!
//! When the add to this node's NIC is refused with `PrivateIPAddressInUse` after the configured
//! peer's NIC was found without the address (it does not exist, sits in another subnet, or simply
//! does not hold it), retrying cannot help: the address is on a third NIC, most often the peer
//! VM's real LAN NIC that `provider.azure.peer_nic` should have named. ARM's message names the
//! holder's ipConfiguration (`.../networkInterfaces/{nic}/ipConfigurations/{name}`); the attempt
//! ends with a permanent error that names that NIC, the field and the fix, and observe shows the
//! address on that NIC, not on "no NIC". The failover needs no read on other NICs for this (the
//! role grants none): the holder comes from ARM's own answer to our write.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::Value;

use crate::arm::{ArmError, ErrorClass};
use crate::ids::short;
use crate::nic;

/// Our code for "the configuration names the wrong peer NIC"; owned by [`crate::arm`], next to
/// the error type and its `fix_for`.
pub use crate::arm::PEER_NIC_MISMATCH;

/// The NIC ids (`/subscriptions/.../networkInterfaces/{name}`) an ARM message names, in order,
/// without repeats; ipConfiguration ids are cut back to their NIC.
pub fn nics_named_in(message: &str) -> Vec<String> {
    let lower = message.to_ascii_lowercase();
    let mut out: Vec<String> = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find("/subscriptions/") {
        let start = from + at;
        let end = message[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | ',' | ';' | '(' | ')'))
            .map_or(message.len(), |n| start + n);
        from = end.max(start + 1);
        let id = message[start..end].trim_end_matches(['.', ':']);
        let id_lower = id.to_ascii_lowercase();
        let Some(nics) = id_lower.find("/networkinterfaces/") else {
            continue;
        };
        let name_start = nics + "/networkinterfaces/".len();
        let name_end = id[name_start..]
            .find('/')
            .map_or(id.len(), |n| name_start + n);
        if name_end == name_start {
            continue;
        }
        let nic = &id[..name_end];
        if !out.iter().any(|o| o.eq_ignore_ascii_case(nic)) {
            out.push(nic.to_string());
        }
    }
    out
}

/// The NIC an `AddressInUse` answer to a write on `own` says holds the address, when it is
/// neither `own` nor `peer` (the emulator's and ARM's messages name both the requesting and the
/// holding ipConfiguration).
pub fn third_holder(e: &ArmError, own: &str, peer: &str) -> Option<String> {
    nics_named_in(&e.message)
        .into_iter()
        .find(|n| !n.eq_ignore_ascii_case(own) && !n.eq_ignore_ascii_case(peer))
}

/// What is wrong with the configured peer NIC, given what reading it returned (`None`: 404).
pub fn peer_problem(peer: &str, peer_doc: Option<&Value>, own_subnet: &str) -> String {
    match peer_doc {
        None => format!("the configured peer NIC {peer} does not exist (HTTP 404)"),
        Some(doc) => match nic::primary_subnet(doc) {
            Some(subnet) if !subnet.eq_ignore_ascii_case(own_subnet) => format!(
                "the configured peer NIC {} is in subnet {subnet}, not in this node's (and the floating IP's) subnet {own_subnet}",
                short(peer)
            ),
            _ => format!(
                "the configured peer NIC {} does not hold it",
                short(peer)
            ),
        },
    }
}

/// The permanent error for an add refused because `holder` (or, when ARM did not say, some NIC
/// other than the configured peer's) holds the addresses.
pub fn mismatch(ips: &str, holder: Option<&str>, problem: &str, refused: &ArmError) -> ArmError {
    let message = match holder {
        Some(h) => format!(
            "{ips} is held by NIC {h}, which is neither node's: {problem}. provider.azure.peer_nic must name the peer VM's LAN NIC: if {} is it, set provider.azure.peer_nic = \"{h}\"; otherwise remove {ips} from {}. Retrying cannot help (ARM: {} {})",
            short(h),
            short(h),
            refused.code,
            refused.message
        ),
        None => format!(
            "{ips} is held by a NIC that is neither node's: {problem}. Check provider.azure.peer_nic (it must name the peer VM's LAN NIC), or remove {ips} from the NIC ARM names: {} {}",
            refused.code, refused.message
        ),
    };
    ArmError {
        operation: "nic.add".into(),
        status: refused.status,
        code: PEER_NIC_MISMATCH.into(),
        message,
        retry_after: None,
        class: ErrorClass::Permanent,
    }
}

/// The third NICs ARM last named as holding a floating IP, for observe.
#[derive(Debug, Default)]
pub struct Elsewhere {
    by_ip: Mutex<BTreeMap<Ipv4Addr, String>>,
}

impl Elsewhere {
    /// ARM said `nic` holds `ip`.
    pub fn record(&self, ip: Ipv4Addr, nic: &str) {
        if let Ok(mut m) = self.by_ip.lock() {
            m.insert(ip, nic.to_string());
        }
    }

    /// `ip` was seen on a node's NIC (or its last known holder no longer has it).
    pub fn forget(&self, ip: Ipv4Addr) {
        if let Ok(mut m) = self.by_ip.lock() {
            m.remove(&ip);
        }
    }

    /// The NIC last named as holding `ip`.
    pub fn get(&self, ip: Ipv4Addr) -> Option<String> {
        self.by_ip.lock().ok().and_then(|m| m.get(&ip).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/fw-a-lan";
    const B: &str =
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/fw-b-lan";

    fn in_use(message: String) -> ArmError {
        ArmError {
            operation: "nic.put".into(),
            status: 400,
            code: "PrivateIPAddressInUse".into(),
            message,
            retry_after: None,
            class: ErrorClass::AddressInUse,
        }
    }

    #[test]
    fn the_holder_is_read_from_every_spelling_of_the_message() {
        // The emulator's (and NRP's) wording, both ipConfigurations named.
        let e = in_use(format!(
            "IP configuration {B}/ipConfigurations/floating is using the same private IP address 10.0.0.5 as IP configuration {A}/ipConfigurations/ipconfig2."
        ));
        assert_eq!(
            third_holder(&e, B, "/x/networkInterfaces/fw-a-wan"),
            Some(A.to_string())
        );
        // "in use by" a NIC id, quoted, at the end of a sentence.
        let e = in_use(format!("Private IP 10.0.0.5 is in use by '{A}'."));
        assert_eq!(third_holder(&e, B, "/x"), Some(A.to_string()));
        let e = in_use(format!("Private IP 10.0.0.5 is in use by {A}."));
        assert_eq!(third_holder(&e, B, "/x"), Some(A.to_string()));
        // The configured peer holding it is not a third holder (a take-back across a partition).
        assert_eq!(third_holder(&e, B, &A.to_ascii_uppercase()), None);
        // Nothing named: nothing guessed.
        let e = in_use("IP configuration is using the same private IP address.".into());
        assert_eq!(third_holder(&e, B, "/x"), None);
        assert!(
            nics_named_in("/subscriptions/ and /subscriptions/s/networkInterfaces/").is_empty()
        );
    }

    #[test]
    fn the_peer_problem_names_what_is_wrong_with_the_field() {
        assert!(peer_problem(A, None, "/sn/lan").contains("does not exist (HTTP 404)"));
        let doc = serde_json::json!({"properties": {"ipConfigurations": [{"name": "p",
            "properties": {"primary": true, "privateIPAddress": "10.0.9.4", "subnet": {"id": "/sn/wan"}}}]}});
        let text = peer_problem(A, Some(&doc), "/sn/lan");
        assert!(
            text.contains("in subnet /sn/wan, not in this node's"),
            "{text}"
        );
        assert!(peer_problem(A, Some(&doc), "/SN/WAN").contains("does not hold it"));
        let refused = in_use("x".into());
        let e = mismatch("10.0.0.5", Some(A), "p", &refused);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message
                .contains("provider.azure.peer_nic = \"/subscriptions/s/"),
            "{}",
            e.message
        );
    }
}
