//! Discovery from IMDS and the production token credential.

use cloudha_provider_azure::{AzureProvider, TokenSource};
use cloudha_provider_core::{Holder, ProgressReporter, Provider, TakeoverRequest};

use crate::harness::*;

#[tokio::test]
async fn own_nic_is_found_from_imds_by_mac() {
    let cloud = Cloud::start(100).await;
    let mut config = cloud.config("b");
    config.own_nic = None;
    let b = cloud.provider_with("b", config);
    b.health().await.expect("discovery works");
    let obs = b.observe().await.expect("observe");
    assert_eq!(obs.resources[0].holder, Holder::Peer, "B knows it is not A");
    b.take_over(
        &TakeoverRequest {
            epoch: 1,
            deadline: DEADLINE,
        },
        &ProgressReporter::discard(),
    )
    .await
    .expect("takeover");
    assert!(cloud
        .holder_of_floating()
        .expect("held")
        .contains("nic-appliance-b"));
    assert!(cloud.emu.count_requests("GET", "/metadata/instance") >= 1);
    assert!(
        cloud
            .emu
            .count_requests("GET", "virtualMachines/vm-appliance-b")
            >= 1
    );
}

#[tokio::test]
async fn unreachable_imds_is_a_transient_health_failure() {
    let cloud = Cloud::start(100).await;
    let mut config = cloud.config("b");
    config.own_nic = None;
    // A loopback port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    config.imds_endpoint = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let b = cloud.provider_with("b", config);
    let err = b.health().await.expect_err("no IMDS");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

/// The real `azure_identity` credential, pointed at the emulator through the App Service
/// variables it documents. This test is the only one that sets them.
#[tokio::test]
async fn real_managed_identity_credential_gets_a_token() {
    let cloud = Cloud::start(100).await;
    let identity = cloud.emu.vm_identity("vm-appliance-b").expect("identity");
    std::env::set_var("IDENTITY_ENDPOINT", format!("{}/msi/token", cloud.url()));
    std::env::set_var("IDENTITY_HEADER", &identity.identity_header);
    let source =
        TokenSource::managed_identity("https://management.azure.com/", None).expect("credential");
    let provider = AzureProvider::new(
        cloud.config("b"),
        cloud.floating(),
        cloud.routes(),
        std::sync::Arc::new(source),
    )
    .expect("provider");
    provider.observe().await.expect("ARM accepts the token");
    assert!(cloud.emu.count_requests("GET", "/msi/token") >= 1);

    // ARM refuses the token three times (revoked, say): each refusal must send the next
    // request to the identity endpoint, past azure_identity's own cache, which would otherwise
    // hand back the refused token until shortly before its expiry.
    let before = cloud.emu.count_requests("GET", "/msi/token");
    cloud.emu.push_fault(
        cloudha_azure_emulator::Fault::respond(
            "GET",
            "networkInterfaces",
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )
        .times(3),
    );
    for _ in 0..3 {
        assert!(
            provider.observe().await.is_err(),
            "the 401 reaches the caller"
        );
    }
    provider.observe().await.expect("a fresh token is accepted");
    let fetched = cloud.emu.count_requests("GET", "/msi/token") - before;
    assert!(
        fetched >= 3,
        "three 401s must fetch three new tokens from the identity endpoint; it saw {fetched}"
    );
}
