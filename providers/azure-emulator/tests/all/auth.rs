//! Token issue, bearer enforcement, RBAC and the permissions API.

use crate::common::*;
use cloudha_azure_emulator::scenario::DEFAULT_ACTIONS;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN_PATH: &str = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";

#[tokio::test]
async fn imds_token_authorizes_arm_calls() {
    let env = Env::manual().await;
    let r = call(env.addr, "GET", TOKEN_PATH, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["access_token"].as_str().expect("token").to_string();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped");
    let g = env.get(&token, &env.nic_path(NIC_A)).await;
    assert_eq!(g.status, 200);
}

#[tokio::test]
async fn bearer_enforcement_uses_arm_error_codes() {
    let env = Env::manual().await;
    let p = env.nic_path(NIC_A);
    let r = call(env.addr, "GET", &p, &[], None).await;
    assert_eq!((r.status, r.code()), (401, "AuthenticationFailed"));
    assert_eq!(
        r.message(),
        "Authentication failed. The 'Authorization' header is missing."
    );
    let www = r.header("www-authenticate").expect("WWW-Authenticate");
    assert!(
        www.starts_with("Bearer authorization_uri=\"https://login.windows.net/"),
        "{www}"
    );
    let r = call(env.addr, "GET", &p, &[("authorization", "Basic abc")], None).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "AuthenticationFailedInvalidHeader")
    );
    let r = call(
        env.addr,
        "GET",
        &p,
        &[("authorization", "Bearer not-a-token")],
        None,
    )
    .await;
    assert_eq!((r.status, r.code()), (401, "InvalidAuthenticationToken"));
    assert_eq!(r.message(), "The access token is invalid.");

    // A token for another resource is refused with the audience error.
    let vault =
        "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net";
    let t = call(env.addr, "GET", vault, &[("metadata", "true")], None).await;
    let vault_token = t.body["access_token"].as_str().expect("token").to_string();
    let r = env.get(&vault_token, &p).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "InvalidAuthenticationTokenAudience")
    );

    // Expiry follows the emulator clock.
    env.emu.set_token_lifetime(Duration::from_secs(60));
    let short = env.emu.issue_token(VM_A).expect("token");
    assert_eq!(env.get(&short, &p).await.status, 200);
    env.advance_ms(60_000);
    let r = env.get(&short, &p).await;
    assert_eq!((r.status, r.code()), (401, "ExpiredAuthenticationToken"));
    assert!(
        r.message()
            .starts_with("The access token expiry UTC time '"),
        "{}",
        r.message()
    );
    assert!(
        r.message().contains("' is earlier than current UTC time '"),
        "{}",
        r.message()
    );
}

#[tokio::test]
async fn missing_action_is_403_authorization_failed() {
    let env = Env::manual().await;
    let without_write: Vec<&str> = DEFAULT_ACTIONS
        .iter()
        .copied()
        .filter(|a| *a != "Microsoft.Network/networkInterfaces/write")
        .collect();
    env.emu.set_permissions(VM_B, &without_write, &[]);
    let (doc, _) = env.nic(NIC_B).await;
    let r = env
        .put(&env.token_b, &env.nic_path(NIC_B), &doc, None)
        .await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"));
    let ident = env.emu.vm_identity(VM_B).expect("identity");
    let (client, oid) = (ident.client_id, ident.principal_id);
    assert_eq!(
        r.message(),
        format!(
            "The client '{client}' with object id '{oid}' does not have authorization to perform action 'Microsoft.Network/networkInterfaces/write' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            env.emu.nic_id(NIC_B)
        )
    );
    // Reads still work; notActions subtract from wildcards.
    assert_eq!(
        env.get(&env.token_b, &env.nic_path(NIC_B)).await.status,
        200
    );
    env.emu.set_permissions(
        VM_B,
        &["Microsoft.Network/*", "Microsoft.Compute/*"],
        &["Microsoft.Network/routeTables/routes/write"],
    );
    let route = json!({"properties": {"addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance", "nextHopIpAddress": "10.10.1.5"}});
    let r = env
        .put(
            &env.token_b,
            &env.route_path("rt-workloads", "default-via-appliance"),
            &route,
            None,
        )
        .await;
    assert_eq!((r.status, r.code()), (403, "AuthorizationFailed"));
    let r = env
        .put(&env.token_b, &env.nic_path(NIC_B), &doc, None)
        .await;
    assert_eq!(r.status, 200, "wildcard grants write: {}", r.text);
}

