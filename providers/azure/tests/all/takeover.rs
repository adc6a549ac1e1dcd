//! Takeovers that succeed: the two-step and atomic moves, routes, idempotence, observation.

use cloudha_azure_emulator::{nic_settings_apart_from, MoveIpMode};
use cloudha_provider_core::{Holder, ProgressEvent, Provider, TakeoverRequest};

use crate::harness::*;

fn request() -> TakeoverRequest {
    TakeoverRequest {
        epoch: 2,
        deadline: DEADLINE,
    }
}

#[tokio::test]
async fn two_step_move_takes_ip_public_ip_and_route_and_keeps_every_other_nic_property() {
    let cloud = Cloud::start(300).await;
    let a_before = cloud.emu.nic("nic-appliance-a").expect("nic a");
    let b_before = cloud.emu.nic("nic-appliance-b").expect("nic b");
    let b = cloud.provider("b");

    let before = b.observe().await.expect("observe");
    assert_eq!(before.resources[0].holder, Holder::Peer);
    assert_eq!(before.resources[1].holder, Holder::Peer);

    let mut rec = Recorder::new();
    let report = b
        .take_over(&request(), &rec.reporter)
        .await
        .expect("takeover");
    assert!(report.changed);
    assert_eq!(
        cloud.emu.operations_in_progress(),
        0,
        "returned before convergence"
    );

    // The address, its public IP and the route are on B, in effect (settled).
    let b_after = cloud.emu.nic_settled("nic-appliance-b").expect("nic b");
    let floating = b_after["properties"]["ipConfigurations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|c| c["properties"]["privateIPAddress"] == FLOATING)
        .expect("floating ipconfig on B");
    assert_eq!(floating["name"], "floating");
    assert_eq!(
        floating["properties"]["publicIPAddress"]["id"]
            .as_str()
            .map(str::to_ascii_lowercase),
        Some(cloud.public_ip_id().to_ascii_lowercase())
    );
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
    assert_eq!(cloud.route_next_hop().as_deref(), Some(ADDR_B));

    // Every other property of both NICs is untouched.
    let a_after = cloud.emu.nic_settled("nic-appliance-a").expect("nic a");
    assert_eq!(
        nic_settings_apart_from(&a_after, ip(FLOATING)),
        nic_settings_apart_from(&a_before, ip(FLOATING))
    );
    assert_eq!(
        nic_settings_apart_from(&b_after, ip(FLOATING)),
        nic_settings_apart_from(&b_before, ip(FLOATING))
    );

    // One PUT per NIC (plus retries while A let go), writes with If-Match.
    let puts: Vec<_> = cloud
        .emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("networkInterfaces/nic-appliance-a"))
        .collect();
    assert_eq!(puts.len(), 1, "one PUT on the peer NIC");
    assert!(puts[0]
        .if_match
        .as_deref()
        .is_some_and(|t| t.starts_with("W/\"")));

    let events = rec.events();
    let calls = calls(&events);
    assert_eq!(calls, report.api_calls, "report and progress agree");
    assert_eq!(calls.get("route.put"), Some(&1));
    assert!(events.iter().any(
        |e| matches!(e, ProgressEvent::OperationFinished { id, outcome, .. }
        if id.starts_with("nic.add") && outcome == "ok")
    ));

    let after = b.observe().await.expect("observe");
    assert!(
        after.resources.iter().all(|r| r.holder == Holder::Me),
        "{after:?}"
    );
    assert!(after.warnings.is_empty(), "{:?}", after.warnings);
}

#[tokio::test]
async fn a_second_takeover_writes_nothing() {
    let cloud = Cloud::start(100).await;
    let b = cloud.provider("b");
    b.take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("first");
    cloud.emu.clear_requests();
    let report = b
        .take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("second");
    assert!(!report.changed);
    let writes = cloud
        .emu
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(writes, 0);
    assert!(
        report.api_calls.keys().all(|k| k.ends_with(".get")),
        "{:?}",
        report.api_calls
    );
}

#[tokio::test]
async fn move_back_and_forth() {
    let cloud = Cloud::start(100).await;
    let a = cloud.provider("a");
    let b = cloud.provider("b");
    for (p, addr, nic) in [
        (&b, ADDR_B, "nic-appliance-b"),
        (&a, ADDR_A, "nic-appliance-a"),
        (&b, ADDR_B, "nic-appliance-b"),
    ] {
        p.take_over(&request(), &ProgressReporter::discard())
            .await
            .expect("takeover");
        assert!(cloud.holder_of_floating().expect("held").contains(nic));
        assert_eq!(cloud.route_next_hop().as_deref(), Some(addr));
    }
}

