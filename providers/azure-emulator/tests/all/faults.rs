//! Every fault type, fault matching, and the request log.

use crate::common::*;
use cloudha_azure_emulator::Fault;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn respond_faults_answer_once_then_the_call_works() {
    let env = Env::manual().await;
    let (doc, _) = env.nic(NIC_A).await;
    let cases: Vec<(Fault, u16, &str, Option<&str>)> = vec![
        (
            Fault::throttled("PUT", NIC_A, 7),
            429,
            "SubscriptionRequestsThrottled",
            Some("7"),
        ),
        (
            Fault::another_operation_in_progress("PUT", NIC_A),
            409,
            "AnotherOperationInProgress",
            None,
        ),
        (
            Fault::precondition_failed("PUT", NIC_A),
            412,
            "PreconditionFailed",
            None,
        ),
        (
            Fault::internal_error("PUT", NIC_A),
            500,
            "InternalServerError",
            None,
        ),
        (
            Fault::service_unavailable("PUT", NIC_A, 3),
            503,
            "ServiceUnavailable",
            Some("3"),
        ),
        (
            Fault::respond("PUT", NIC_A, 400, "SomethingOdd", "odd"),
            400,
            "SomethingOdd",
            None,
        ),
    ];
    for (fault, status, code, retry_after) in cases {
        env.emu.push_fault(fault);
        let r = env
            .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
            .await;
        assert_eq!((r.status, r.code()), (status, code), "{}", r.text);
        assert_eq!(r.header("retry-after").as_deref(), retry_after, "{code}");
        assert_eq!(
            env.emu.operations_in_progress(),
            0,
            "a fault does not touch state"
        );
    }
    assert!(env.emu.pending_faults().is_empty());
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn faults_match_method_and_path_and_can_repeat() {
    let env = Env::manual().await;
    env.emu
        .push_fault(Fault::internal_error("GET", NIC_B).times(2));
    let r = env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    assert_eq!(r.status, 200, "other NIC is not affected");
    let (doc_a, _) = env.nic(NIC_A).await;
    let r = env
        .put(&env.token_b, &env.nic_path(NIC_B), &doc_a, None)
        .await;
    assert_ne!(r.status, 500, "other method is not affected");
    for _ in 0..2 {
        assert_eq!(
            env.get(&env.token_a, &env.nic_path(NIC_B)).await.status,
            500
        );
    }
    assert_eq!(
        env.get(&env.token_a, &env.nic_path(NIC_B)).await.status,
        200
    );
    env.emu
        .push_fault(Fault::internal_error("*", "/routeTables/"));
    env.emu.clear_faults();
    assert!(env.emu.pending_faults().is_empty());
}

#[tokio::test]
async fn delay_fault_holds_the_response() {
    let env = Env::manual().await;
    env.emu.push_fault(Fault::delay("GET", NIC_A, 150));
    let started = Instant::now();
    let r = env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    let started = Instant::now();
    env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    assert!(started.elapsed() < Duration::from_millis(150), "only once");
}

#[tokio::test]
async fn operation_fails_rolls_back_and_reports_failed() {
    let env = Env::manual().await;
    let (doc_a, etag) = env.nic(NIC_A).await;
    env.emu.push_fault(Fault::operation_fails(
        "PUT",
        NIC_A,
        "InternalServerError",
        "An error occurred.",
    ));
    // A GET does not consume an operation fault.
    env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    let r = env
        .put(
            &env.token_a,
            &env.nic_path(NIC_A),
            &without_config(&doc_a, "floating"),
            Some(&etag),
        )
        .await;
    assert_eq!(r.status, 200, "the write is accepted: {}", r.text);
    let op = r.header("azure-asyncoperation").expect("op");
    assert_eq!(env.op_status(&op).await, "InProgress");
    env.advance_ms(1000);
    let status = env.get(&env.token_a, &path_of(&op)).await;
    assert_eq!(
        status.body,
        json!({"status": "Failed", "error": {"code": "InternalServerError", "message": "An error occurred.", "details": []}})
    );
    let (after, _) = env.nic(NIC_A).await;
    assert_eq!(after["properties"]["provisioningState"], "Failed");
    assert_eq!(
        ipconfig_names(&after),
        vec!["ipconfig1", "floating"],
        "goal state rolled back"
    );
    assert_eq!(
        env.emu.ip_holder(FLOATING_IP.parse().expect("ip")),
        Some(format!(
            "{}/ipConfigurations/floating",
            env.emu.nic_id(NIC_A)
        ))
    );
}

#[tokio::test]
async fn request_log_records_calls() {
    let env = Env::manual().await;
    env.emu.clear_requests();
    let (doc, etag) = env.nic(NIC_A).await;
    env.put(&env.token_a, &env.nic_path(NIC_A), &doc, Some(&etag))
        .await;
    call(env.addr, "GET", &env.nic_path(NIC_B), &[], None).await;
    let log = env.emu.requests();
    assert_eq!(log.len(), 3);
    assert_eq!(log[0].method, "GET");
    assert!(log[0].authorization_present);
    assert_eq!(log[0].query, format!("api-version={API}"));
    assert_eq!(log[0].status, 200);
    assert!(log[1].is("PUT", "networkInterfaces/nic-appliance-a"));
    assert_eq!(log[1].if_match.as_deref(), Some(etag.as_str()));
    assert_eq!(log[1].json_body(), doc);
    assert_eq!(log[1].status, 200);
    assert!(!log[2].authorization_present);
    assert_eq!(log[2].status, 401);
    assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(env.emu.count_requests("GET", "networkinterfaces/"), 2);
    assert_eq!(env.emu.count_requests("PUT", NIC_A), 1);
}

#[tokio::test]
async fn imds_token_faults_use_imds_error_bodies() {
    let env = Env::manual().await;
    let path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/";
    env.emu.push_fault(Fault::imds_identity_not_found());
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
    env.emu.push_fault(Fault::imds_token_internal_error());
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.body["error"], "unknown_error");
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 200);
    assert!(r.body["access_token"].is_string());
}