#[tokio::test]
async fn missing_join_action_is_linked_authorization_failed() {
    let env = Env::manual().await;
    let without_join: Vec<&str> = DEFAULT_ACTIONS
        .iter()
        .copied()
        .filter(|a| *a != "Microsoft.Network/virtualNetworks/subnets/join/action")
        .collect();
    env.emu.set_permissions(VM_A, &without_join, &[]);
    let (doc, _) = env.nic(NIC_A).await;
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!((r.status, r.code()), (403, "LinkedAuthorizationFailed"));
    assert!(
        r.message().contains(
            "'Microsoft.Network/virtualNetworks/subnets/join/action' on the linked scope(s) '"
        ),
        "{}",
        r.message()
    );
    // An NSG reference needs its own join action, which the default role lacks.
    env.emu.set_permissions(VM_A, DEFAULT_ACTIONS, &[]);
    let mut with_nsg = doc.clone();
    with_nsg["properties"]["networkSecurityGroup"] =
        json!({"id": format!("{}/networkSecurityGroups/nsg", env.net())});
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &with_nsg, None)
        .await;
    assert_eq!((r.status, r.code()), (403, "LinkedAuthorizationFailed"));
    assert!(r
        .message()
        .contains("Microsoft.Network/networkSecurityGroups/join/action"));
}

#[tokio::test]
async fn permissions_api_lists_the_callers_actions() {
    let env = Env::manual().await;
    let path = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
        env.sub()
    );
    let r = env.get(&env.token_a, &path).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let actions: Vec<&str> = r.body["value"][0]["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(actions, DEFAULT_ACTIONS.to_vec());
    assert_eq!(r.body["value"][0]["notActions"], json!([]));
    // At a resource scope below the assignment, and reflecting a changed role.
    env.emu
        .set_permissions(VM_B, &["Microsoft.Network/networkInterfaces/read"], &[]);
    let nic_scope = format!(
        "{}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01",
        env.emu.nic_id(NIC_B)
    );
    let r = env.get(&env.token_b, &nic_scope).await;
    assert_eq!(
        r.body["value"][0]["actions"],
        json!(["Microsoft.Network/networkInterfaces/read"])
    );
}

#[tokio::test]
async fn app_service_token_endpoint_identifies_the_vm_by_secret() {
    let env = Env::manual().await;
    let id_b = env.emu.vm_identity(VM_B).expect("identity");
    let path = "/msi/token?api-version=2019-08-01&resource=https://management.azure.com";
    let r = call(
        env.addr,
        "GET",
        path,
        &[
            ("x-identity-header", &id_b.identity_header),
            ("metadata", "true"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["client_id"], id_b.client_id.as_str());
    assert_eq!(r.body["token_type"], "Bearer");
    assert!(r.body["expires_on"]
        .as_str()
        .expect("string")
        .parse::<u64>()
        .is_ok());
    let token = r.body["access_token"].as_str().expect("token").to_string();
    env.emu
        .set_permissions(VM_B, &["Microsoft.Network/networkInterfaces/read"], &[]);
    let perms = env
        .get(&token, &format!("/subscriptions/{}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01", env.sub()))
        .await;
    assert_eq!(
        perms.body["value"][0]["actions"],
        json!(["Microsoft.Network/networkInterfaces/read"])
    );

    let r = call(
        env.addr,
        "GET",
        path,
        &[("x-identity-header", "wrong")],
        None,
    )
    .await;
    assert_eq!(r.status, 401);
    let wrong_client = format!("{path}&client_id=00000000-0000-0000-0000-000000000000");
    let r = call(
        env.addr,
        "GET",
        &wrong_client,
        &[("x-identity-header", &id_b.identity_header)],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error_description"], "Identity not found");
    let right_client = format!("{path}&client_id={}", id_b.client_id);
    let r = call(
        env.addr,
        "GET",
        &right_client,
        &[("x-identity-header", &id_b.identity_header)],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}
