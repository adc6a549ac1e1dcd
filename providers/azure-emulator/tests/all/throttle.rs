//! Per-subscription read/write token buckets.

use crate::common::*;
use cloudha_azure_emulator::ThrottleLimits;
use serde_json::json;

#[tokio::test]
async fn writes_are_throttled_per_subscription_with_retry_after() {
    let env = Env::manual().await;
    env.emu.set_throttle_limits(ThrottleLimits {
        write_burst: 3,
        write_refill_per_sec: 1.0,
        read_burst: 5,
        read_refill_per_sec: 5.0,
    });
    // Writes are metered even when the RP then rejects the body.
    let body = json!({});
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = env
            .put(&env.token_a, &env.nic_path("nic-x"), &body, None)
            .await;
        assert_eq!(r.status, 400);
        remaining.push(
            r.header("x-ms-ratelimit-remaining-subscription-writes")
                .expect("header"),
        );
    }
    assert_eq!(remaining, vec!["2", "1", "0"]);
    let r = env
        .put(&env.token_b, &env.nic_path("nic-x"), &body, None)
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "SubscriptionRequestsThrottled");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(
        r.header("x-ms-ratelimit-remaining-subscription-writes")
            .as_deref(),
        Some("0")
    );
    assert!(
        r.message()
            .starts_with("Number of 'write' requests for subscription"),
        "{}",
        r.message()
    );
    // Reads have their own bucket.
    let g = env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("x-ms-ratelimit-remaining-subscription-reads")
            .as_deref(),
        Some("4")
    );
    assert!(g
        .header("x-ms-ratelimit-remaining-subscription-writes")
        .is_none());
    env.advance_ms(1000);
    let r = env
        .put(&env.token_a, &env.nic_path("nic-x"), &body, None)
        .await;
    assert_eq!(r.status, 400, "refilled");
}

#[tokio::test]
async fn reads_are_throttled_and_defaults_match_arm() {
    let env = Env::manual().await;
    let g = env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    assert_eq!(
        g.header("x-ms-ratelimit-remaining-subscription-reads")
            .as_deref(),
        Some("249")
    );
    env.emu.set_throttle_limits(ThrottleLimits {
        read_burst: 2,
        read_refill_per_sec: 0.5,
        ..ThrottleLimits::default()
    });
    assert_eq!(
        env.get(&env.token_a, &env.nic_path(NIC_A)).await.status,
        200
    );
    assert_eq!(
        env.get(&env.token_a, &env.nic_path(NIC_A)).await.status,
        200
    );
    let r = env.get(&env.token_a, &env.nic_path(NIC_A)).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("2"));
    let p = env
        .put(&env.token_a, &env.nic_path("nic-x"), &json!({}), None)
        .await;
    assert_eq!(
        p.header("x-ms-ratelimit-remaining-subscription-writes")
            .as_deref(),
        Some("199")
    );
}
