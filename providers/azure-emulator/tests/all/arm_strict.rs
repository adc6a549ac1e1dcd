//! ARM's own checks, ahead of the Network RP: api-version registration, linked access
//! checks (join actions) on every reference of a NIC PUT, the move action on the virtual
//! network; the Network RP's pacing (`timing_profile = "network_rp"`); and ipConfiguration
//! properties the emulator does not model kept as ARM keeps them.

use crate::common::*;
use cloudha_azure_emulator::scenario::{DEFAULT_ACTIONS, MOVE_IP_CONFIGURATIONS_ACTION};
use cloudha_azure_emulator::{ConflictMode, Scenario, TimingProfile};
use serde_json::{json, Value};

async fn get_with(env: &Env, path: &str) -> TestResp {
    env.get(&env.token_a, path).await
}

#[tokio::test]
async fn unknown_api_version_is_refused_as_arm_refuses_it() {
    let env = Env::manual().await;
    let nic = format!("{}/networkInterfaces/{NIC_A}", env.net());
    // A resource in a resource group: 400 NoRegisteredProviderFound, naming the region,
    // the type and the versions that are registered.
    let r = get_with(&env, &format!("{nic}?api-version=2030-01-01")).await;
    assert_eq!((r.status, r.code()), (400, "NoRegisteredProviderFound"));
    let m = r.message();
    assert!(
        m.starts_with("No registered resource provider found for location 'westeurope' and API version '2030-01-01' for type 'networkInterfaces'. The supported api-versions are '2014-12-01-preview, 2015-05-01-preview, "),
        "{m}"
    );
    assert!(m.contains(", 2024-05-01, "), "{m}");
    assert!(
        m.ends_with("'. The supported locations are 'westeurope'."),
        "{m}"
    );
    // A PUT is refused the same way, before anything changes.
    let (doc, etag) = env.nic(NIC_A).await;
    let auth = format!("Bearer {}", env.token_a);
    let r = call(
        env.addr,
        "PUT",
        &format!("{nic}?api-version=2016-01-01"),
        &[("authorization", &auth)],
        Some(&doc),
    )
    .await;
    assert_eq!((r.status, r.code()), (400, "NoRegisteredProviderFound"));
    assert_eq!(env.nic(NIC_A).await.1, etag);
    // Child types are named with their parent.
    let r = get_with(
        &env,
        &format!(
            "{}/routeTables/rt-workloads/routes/default-via-appliance?api-version=2099-01-01",
            env.net()
        ),
    )
    .await;
    assert_eq!(r.code(), "NoRegisteredProviderFound");
    assert!(
        r.message().contains("for type 'routeTables/routes'"),
        "{}",
        r.message()
    );
    // A subscription-level list has no region: 404 InvalidResourceType.
    let r = get_with(
        &env,
        &format!(
            "/subscriptions/{}/providers/Microsoft.Network/networkInterfaces?api-version=2030-01-01",
            env.sub()
        ),
    )
    .await;
    assert_eq!((r.status, r.code()), (404, "InvalidResourceType"));
    assert!(
        r.message().starts_with("The resource type 'networkInterfaces' could not be found in the namespace 'Microsoft.Network' for api version '2030-01-01'. The supported api-versions are '2014-12-01-preview,2015-05-01-preview,"),
        "{}",
        r.message()
    );
    // Each namespace has its own versions: a Network version is not a Compute one.
    let vm = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/{VM_A}",
        env.sub(),
        env.emu.resource_group()
    );
    let r = get_with(&env, &format!("{vm}?api-version=2024-05-01")).await;
    assert_eq!(r.code(), "NoRegisteredProviderFound");
    assert!(
        r.message().contains("for type 'virtualMachines'"),
        "{}",
        r.message()
    );
    // Malformed stays InvalidApiVersionParameter.
    let r = get_with(&env, &format!("{nic}?api-version=2024-5-01")).await;
    assert_eq!((r.status, r.code()), (400, "InvalidApiVersionParameter"));

    // Every version cloudha's client uses (providers/azure/src/arm.rs, selftest.rs) and the
    // Python SDK's default are registered.
    for v in ["2024-05-01", "2025-09-01", "2026-03-01"] {
        assert_eq!(
            get_with(&env, &format!("{nic}?api-version={v}"))
                .await
                .status,
            200,
            "{v}"
        );
    }
    assert_eq!(
        get_with(&env, &format!("{vm}?api-version=2024-07-01"))
            .await
            .status,
        200
    );
    let perms = format!(
        "/subscriptions/{}/providers/Microsoft.Authorization/permissions",
        env.sub()
    );
    assert_eq!(
        get_with(&env, &format!("{perms}?api-version=2022-04-01"))
            .await
            .status,
        200
    );
    let r = get_with(&env, &format!("{perms}?api-version=2024-05-01")).await;
    assert_eq!((r.status, r.code()), (404, "InvalidResourceType"));
}