#[tokio::test]
async fn request_hook_sees_each_call_with_its_caller_before_it_is_handled() {
    use std::sync::Mutex;
    let env = Env::manual().await;
    // A second listener labelled as VM A's namespace, next to the unlabelled main one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let labelled = listener.local_addr().expect("addr");
    tokio::spawn(env.emu.clone().serve_as(listener, VM_A));
    type Seen = (u64, String, Option<String>, u16);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    env.emu.set_request_hook(Some(Arc::new(move |r| {
        let mut s = sink.lock().expect("lock");
        s.push((r.seq, r.method.clone(), r.caller.clone(), r.status));
    })));
    let path = env.nic_path(NIC_A);
    let auth = format!("Bearer {}", env.token_a);
    let headers = [("authorization", auth.as_str())];
    let r = call(labelled, "GET", &path, &headers, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(env.addr, "GET", &path, &headers, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    env.emu.set_request_hook(None);
    call(env.addr, "GET", &path, &headers, None).await;
    let seen = seen.lock().expect("lock").clone();
    // Status 0: the hook runs on arrival, before the call is answered.
    assert_eq!(
        seen,
        vec![
            (0, "GET".to_string(), Some(VM_A.to_string()), 0),
            (1, "GET".to_string(), None, 0),
        ]
    );
    let log = env.emu.requests();
    assert_eq!(log[0].caller.as_deref(), Some(VM_A));
    assert_eq!(log[2].caller, None);
}

#[tokio::test]
async fn address_in_use_and_metadata_faults() {
    let env = Env::manual().await;
    let (doc, _) = env.nic(NIC_A).await;
    env.emu
        .push_fault(Fault::private_ip_address_in_use("PUT", NIC_A));
    let r = env
        .put(&env.token_a, &env.nic_path(NIC_A), &doc, None)
        .await;
    assert_eq!((r.status, r.code()), (400, "PrivateIPAddressInUse"));
    let path = "/vms/vm-appliance-a/metadata/instance?api-version=2021-02-01";
    env.emu.push_fault(Fault::imds_metadata_unavailable());
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 500, "{}", r.text);
    let r = call(env.addr, "GET", path, &[("metadata", "true")], None).await;
    assert_eq!(r.status, 200, "{}", r.text);
}