#[tokio::test]
async fn atomic_move_uses_one_move_call() {
    let cloud = Cloud::start(300).await;
    let b = cloud.provider_with("b", cloud.atomic_config("b"));
    let report = b
        .take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("takeover");
    assert_eq!(report.api_calls.get("vnet.move"), Some(&1));
    assert_eq!(
        report.api_calls.get("nic.put"),
        None,
        "{:?}",
        report.api_calls
    );
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
    let obs = b.observe().await.expect("observe");
    assert!(obs.warnings.is_empty());
}

#[tokio::test]
async fn atomic_move_falls_back_to_two_step_and_says_so() {
    let cloud = Cloud::start(200).await;
    cloud.emu.set_move_ip_mode(MoveIpMode::FeatureNotRegistered);
    let b = cloud.provider_with("b", cloud.atomic_config("b"));
    let mut rec = Recorder::new();
    let report = b
        .take_over(&request(), &rec.reporter)
        .await
        .expect("takeover");
    assert_eq!(report.api_calls.get("vnet.move"), Some(&1));
    assert!(report.api_calls.get("nic.put").is_some_and(|n| *n >= 2));
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
    assert!(rec
        .events()
        .iter()
        .any(|e| matches!(e, ProgressEvent::Note { message }
        if message.contains("SubscriptionNotRegisteredForFeature"))));
    let obs = b.observe().await.expect("observe");
    assert!(
        obs.warnings.iter().any(|w| w.contains("two-step")),
        "{:?}",
        obs.warnings
    );

    // The fallback is remembered: moving back does not try the move API again.
    let a = cloud.provider_with("a", cloud.atomic_config("a"));
    a.take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("back");
    cloud.emu.clear_requests();
    b.take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("again");
    assert_eq!(cloud.emu.count_requests("POST", "moveIpConfigurations"), 0);
}

#[tokio::test]
async fn the_address_on_no_nic_is_placed_from_the_configured_template() {
    // A previous attempt removed the address from A and was cut off before adding it to B.
    let cloud = Cloud::start(100).await;
    let a = cloud.provider("a");
    let b = cloud.provider("b");
    b.take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("to b");
    // Take it off B by hand (what a cut-off two-step leaves behind).
    let mut doc = cloud.emu.nic("nic-appliance-b").expect("nic b");
    let list = doc["properties"]["ipConfigurations"]
        .as_array_mut()
        .expect("list");
    list.retain(|c| c["properties"]["privateIPAddress"] != FLOATING);
    cloud.put_nic("nic-appliance-b", &doc).await;
    assert_eq!(cloud.holder_of_floating(), None);
    let observed = a.observe().await.expect("observe");
    assert_eq!(observed.resources[0].holder, Holder::Nobody);

    a.take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("to a");
    let holder = cloud.holder_of_floating().expect("placed");
    assert!(holder.contains("nic-appliance-a"), "{holder}");
    let nic_a = cloud.emu.nic_settled("nic-appliance-a").expect("a");
    assert!(
        nic_a.to_string().contains("pip-floating"),
        "public IP re-attached"
    );
}

use cloudha_provider_core::ProgressReporter;

#[tokio::test]
async fn several_floating_ips_move_in_one_put_per_nic() {
    let cloud = Cloud::start(200).await;
    // The scenario's floating IP, plus a second one no NIC holds yet.
    let mut floating = cloud.floating();
    floating.push(cloudha_provider_azure::FloatingIpConfig {
        address: ip("10.10.1.101"),
        ip_config_name: Some("floating-2".into()),
        public_ip: None,
    });
    let b = cloudha_provider_azure::AzureProvider::new(
        cloud.config("b"),
        floating,
        cloud.routes(),
        cloud.token_source("vm-appliance-b"),
    )
    .expect("provider");
    b.take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("takeover");
    let accepted_puts = |nic: &str| {
        cloud
            .emu
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.ends_with(nic) && r.status < 300)
            .count()
    };
    assert_eq!(accepted_puts("nic-appliance-a"), 1);
    assert_eq!(accepted_puts("nic-appliance-b"), 1);
    let nic_b = cloud.emu.nic_settled("nic-appliance-b").expect("nic b");
    let text = nic_b.to_string();
    assert!(
        text.contains("10.10.1.100") && text.contains("10.10.1.101"),
        "{text}"
    );
    assert!(text.contains("floating-2"));
    let obs = b.observe().await.expect("observe");
    assert_eq!(obs.resources.len(), 3);
    assert!(
        obs.resources.iter().all(|r| r.holder == Holder::Me),
        "{obs:?}"
    );
}