/// Every kind of linked reference an ipConfiguration can carry, with its join action.
fn references(net: &str) -> Vec<(&'static str, Value, &'static str, String)> {
    let asg = format!("{net}/applicationSecurityGroups/asg-ha");
    let pool = format!("{net}/loadBalancers/lb-ha/backendAddressPools/pool");
    let nat = format!("{net}/loadBalancers/lb-ha/inboundNatRules/ssh");
    let agw = format!("{net}/applicationGateways/agw/backendAddressPools/web");
    let gwlb = format!("{net}/loadBalancers/gwlb/frontendIPConfigurations/fe");
    vec![
        (
            "applicationSecurityGroups",
            json!([{ "id": asg }]),
            "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action",
            asg,
        ),
        (
            "loadBalancerBackendAddressPools",
            json!([{ "id": pool }]),
            "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
            pool,
        ),
        (
            "loadBalancerInboundNatRules",
            json!([{ "id": nat }]),
            "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
            nat,
        ),
        (
            "applicationGatewayBackendAddressPools",
            json!([{ "id": agw }]),
            "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
            agw,
        ),
        (
            "gatewayLoadBalancer",
            json!({ "id": gwlb }),
            "Microsoft.Network/loadBalancers/frontendIPConfigurations/join/action",
            gwlb,
        ),
    ]
}

fn floating_mut(doc: &mut Value) -> &mut Value {
    doc["properties"]["ipConfigurations"]
        .as_array_mut()
        .and_then(|a| a.iter_mut().find(|c| c["name"] == "floating"))
        .expect("floating on A")
}

#[tokio::test]
async fn nic_put_needs_the_join_action_of_every_reference() {
    let env = Env::manual().await;
    let net = env.net();
    let (base, etag) = env.nic(NIC_A).await;
    let refs = references(&net);
    let principal = env.emu.vm_identity(VM_A).expect("identity");

    // Each reference alone, with the default role: 403 naming its action and its scope.
    for (prop, value, action, scope) in &refs {
        let mut doc = base.clone();
        floating_mut(&mut doc)["properties"][*prop] = value.clone();
        let r = env
            .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(&etag))
            .await;
        assert_eq!(
            (r.status, r.code()),
            (403, "LinkedAuthorizationFailed"),
            "{prop}: {}",
            r.text
        );
        assert_eq!(
            r.message(),
            format!(
                "The client '{}' with object id '{}' has permission to perform action 'Microsoft.Network/networkInterfaces/write' on scope '{}'; however, it does not have permission to perform action '{action}' on the linked scope(s) '{scope}' or the linked scope(s) are invalid.",
                principal.client_id,
                principal.principal_id,
                env.emu.nic_id(NIC_A)
            )
        );
    }
    // All at once: one answer naming every missing action, paired with its scope.
    let mut all = base.clone();
    for (prop, value, _, _) in &refs {
        floating_mut(&mut all)["properties"][*prop] = value.clone();
    }
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &all, Some(&etag))
        .await;
    assert_eq!(r.code(), "LinkedAuthorizationFailed");
    let actions: Vec<&str> = refs.iter().map(|r| r.2).collect();
    let scopes: Vec<&str> = refs.iter().map(|r| r.3.as_str()).collect();
    assert!(
        r.message().contains(&format!(
            "does not have permission to perform action(s) '{}' on the linked scope(s) '{}' (respectively) or the linked scope(s) are invalid.",
            actions.join(","),
            scopes.join(",")
        )),
        "{}",
        r.message()
    );
    assert_eq!(
        env.nic(NIC_A).await.1,
        etag,
        "a refused PUT changed nothing"
    );

    // ARM's check comes before the Network RP's validation: a body the RP would refuse
    // (an address held by NIC B) is refused for the missing join first.
    let mut taken = all.clone();
    floating_mut(&mut taken)["properties"]["privateIPAddress"] = json!("10.10.1.5");
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &taken, Some(&etag))
        .await;
    assert_eq!(r.code(), "LinkedAuthorizationFailed");

    // With the joins granted, the same PUT is accepted.
    let mut granted: Vec<&str> = DEFAULT_ACTIONS.to_vec();
    granted.extend(actions.iter().copied());
    assert!(env.emu.set_permissions(VM_A, &granted, &[]));
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &all, Some(&etag))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // References already on the NIC are checked again on every PUT (ARM checks the
    // document it is sent): dropping one join refuses a tags-only update.
    env.advance_ms(1000);
    let (mut stored, etag) = env.nic(NIC_A).await;
    granted.retain(|a| *a != refs[0].2);
    assert!(env.emu.set_permissions(VM_A, &granted, &[]));
    stored["tags"]["touched"] = json!("yes");
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &stored, Some(&etag))
        .await;
    assert_eq!(r.code(), "LinkedAuthorizationFailed");
    assert!(r.message().contains(refs[0].2), "{}", r.message());
}

