//! Every NIC validation error, with the status and code the Network RP answers. A refused
//! PUT must leave the NIC and the operation table untouched.

use crate::common::*;
use serde_json::{json, Value};

type Mutate = fn(&Env, &mut Value);

fn cfgs(doc: &mut Value) -> &mut Vec<Value> {
    doc["properties"]["ipConfigurations"]
        .as_array_mut()
        .expect("ipConfigurations")
}

fn subnet_id(env: &Env) -> String {
    format!("{}/virtualNetworks/vnet-ha/subnets/appliances", env.net())
}

fn static_cfg(env: &Env, name: &str, ip: &str) -> Value {
    json!({"name": name, "properties": {
        "privateIPAddress": ip, "privateIPAllocationMethod": "Static",
        "subnet": {"id": subnet_id(env)}}})
}

/// (case, mutation of NIC A's current document, status, code, detail code)
fn cases() -> Vec<(&'static str, Mutate, u16, &'static str, &'static str)> {
    vec![
        (
            "empty ipConfigurations",
            |_, d| cfgs(d).clear(),
            400,
            "NetworkInterfaceMustHaveIpConfigurationOrAttachedElasticNetworkInterface",
            "",
        ),
        (
            "no ipConfigurations property",
            |_, d| {
                d["properties"]
                    .as_object_mut()
                    .expect("props")
                    .remove("ipConfigurations");
            },
            400,
            "NetworkInterfaceMustHaveIpConfigurationOrAttachedElasticNetworkInterface",
            "",
        ),
        (
            "no primary among several",
            |_, d| {
                for c in cfgs(d) {
                    c["properties"]["primary"] = json!(false);
                }
            },
            400,
            "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
            "",
        ),
        (
            "two primaries",
            |_, d| {
                for c in cfgs(d) {
                    c["properties"]["primary"] = json!(true);
                }
            },
            400,
            "NetworkInterfaceMustHaveOneOneIPConfigAsPrimary",
            "",
        ),
        (
            "primary removed",
            |_, d| {
                cfgs(d).remove(0);
                cfgs(d)[0]["properties"]["primary"] = json!(true);
            },
            400,
            "IpConfigDeleteNotSupported",
            "",
        ),
        (
            "primary renamed",
            |_, d| cfgs(d)[0]["name"] = json!("renamed"),
            400,
            "IpConfigDeleteNotSupported",
            "",
        ),
        (
            "ipConfiguration without subnet",
            |_, d| {
                cfgs(d)[1]["properties"]
                    .as_object_mut()
                    .expect("props")
                    .remove("subnet");
            },
            400,
            "SubnetIsRequired",
            "",
        ),
        (
            "subnet reference without id",
            |_, d| cfgs(d)[1]["properties"]["subnet"] = json!({}),
            400,
            "InvalidRequestFormat",
            "MissingJsonReferenceId",
        ),
        (
            "unknown subnet",
            |e, d| {
                cfgs(d)[1]["properties"]["subnet"]["id"] =
                    json!(format!("{}/virtualNetworks/vnet-ha/subnets/nope", e.net()));
            },
            400,
            "InvalidResourceReference",
            "",
        ),
        (
            "static IP outside the subnet",
            |_, d| cfgs(d)[1]["properties"]["privateIPAddress"] = json!("10.10.2.100"),
            400,
            "PrivateIPAddressNotInSubnet",
            "",
        ),
        (
            "network address",
            |_, d| cfgs(d)[1]["properties"]["privateIPAddress"] = json!("10.10.1.0"),
            400,
            "PrivateIPAddressInReservedRange",
            "",
        ),
        (
            "gateway address",
            |_, d| cfgs(d)[1]["properties"]["privateIPAddress"] = json!("10.10.1.1"),
            400,
            "PrivateIPAddressInReservedRange",
            "",
        ),
        (
            "DNS address",
            |_, d| cfgs(d)[1]["properties"]["privateIPAddress"] = json!("10.10.1.3"),
            400,
            "PrivateIPAddressInReservedRange",
            "",
        ),
        (
            "broadcast address",
            |_, d| cfgs(d)[1]["properties"]["privateIPAddress"] = json!("10.10.1.255"),
            400,
            "PrivateIPAddressInReservedRange",
            "",
        ),
        (
            "same IP twice on the NIC",
            |e, d| cfgs(d).push(static_cfg(e, "dup", "10.10.1.100")),
            400,
            "PrivateIPAddressInUse",
            "",
        ),
        (
            "IP settled on another NIC",
            |e, d| cfgs(d).push(static_cfg(e, "stolen", "10.10.1.5")),
            400,
            "PrivateIPAddressIsAllocated",
            "",
        ),
        (
            "duplicate ipConfiguration names",
            |e, d| cfgs(d).push(static_cfg(e, "FLOATING", "10.10.1.50")),
            400,
            "InvalidRequestFormat",
            "DuplicateResourceName",
        ),
        (
            "ipConfiguration without name",
            |e, d| {
                let mut c = static_cfg(e, "x", "10.10.1.50");
                c.as_object_mut().expect("obj").remove("name");
                cfgs(d).push(c);
            },
            400,
            "InvalidRequestFormat",
            "MissingResourceName",
        ),
        (
            "malformed private IP",
            |_, d| cfgs(d)[1]["properties"]["privateIPAddress"] = json!("10.10.1.300"),
            400,
            "InvalidRequestFormat",
            "InvalidPrivateIPAddressFormat",
        ),
        (
            "bad allocation method",
            |_, d| cfgs(d)[1]["properties"]["privateIPAllocationMethod"] = json!("Sticky"),
            400,
            "InvalidRequestFormat",
            "InvalidJsonEnumValue",
        ),
        (
            "static without address",
            |_, d| {
                cfgs(d)[1]["properties"]
                    .as_object_mut()
                    .expect("props")
                    .remove("privateIPAddress");
            },
            400,
            "PrivateIPAddressRequiredForStaticAllocation",
            "",
        ),
        (
            "unknown public IP",
            |e, d| {
                cfgs(d)[1]["properties"]["publicIPAddress"]["id"] =
                    json!(format!("{}/publicIPAddresses/nope", e.net()));
            },
            400,
            "InvalidResourceReference",
            "",
        ),
        (
            "missing location",
            |_, d| {
                d.as_object_mut().expect("obj").remove("location");
            },
            400,
            "LocationRequired",
            "",
        ),
        (
            "location change",
            |_, d| d["location"] = json!("northeurope"),
            400,
            "InvalidResourceLocation",
            "",
        ),
    ]
}

