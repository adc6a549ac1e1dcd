//! systemd integration (`Type=notify`): READY once the first role decision is made, a STATUS
//! line with the role, WATCHDOG pings from the event loop (so a hung loop gets restarted),
//! RELOADING around SIGHUP and STOPPING on shutdown. All of it is a no-op outside systemd
//! (no `$NOTIFY_SOCKET`).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// What has been told to systemd.
#[derive(Debug)]
pub struct Systemd {
    enabled: bool,
    ready: bool,
    status: String,
    /// Ping interval: half of `WatchdogSec`.
    watchdog: Option<Duration>,
    last_ping: Instant,
}

impl Systemd {
    /// Read `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`.
    pub fn from_env() -> Systemd {
        Systemd {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ready: false,
            status: String::new(),
            watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_ping: Instant::now(),
        }
    }

    /// How often the event loop must wake up to ping the watchdog, if it must.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Called after every loop iteration: READY on the first decided role, STATUS on change,
    /// WATCHDOG when due.
    pub fn update(&mut self, role: &str, status: String) {
        if !self.enabled {
            return;
        }
        let mut states = Vec::new();
        if !self.ready && role != "init" {
            self.ready = true;
            states.push(NotifyState::Ready);
        }
        let changed = status != self.status;
        if changed {
            self.status = status;
        }
        if changed {
            states.push(NotifyState::Status(&self.status));
        }
        if self
            .watchdog
            .is_some_and(|every| self.last_ping.elapsed() >= every)
        {
            self.last_ping = Instant::now();
            states.push(NotifyState::Watchdog);
        }
        if !states.is_empty() {
            if let Err(e) = sd_notify::notify(&states) {
                tracing::warn!("sd_notify failed: {e}");
            }
        }
    }

    /// Tell systemd a reload is running (`done` false) or finished.
    pub fn reloading(&self, done: bool) {
        if !self.enabled {
            return;
        }
        let result = if done {
            sd_notify::notify(&[NotifyState::Ready])
        } else {
            match NotifyState::monotonic_usec_now() {
                Ok(now) => sd_notify::notify(&[NotifyState::Reloading, now]),
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            tracing::warn!("sd_notify failed: {e}");
        }
    }

    pub fn stopping(&self) {
        if self.enabled {
            let _ = sd_notify::notify(&[NotifyState::Stopping]);
        }
    }
}