#[tokio::test]
async fn nic_put_keeps_unmodelled_ipconfiguration_properties() {
    let env = Env::manual().await;
    let net = env.net();
    let refs = references(&net);
    let mut granted: Vec<&str> = DEFAULT_ACTIONS.to_vec();
    granted.extend(refs.iter().map(|r| r.2));
    assert!(env.emu.set_permissions(VM_A, &granted, &[]));
    let (mut doc, etag) = env.nic(NIC_A).await;
    let sent = {
        let f = floating_mut(&mut doc);
        for (prop, value, _, _) in &refs {
            f["properties"][*prop] = value.clone();
        }
        f["properties"]["privateIPAddressPrefixLength"] = json!(28);
        f["properties"]["someFutureProperty"] = json!({"nested": [1, "two"]});
        // Read-only fields the client sends are ARM's to set.
        f["etag"] = json!("W/\"bogus\"");
        f["id"] = json!("/bogus");
        f["properties"]["provisioningState"] = json!("Failed");
        f.clone()
    };
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(&etag))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    env.advance_ms(1000);
    let (got, new_etag) = env.nic(NIC_A).await;
    let f = floating_config(&got);
    for (prop, _, _, _) in &refs {
        assert_eq!(f["properties"][*prop], sent["properties"][*prop], "{prop}");
    }
    for prop in [
        "privateIPAddressPrefixLength",
        "someFutureProperty",
        "publicIPAddress",
    ] {
        assert_eq!(f["properties"][prop], sent["properties"][prop], "{prop}");
    }
    assert_eq!(f["etag"], json!(new_etag));
    assert_eq!(
        f["id"],
        json!(format!(
            "{}/ipConfigurations/floating",
            env.emu.nic_id(NIC_A)
        ))
    );
    assert_eq!(f["properties"]["provisioningState"], "Succeeded");

    // A GET -> PUT round trip without changes keeps them too, and so does the atomic move
    // (the whole ipConfiguration goes to the other NIC).
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &got, Some(&new_etag))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    env.advance_ms(1000);
    let move_path = format!(
        "{}/virtualNetworks/vnet-ha/moveIpConfigurations?api-version=2025-09-01",
        env.net()
    );
    let body = json!({"moveIpConfigurationItems": [{
        "sourceIpConfiguration": {"id": format!("{}/ipConfigurations/floating", env.emu.nic_id(NIC_A))},
        "targetIpConfiguration": {"id": format!("{}/ipConfigurations/floating", env.emu.nic_id(NIC_B))},
    }]});
    let r = env.post(&env.token_a, &move_path, &body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    env.advance_ms(1000);
    let (b, _) = env.nic(NIC_B).await;
    let moved = floating_config(&b);
    for (prop, _, _, _) in &refs {
        assert_eq!(
            moved["properties"][*prop], sent["properties"][*prop],
            "{prop}"
        );
    }
    assert_eq!(
        moved["properties"]["someFutureProperty"],
        sent["properties"]["someFutureProperty"]
    );
}