#[tokio::test]
async fn every_nic_validation_error() {
    let env = Env::manual().await;
    let (original, etag) = env.nic(NIC_A).await;
    for (name, mutate, status, code, detail) in cases() {
        let mut doc = original.clone();
        mutate(&env, &mut doc);
        let r = env
            .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(&etag))
            .await;
        assert_eq!(r.status, status, "{name}: {}", r.text);
        assert_eq!(r.code(), code, "{name}: {}", r.text);
        if !detail.is_empty() {
            assert_eq!(r.detail_code(), detail, "{name}: {}", r.text);
        }
        assert!(!r.message().is_empty(), "{name}");
        assert!(r.header("azure-asyncoperation").is_none(), "{name}");
    }
    assert_eq!(env.emu.operations_in_progress(), 0);
    let (after, etag_after) = env.nic(NIC_A).await;
    assert_eq!(after, original);
    assert_eq!(etag_after, etag);
}

#[tokio::test]
async fn public_ip_already_used_elsewhere_is_refused() {
    let env = Env::manual().await;
    let (doc_a, _) = env.nic(NIC_A).await;
    let (doc_b, _) = env.nic(NIC_B).await;
    let mut cfg = static_cfg(&env, "pip-user", "10.10.1.60");
    cfg["properties"]["publicIPAddress"] =
        floating_config(&doc_a)["properties"]["publicIPAddress"].clone();
    let r = env
        .put(
            &env.token_b,
            &env.nic_path(NIC_B),
            &with_config(&doc_b, cfg),
            None,
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "PublicIPAddressInUse");
    assert!(
        r.message().contains("is referencing public IP address"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn settled_conflict_code_is_configurable_and_messages_name_both_configs() {
    let env = Env::manual().await;
    env.emu
        .update_settings(|s| s.settled_ip_conflict_code = "PrivateIPAddressInUse".into());
    let (doc_b, _) = env.nic(NIC_B).await;
    let r = env
        .put(
            &env.token_b,
            &env.nic_path(NIC_B),
            &with_config(&doc_b, static_cfg(&env, "f", FLOATING_IP)),
            None,
        )
        .await;
    assert_eq!(r.code(), "PrivateIPAddressInUse");
    assert_eq!(
        r.message(),
        format!(
            "IP configuration {}/ipConfigurations/f is using the private IP address {FLOATING_IP} which is already allocated to resource {}/ipConfigurations/floating.",
            env.emu.nic_id(NIC_B),
            env.emu.nic_id(NIC_A)
        )
    );
}

#[tokio::test]
async fn malformed_requests() {
    let env = Env::manual().await;
    let auth = format!("Bearer {}", env.token_a);
    let r = env
        .put(
            &env.token_a,
            &env.nic_path(NIC_A),
            &json!("not an object"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestFormat"));
    let r = call_raw(
        env.addr,
        "PUT",
        &env.nic_path(NIC_A),
        &[("authorization", &auth)],
        Some("{not json".into()),
    )
    .await;
    assert_eq!(
        (r.status, r.code(), r.detail_code()),
        (400, "InvalidRequestFormat", "InvalidJson")
    );
    let path = format!("{}/networkInterfaces/{NIC_A}", env.net());
    let r = call(env.addr, "GET", &path, &[("authorization", &auth)], None).await;
    assert_eq!((r.status, r.code()), (400, "MissingApiVersionParameter"));
    assert_eq!(
        r.message(),
        "The api-version query parameter (?api-version=) is required for all requests."
    );
    let r = call(
        env.addr,
        "GET",
        &format!("{path}?api-version=latest"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "InvalidApiVersionParameter"));
    let r = call(
        env.addr,
        "DELETE",
        &format!("{path}?api-version={API}"),
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(r.status, 405);
}
