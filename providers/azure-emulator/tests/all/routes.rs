//! Route table reads and route PUTs.

use crate::common::*;
use serde_json::{json, Value};

const RT: &str = "rt-workloads";
const ROUTE: &str = "default-via-appliance";

fn va_route(hop: &str) -> Value {
    json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance", "nextHopIpAddress": hop}})
}

#[tokio::test]
async fn route_table_get_includes_routes_with_the_table_etag() {
    let env = Env::manual().await;
    let r = env
        .get(
            &env.token_a,
            &format!("{}/routeTables/{RT}?api-version={API}", env.net()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let route = &r.body["properties"]["routes"][0];
    assert_eq!(route["name"], ROUTE);
    assert_eq!(route["etag"], r.body["etag"]);
    assert_eq!(route["properties"]["nextHopIpAddress"], "10.10.1.4");
    assert_eq!(route["type"], "Microsoft.Network/routeTables/routes");
    let list = env
        .get(
            &env.token_a,
            &format!("{}/routeTables/{RT}/routes?api-version={API}", env.net()),
        )
        .await;
    assert_eq!(list.body["value"][0]["name"], ROUTE);
}

#[tokio::test]
async fn route_put_is_a_long_running_operation() {
    let env = Env::manual().await;
    let before = env.get(&env.token_b, &env.route_path(RT, ROUTE)).await;
    let etag = before.body["etag"].as_str().expect("etag").to_string();
    let r = env
        .put(
            &env.token_b,
            &env.route_path(RT, ROUTE),
            &va_route("10.10.1.5"),
            Some(&etag),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["properties"]["provisioningState"], "Updating");
    assert_eq!(r.body["properties"]["nextHopIpAddress"], "10.10.1.5");
    let op = r.header("azure-asyncoperation").expect("op");
    assert_eq!(env.op_status(&op).await, "InProgress");
    let during = env.get(&env.token_b, &env.route_path(RT, ROUTE)).await;
    assert_eq!(during.body["properties"]["provisioningState"], "Updating");

    // Writes to the same table are serialised.
    let other = env
        .put(
            &env.token_b,
            &env.route_path(RT, "other"),
            &va_route("10.10.1.5"),
            None,
        )
        .await;
    assert_eq!(
        (other.status, other.code()),
        (409, "AnotherOperationInProgress")
    );

    env.advance_ms(1000);
    assert_eq!(env.op_status(&op).await, "Succeeded");
    let after = env.get(&env.token_b, &env.route_path(RT, ROUTE)).await;
    assert_eq!(after.body["properties"]["provisioningState"], "Succeeded");
    assert_eq!(after.body["properties"]["nextHopIpAddress"], "10.10.1.5");
    assert_ne!(after.body["etag"], before.body["etag"]);
    assert_eq!(
        env.emu.route(RT, ROUTE).expect("route")["properties"]["nextHopIpAddress"],
        "10.10.1.5"
    );

    let created = env.put(&env.token_b, &env.route_path(RT, "to-onprem"), &json!({"properties": {"addressPrefix": "192.168.0.0/16", "nextHopType": "VirtualNetworkGateway"}}), None).await;
    assert_eq!(created.status, 201, "{}", created.text);
    env.advance_ms(1000);
    let table = env.emu.route_table(RT).expect("table");
    assert_eq!(
        table["properties"]["routes"].as_array().map(Vec::len),
        Some(2)
    );

    let stale = env
        .put(
            &env.token_b,
            &env.route_path(RT, ROUTE),
            &va_route("10.10.1.4"),
            Some(&etag),
        )
        .await;
    assert_eq!((stale.status, stale.code()), (412, "PreconditionFailed"));
}

#[tokio::test]
async fn every_route_validation_error() {
    let env = Env::manual().await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance"}}),
            "MissingNextHopIpAddress",
            "",
        ),
        (
            json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "Appliance", "nextHopIpAddress": "10.10.1.5"}}),
            "InvalidRequestFormat",
            "InvalidJsonEnumValue",
        ),
        (
            json!({"properties": {"addressPrefix": "0.0.0.0/0"}}),
            "InvalidRequestFormat",
            "MissingJsonProperty",
        ),
        (
            json!({"properties": {"nextHopType": "Internet"}}),
            "InvalidRequestFormat",
            "MissingJsonProperty",
        ),
        (
            json!({"properties": {"addressPrefix": "10.0.0.1/8", "nextHopType": "Internet"}}),
            "InvalidAddressPrefixFormat",
            "",
        ),
        (
            json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "Internet", "nextHopIpAddress": "10.10.1.5"}}),
            "NextHopIpAddressNotAllowed",
            "",
        ),
        (
            json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.10.1"}}),
            "InvalidNextHopIpAddress",
            "",
        ),
        (
            json!({"name": "x"}),
            "InvalidRequestFormat",
            "MissingJsonProperty",
        ),
    ];
    for (body, code, detail) in cases {
        let r = env
            .put(&env.token_a, &env.route_path(RT, ROUTE), &body, None)
            .await;
        assert_eq!((r.status, r.code()), (400, code), "{body}: {}", r.text);
        if !detail.is_empty() {
            assert_eq!(r.detail_code(), detail, "{body}");
        }
    }
    let ok = env
        .put(
            &env.token_a,
            &env.route_path(RT, ROUTE),
            &json!({"properties": {"addressPrefix": "AzureCloud", "nextHopType": "internet"}}),
            None,
        )
        .await;
    assert_eq!(
        ok.status, 200,
        "service tags and case-insensitive enums: {}",
        ok.text
    );
    assert_eq!(
        env.put(
            &env.token_a,
            &env.route_path(RT, "r2"),
            &va_route("10.10.1.5"),
            None
        )
        .await
        .code(),
        "AnotherOperationInProgress"
    );
    assert_eq!(env.emu.operations_in_progress(), 1);
}

#[tokio::test]
async fn missing_tables_and_routes() {
    let env = Env::manual().await;
    let r = env
        .put(
            &env.token_a,
            &env.route_path("rt-nope", ROUTE),
            &va_route("10.10.1.5"),
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "ParentResourceNotFound"));
    let r = env.get(&env.token_a, &env.route_path(RT, "nope")).await;
    assert_eq!((r.status, r.code()), (404, "NotFound"));
    let r = env
        .get(
            &env.token_a,
            &format!("{}/routeTables/rt-nope?api-version={API}", env.net()),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "ResourceNotFound"));
}