#[tokio::test]
async fn move_needs_its_action_on_the_virtual_network() {
    let env = Env::manual().await;
    let without: Vec<&str> = DEFAULT_ACTIONS
        .iter()
        .copied()
        .filter(|a| *a != MOVE_IP_CONFIGURATIONS_ACTION)
        .collect();
    assert!(env.emu.set_permissions(VM_B, &without, &[]));
    let (a_before, a_etag) = env.nic(NIC_A).await;
    let vnet = format!("{}/virtualNetworks/vnet-ha", env.net());
    let body = json!({"moveIpConfigurationItems": [{
        "sourceIpConfiguration": {"id": format!("{}/ipConfigurations/floating", env.emu.nic_id(NIC_A))},
        "targetIpConfiguration": {"id": format!("{}/ipConfigurations/floating", env.emu.nic_id(NIC_B))},
    }]});
    let path = format!("{vnet}/moveIpConfigurations?api-version=2025-09-01");
    let r = env.post(&env.token_b, &path, &body).await;
    assert_eq!(
        (r.status, r.code()),
        (403, "AuthorizationFailed"),
        "{}",
        r.text
    );
    let ident = env.emu.vm_identity(VM_B).expect("identity");
    assert_eq!(
        r.message(),
        format!(
            "The client '{}' with object id '{}' does not have authorization to perform action '{MOVE_IP_CONFIGURATIONS_ACTION}' over scope '{vnet}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            ident.client_id, ident.principal_id
        )
    );
    let (a_after, a_etag_after) = env.nic(NIC_A).await;
    assert_eq!((a_after, a_etag_after), (a_before, a_etag));
    // With the action, the same call is accepted.
    assert!(env.emu.set_permissions(VM_B, DEFAULT_ACTIONS, &[]));
    assert_eq!(env.post(&env.token_b, &path, &body).await.status, 202);
}

#[tokio::test]
async fn network_rp_profile_sends_retry_after_10_on_nic_operations() {
    let env = Env::manual().await;
    assert_eq!(env.emu.settings().timing_profile, TimingProfile::Custom);
    env.emu.set_timing_profile(TimingProfile::NetworkRp);
    let (doc, etag) = env.nic(NIC_B).await;
    let r = env
        .put(&env.token_b, &env.nic_path(NIC_B), &doc, Some(&etag))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("retry-after").as_deref(), Some("10"));
    let op = path_of(
        &r.header("azure-asyncoperation")
            .expect("Azure-AsyncOperation"),
    );
    let poll = env.get(&env.token_b, &op).await;
    assert_eq!(poll.body["status"], "InProgress");
    assert_eq!(poll.header("retry-after").as_deref(), Some("10"));
    // A write on the busy NIC, in the 429 style, says 10 too.
    env.emu.set_conflict_mode(ConflictMode::RetryableError);
    let r = env
        .put(&env.token_b, &env.nic_path(NIC_B), &doc, None)
        .await;
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (429, Some("10"))
    );
    // Route operations keep the scenario's lro_retry_after_secs (1 here).
    let route = env.route_path("rt-workloads", "default-via-appliance");
    let (rt, _) = {
        let r = env.get(&env.token_b, &route).await;
        (r.body.clone(), r.status)
    };
    let r = env.put(&env.token_b, &route, &rt, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));

    // The profile is a scenario setting too.
    let toml = cloudha_azure_emulator::scenario::TWO_APPLIANCES_TOML.replacen(
        "[settings]\n",
        "[settings]\ntiming_profile = \"network_rp\"\n",
        1,
    );
    let s = Scenario::from_toml_str(&toml).expect("scenario");
    assert_eq!(s.settings.timing_profile, TimingProfile::NetworkRp);
}
