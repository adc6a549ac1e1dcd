//! A served emulator and providers for the two appliance VMs of `two-appliances.toml`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use cloudha_azure_emulator::{Emulator, Scenario};
use cloudha_provider_azure::{AzureConfig, AzureProvider, FloatingIpConfig, MoveMode, TokenSource};
use cloudha_provider_core::{NextHop, ProgressEvent, ProgressReporter, RouteSpec};
use tokio::sync::mpsc;

/// The floating address of the scenario.
pub const FLOATING: &str = "10.10.1.100";
/// Appliance A's and B's own addresses.
pub const ADDR_A: &str = "10.10.1.4";
pub const ADDR_B: &str = "10.10.1.5";

/// Hands out the emulator's tokens for one VM. The production credential is exercised by
/// `discovery::real_managed_identity_credential_gets_a_token`; the other tests use this one so
/// they can run in parallel without sharing process-wide identity variables.
#[derive(Debug)]
pub struct EmulatorCredential {
    emu: Arc<Emulator>,
    vm: String,
}

#[async_trait::async_trait]
impl TokenCredential for EmulatorCredential {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let token = self.emu.issue_token(&self.vm).ok_or_else(|| {
            azure_core::Error::with_message(azure_core::error::ErrorKind::Credential, "no such VM")
        })?;
        Ok(AccessToken::new(
            token,
            OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

pub fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test address")
}

/// A served emulator with short propagation delays.
pub struct Cloud {
    pub emu: Arc<Emulator>,
    pub addr: SocketAddr,
}

impl Cloud {
    pub async fn start(nic_ms: u64) -> Cloud {
        Self::start_with(&Scenario::two_appliances(), nic_ms).await
    }

    /// A served emulator for a scenario changed from the standard one.
    pub async fn start_with(scenario: &Scenario, nic_ms: u64) -> Cloud {
        let emu = Emulator::new(scenario).expect("scenario");
        emu.update_settings(|s| {
            s.nic_propagation_ms = nic_ms;
            s.route_propagation_ms = nic_ms / 2;
            s.move_propagation_ms = nic_ms;
            s.lro_retry_after_secs = 1;
        });
        let addr = emu.start().await.expect("serve");
        Cloud { emu, addr }
    }

    /// PUT a NIC document straight to the emulator (what an operator's `az` call would do) and wait.
    pub async fn put_nic(&self, name: &str, doc: &serde_json::Value) {
        let token = self.emu.issue_token("vm-appliance-a").expect("token");
        let url = format!(
            "{}{}?api-version=2024-05-01",
            self.url(),
            self.emu.nic_id(name)
        );
        let client = reqwest::Client::new();
        let r = client
            .put(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(doc.to_string())
            .send()
            .await
            .expect("put");
        let status = r.status();
        assert!(
            status.is_success(),
            "{status}: {}",
            r.text().await.unwrap_or_default()
        );
        for _ in 0..100 {
            if self.emu.operations_in_progress() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("operation never finished");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_source(&self, vm: &str) -> Arc<TokenSource> {
        let cred = Arc::new(EmulatorCredential {
            emu: self.emu.clone(),
            vm: vm.into(),
        });
        Arc::new(TokenSource::with_credential(
            cred,
            "https://management.azure.com/",
        ))
    }

    pub fn route_table_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/routeTables/rt-workloads",
            self.emu.subscription_id(),
            self.emu.resource_group()
        )
    }

    pub fn public_ip_id(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/publicIPAddresses/pip-floating",
            self.emu.subscription_id(),
            self.emu.resource_group()
        )
    }

    /// The config of node `me` ("a" or "b") with both NICs named.
    pub fn config(&self, me: &str) -> AzureConfig {
        let other = if me == "a" { "b" } else { "a" };
        let mut c = AzureConfig::new(self.emu.nic_id(&format!("nic-appliance-{other}")));
        c.own_nic = Some(self.emu.nic_id(&format!("nic-appliance-{me}")));
        c.arm_endpoint = self.url();
        c.imds_endpoint = format!("{}/vms/vm-appliance-{me}", self.url());
        c
    }

    pub fn floating(&self) -> Vec<FloatingIpConfig> {
        vec![FloatingIpConfig {
            address: ip(FLOATING),
            ip_config_name: None,
            public_ip: Some(self.public_ip_id()),
        }]
    }

    pub fn routes(&self) -> Vec<RouteSpec> {
        vec![RouteSpec {
            table: self.route_table_id(),
            name: "default-via-appliance".into(),
            prefix: "0.0.0.0/0".into(),
            next_hop: NextHop::SelfAddress,
        }]
    }

    pub fn provider(&self, me: &str) -> AzureProvider {
        self.provider_with(me, self.config(me))
    }

    pub fn provider_with(&self, me: &str, config: AzureConfig) -> AzureProvider {
        AzureProvider::new(
            config,
            self.floating(),
            self.routes(),
            self.token_source(&format!("vm-appliance-{me}")),
        )
        .expect("provider")
    }

    pub fn atomic_config(&self, me: &str) -> AzureConfig {
        let mut c = self.config(me);
        c.move_mode = MoveMode::Atomic;
        c
    }

    pub fn holder_of_floating(&self) -> Option<String> {
        self.emu.ip_holder(ip(FLOATING))
    }

    pub fn route_next_hop(&self) -> Option<String> {
        self.emu
            .route("rt-workloads", "default-via-appliance")?
            .pointer("/properties/nextHopIpAddress")?
            .as_str()
            .map(str::to_string)
    }
}

/// A progress channel whose events can be read after the takeover.
pub struct Recorder {
    pub reporter: ProgressReporter,
    rx: mpsc::UnboundedReceiver<ProgressEvent>,
}

impl Recorder {
    pub fn new() -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        Recorder {
            reporter: ProgressReporter::new(tx),
            rx,
        }
    }

    pub fn events(&mut self) -> Vec<ProgressEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            out.push(e);
        }
        out
    }
}

/// Calls by operation from the progress events.
pub fn calls(events: &[ProgressEvent]) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for e in events {
        if let ProgressEvent::ApiCall { operation, .. } = e {
            *out.entry(operation.clone()).or_insert(0) += 1;
        }
    }
    out
}

pub const DEADLINE: Duration = Duration::from_secs(60);