/// Routes are read a table at a time: one GET of each table before its route PUTs and one to
/// verify them, none per route (ARM's read bucket, not its write bucket, used to bound a
/// failover with hundreds of routes). Reconcile reads one GET per table as well.
#[tokio::test]
async fn routes_are_read_and_verified_one_table_at_a_time() {
    use cloudha_azure_emulator::scenario::{RouteSpec as EmuRoute, RouteTableSpec};
    use cloudha_provider_azure::AzureProvider;
    use cloudha_provider_core::{NextHop, RouteSpec};

    const TABLES: usize = 3;
    const PER_TABLE: usize = 4;
    let mut scenario = cloudha_azure_emulator::Scenario::two_appliances();
    for t in 0..TABLES {
        scenario.route_tables.push(RouteTableSpec {
            name: format!("rt-scale-{t}"),
            resource_group: None,
            disable_bgp_route_propagation: false,
            tags: None,
            routes: (0..PER_TABLE)
                .map(|r| EmuRoute {
                    name: format!("r{r}"),
                    address_prefix: format!("172.16.{t}.{}/28", r * 16),
                    next_hop_type: "VirtualAppliance".into(),
                    next_hop_ip_address: Some(ADDR_A.into()),
                })
                .collect(),
        });
    }
    let cloud = Cloud::start_with(&scenario, 300).await;
    let table_id = |t: usize| {
        cloud
            .route_table_id()
            .replace("rt-workloads", &format!("rt-scale-{t}"))
    };
    let mut routes = cloud.routes();
    for t in 0..TABLES {
        for r in 0..PER_TABLE {
            routes.push(RouteSpec {
                table: table_id(t),
                name: format!("r{r}"),
                prefix: format!("172.16.{t}.{}/28", r * 16),
                next_hop: NextHop::SelfAddress,
            });
        }
    }
    let b = AzureProvider::new(
        cloud.config("b"),
        cloud.floating(),
        routes.clone(),
        cloud.token_source("vm-appliance-b"),
    )
    .expect("provider");
    let before = cloud.emu.requests().len();
    b.take_over(
        &request(),
        &cloudha_provider_core::ProgressReporter::discard(),
    )
    .await
    .expect("takeover");
    for t in 0..TABLES {
        for r in 0..PER_TABLE {
            let hop = cloud
                .emu
                .route(&format!("rt-scale-{t}"), &format!("r{r}"))
                .and_then(|d| d.pointer("/properties/nextHopIpAddress").cloned());
            assert_eq!(hop, Some(serde_json::json!(ADDR_B)), "rt-scale-{t}/r{r}");
        }
    }
    let gets = |from: usize| {
        let log = cloud.emu.requests();
        let route_gets = log[from..]
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/routes/"))
            .count();
        let table_gets = log[from..]
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path.contains("/routeTables/") && !r.path.contains("/routes")
            })
            .count();
        (route_gets, table_gets)
    };
    let tables = TABLES + 1;
    assert_eq!(
        gets(before),
        (0, 2 * tables),
        "(route GETs, table GETs) in the takeover"
    );
    let route_puts = cloud.emu.count_requests("PUT", "/routes/");
    assert_eq!(route_puts, TABLES * PER_TABLE + 1, "one PUT per route");

    let before = cloud.emu.requests().len();
    let observed = b.observe().await.expect("observe");
    assert!(
        observed.resources.iter().all(|r| r.holder == Holder::Me),
        "{observed:?}"
    );
    assert_eq!(
        gets(before),
        (0, tables),
        "(route GETs, table GETs) in a reconcile read"
    );
}

/// With the Network RP's pacing (`Retry-After: 10` on NIC operations) a NIC update applied in
/// 2 s is seen applied by reading the NIC itself between polls (on spare read tokens): the move
/// ends without waiting for the first operation poll, ten seconds out.
#[tokio::test]
async fn an_applied_nic_update_ends_the_wait_before_the_network_rps_next_poll() {
    use cloudha_azure_emulator::TimingProfile;
    let cloud = Cloud::start(2000).await;
    cloud.emu.set_timing_profile(TimingProfile::NetworkRp);
    let report = cloud
        .provider("b")
        .take_over(&request(), &ProgressReporter::discard())
        .await
        .expect("takeover");
    assert!(report.changed);
    let calls = &report.api_calls;
    assert_eq!(
        calls.get("nic.put.poll"),
        None,
        "no NIC operation was polled: {calls:?}"
    );
    assert!(
        calls.get("nic.put.watch").copied().unwrap_or(0) >= 2,
        "both NIC updates were watched: {calls:?}"
    );
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
}
