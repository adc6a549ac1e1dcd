//! The monitoring kit in `deploy/monitoring/`: the alert rules pass `promtool check rules` and
//! their `promtool test rules` unit tests, and a real Prometheus (Debian's `prometheus`, from
//! `scripts/install-deps.sh`) scrapes both daemons of an emulated Azure pair through a failover,
//! with the rules loaded; then every query of the Grafana dashboard and every rule is evaluated
//! against it over its HTTP API: each answers with data, and the failover shows in them.
//!
//! Prometheus listens on 127.0.0.1 (a free port) with its storage in a temporary directory. The
//! daemons serve `/metrics` on 127.0.0.1:9465 *inside their namespaces*; a relay in this process
//! (a listener on the host's loopback, each connection dialled inside the node's namespace)
//! makes them scrapeable, and refuses exactly when the daemon is down, as a dead VM would.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloudha_azure_emulator::Fault;
use serde_json::Value;

use crate::netns::{wait_until, Node};

/// Scrape and rule evaluation interval: seconds, so a failover shows within the test.
const INTERVAL_S: u64 = 1;
/// `$__rate_interval` as Grafana computes it for this scrape interval (four scrapes).
const RATE_INTERVAL: &str = "4s";
/// Bound on every wait for Prometheus (start, scrapes, the failover reaching it).
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);
/// Bound for the emulated failover (NIC propagation of one second, a throttled write).
const FAILOVER: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn monitoring() -> PathBuf {
    repo().join("deploy/monitoring")
}

/// `promtool` from the `prometheus` package, or a failure that says how to get it.
fn promtool(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}; run scripts/install-deps.sh (Debian package prometheus)")
        })
}

#[test]
fn monitoring_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let check = promtool(&["check", "rules", "cloudha-alerts.yml"], &monitoring());
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(text.contains("SUCCESS: 10 rules found"), "{text}");
    let tests = monitoring().join("tests");
    let mut files: Vec<String> = std::fs::read_dir(&tests)
        .expect("deploy/monitoring/tests")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no rule unit tests in {}",
        tests.display()
    );
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let run = promtool(&args, &tests);
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    // Every alert has a case that expects it to fire.
    let rules = std::fs::read_to_string(monitoring().join("cloudha-alerts.yml")).expect("rules");
    let cases: String = files
        .iter()
        .map(|f| std::fs::read_to_string(tests.join(f)).expect("test file"))
        .collect();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        let fired = cases
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(alert) && case.contains("exp_labels"));
        assert!(fired, "no promtool case fires {alert}");
    }
}

/// Relays connections from a host loopback port to `target` inside a namespace.
struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(ns: &str, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let port = listener.local_addr().expect("relay address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, stopping) = (ns.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let ns = ns.clone();
                std::thread::spawn(move || relay(&ns, client, target));
            }
        });
        Relay {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept so the thread sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: dial inside `ns` (refused while the daemon is down: the scrape fails) and
/// copy both ways until either side closes. Timeouts bound a stuck peer.
fn relay(ns: &str, client: TcpStream, target: SocketAddr) {
    let Ok(upstream) = crate::netns::in_namespace(ns, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
    }) else {
        return;
    };
    for s in [&client, &upstream] {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    }
    let (Ok(mut client_in), Ok(mut upstream_out)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut client_in, &mut upstream_out);
        let _ = upstream_out.shutdown(Shutdown::Write);
    });
    let (mut upstream_in, mut client_out) = (upstream, client);
    let _ = io::copy(&mut upstream_in, &mut client_out);
    let _ = client_out.shutdown(Shutdown::Both);
    let _ = up.join();
}

/// A Prometheus on 127.0.0.1, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _storage: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(targets: &[(&str, u16)]) -> Prometheus {
        let storage = tempfile::tempdir().expect("tempdir");
        let static_configs: String = targets
            .iter()
            .map(|(instance, port)| {
                format!(
                    "      - targets: [\"127.0.0.1:{port}\"]\n        labels: {{instance: {instance}}}\n"
                )
            })
            .collect();
        let config = format!(
            "global:\n  scrape_interval: {INTERVAL_S}s\n  scrape_timeout: {INTERVAL_S}s\n  evaluation_interval: {INTERVAL_S}s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: cloudha\n    static_configs:\n{static_configs}",
            monitoring().join("cloudha-alerts.yml").display()
        );
        let config_path = storage.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        // A free loopback port: bound and released just before Prometheus binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = std::fs::File::create(storage.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                storage.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus: {e}; run scripts/install-deps.sh (Debian package prometheus)")
            });
        let prometheus = Prometheus {
            child,
            port,
            _storage: storage,
        };
        wait_until("Prometheus to be ready", PROMETHEUS_WAIT, || {
            http_get(prometheus.port, "/-/ready")
                .ok()
                .filter(|(code, _)| *code == 200)
        });
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._storage.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `path` on the HTTP API, as JSON; `status` must be `success`.
    fn api(&self, path: &str) -> Value {
        let (code, body) = http_get(self.port, path).expect("Prometheus answers");
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {body}\n{}", self.log()));
        assert!(
            code == 200 && value["status"] == "success",
            "{path}: HTTP {code}: {body}"
        );
        value
    }

    /// The series of an instant query.
    fn query(&self, expr: &str) -> Vec<Value> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The series of a range query from `start` (Unix s) to now, one point a scrape.
    fn query_range(&self, expr: &str, start: u64) -> Vec<Value> {
        let v = self.api(&format!(
            "/api/v1/query_range?query={}&start={start}&end={}&step={INTERVAL_S}",
            encode(expr),
            unix_s() + 1
        ));
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Percent-encoding of a query parameter (everything but the unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 GET on loopback: (status code, body). HTTP/1.0 so the body is not chunked.
fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("no header end in {response:?}")))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((code, body.to_string()))
}

/// Every query of the dashboard (panel targets, nested rows, annotations), with Grafana's
/// variables as this test's Prometheus sees them.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(monitoring().join("grafana-cloudha.json")).expect("read");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_string()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    panels(&dashboard["panels"], &mut out);
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().unwrap_or("?");
            out.push((format!("annotation {name}"), expr.to_string()));
        }
    }
    out.into_iter()
        .map(|(title, expr)| {
            let expr = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("$job", "cloudha");
            assert!(!expr.contains('$'), "{title}: a variable left in {expr}");
            (title, expr)
        })
        .collect()
}

/// The series of `result` whose labels include all of `labels`.
fn with_labels<'a>(result: &'a [Value], labels: &[(&str, &str)]) -> Vec<&'a Value> {
    result
        .iter()
        .filter(|s| labels.iter().all(|(k, v)| s["metric"][*k] == *v))
        .collect()
}

/// A range series' values as numbers.
fn values(series: &Value) -> Vec<f64> {
    series["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p[1].as_str().and_then(|v| v.parse().ok()))
        .collect()
}

#[test]
fn monitoring_prometheus_scrapes_a_pair_through_a_failover_and_every_query_answers() {
    crate::netns::require_root_and_tools();
    let (mut pair, cloud) = crate::e2e_azure::start("monprom", 1000, false);
    let metrics: SocketAddr = "127.0.0.1:9465".parse().expect("addr");
    let relays = [
        Relay::start(pair.topo.ns(Node::A), metrics),
        Relay::start(pair.topo.ns(Node::B), metrics),
    ];
    let prometheus = Prometheus::start(&[("fw-a", relays[0].port), ("fw-b", relays[1].port)]);
    let started = unix_s().saturating_sub(1);
    wait_until("Prometheus to scrape both daemons", PROMETHEUS_WAIT, || {
        let up = prometheus.query("up{job=\"cloudha\"} == 1");
        (up.len() == 2).then_some(())
    });
    // A keepalive with the wrong key at fw-a: dropped, counted, alarmed, scraped.
    crate::e2e_local::inject(
        &pair,
        &crate::e2e_local::forged(7, "fw-b", u64::MAX, b"the wrong key, but long enough"),
    );
    // Five scrapes of the counted drop before the failover, so its rate has samples.
    wait_until(
        "Prometheus to scrape the dropped packet",
        PROMETHEUS_WAIT,
        || {
            let scraped = prometheus.query(
            "count_over_time(cloudha_keepalives_rejected_total{instance=\"fw-a\",reason=\"unauthenticated\"}[1m]) >= 5",
        );
            (!scraped.is_empty()).then_some(())
        },
    );

    // The failover: fw-a dies; fw-b's first write is throttled once, then it converges.
    cloud.emu.push_fault(Fault::throttled(
        "PUT",
        "networkInterfaces/nic-appliance-a",
        1,
    ));
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    wait_until("fw-b's takeover to converge", FAILOVER, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    wait_until("Prometheus to see the failover", PROMETHEUS_WAIT, || {
        let done = prometheus
            .query("cloudha_failover_phase_seconds_count{instance=\"fw-b\",phase=\"total\"} >= 1");
        let down = prometheus.query("up{instance=\"fw-a\"} == 0");
        (!done.is_empty() && !down.is_empty()).then_some(())
    });

    // Every dashboard query answers with data over the test's window.
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    // A panel's targets together: its series are what the panel draws.
    let mut answers: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (title, expr) in &queries {
        let result = prometheus.query_range(expr, started);
        assert!(!result.is_empty(), "{title}: no data for {expr}");
        answers.entry(title.clone()).or_default().extend(result);
    }
    // ...and the failover shows in them.
    let roles = &answers["Role per node"];
    assert!(
        !with_labels(roles, &[("instance", "fw-a"), ("role", "active")]).is_empty()
            && !with_labels(roles, &[("instance", "fw-b"), ("role", "standby")]).is_empty()
            && !with_labels(roles, &[("instance", "fw-b"), ("role", "active")]).is_empty(),
        "fw-a active, then fw-b standby -> active: {roles:#?}"
    );
    let only = |title: &str, instance: &str| {
        with_labels(&answers[title], &[("instance", instance)])
            .first()
            .map(|s| values(s))
            .unwrap_or_else(|| panic!("{title}: no {instance} series: {:#?}", answers[title]))
    };
    let epoch = only("Epoch per node", "fw-b");
    assert!(
        epoch.last() > epoch.first(),
        "fw-b's epoch goes up: {epoch:?}"
    );
    assert!(
        !with_labels(
            &answers["Failovers by cause and result"],
            &[
                ("instance", "fw-b"),
                ("cause", "peer_dead"),
                ("result", "converged")
            ]
        )
        .is_empty(),
        "{:#?}",
        answers["Failovers by cause and result"]
    );
    let phases = &answers["Failover phase durations (mean)"];
    for phase in ["detection", "first_api_call", "first_write", "total"] {
        assert!(
            !with_labels(phases, &[("instance", "fw-b"), ("phase", phase)]).is_empty(),
            "{phase}: {phases:#?}"
        );
    }
    let throttled = &answers["API throttling by operation"];
    assert!(
        with_labels(throttled, &[("instance", "fw-b")])
            .iter()
            .any(|s| values(s).last() >= Some(&1.0)),
        "the throttled write: {throttled:#?}"
    );
    let a_up = only("Scrape targets up", "fw-a");
    assert!(
        a_up.first() == Some(&1.0) && a_up.last() == Some(&0.0),
        "fw-a up, then down: {a_up:?}"
    );
    assert!(
        with_labels(
            &answers["Alarms raised"],
            &[("instance", "fw-a"), ("alarm", "bad_packets")]
        )
        .iter()
        .any(|s| values(s).contains(&1.0)),
        "the bad_packets alarm: {:#?}",
        answers["Alarms raised"]
    );
    assert!(
        !with_labels(
            &answers["Keepalives dropped by reason"],
            &[("instance", "fw-a"), ("reason", "unauthenticated")]
        )
        .is_empty(),
        "{:#?}",
        answers["Keepalives dropped by reason"]
    );
    assert!(
        !answers["annotation Failovers"].is_empty(),
        "the epoch change is annotated"
    );

    // Every rule loaded, evaluated without error, over metrics the daemons really export.
    let rules = prometheus.api("/api/v1/rules");
    let rules: Vec<Value> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert_eq!(rules.len(), 10, "{rules:#?}");
    let exported: Vec<String> = prometheus
        .query("count by (__name__) ({job=\"cloudha\"})")
        .iter()
        .filter_map(|s| s["metric"]["__name__"].as_str().map(str::to_string))
        .collect();
    for rule in &rules {
        let name = rule["name"].as_str().unwrap_or("?");
        assert_eq!(rule["health"], "ok", "{name}: {rule:#}");
        let expr = rule["query"].as_str().expect("query");
        // The instant query runs (a typo in a function or a label matcher fails here).
        prometheus.query(expr);
        for metric in metric_names(expr) {
            assert!(
                exported.contains(&metric),
                "{name} reads {metric}, which no daemon exports: {exported:?}"
            );
        }
    }
    // The dead node shows in the rules: fw-a's target down goes pending (for: 1m) at the first
    // evaluation after the failed scrape.
    wait_until("CloudhaNodeDown pending for fw-a", PROMETHEUS_WAIT, || {
        let rules = prometheus.api("/api/v1/rules");
        let pending = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .filter(|r| r["name"] == "CloudhaNodeDown")
            .flat_map(|r| r["alerts"].as_array().cloned().unwrap_or_default())
            .any(|a| {
                a["labels"]["instance"] == "fw-a"
                    && ["pending", "firing"].contains(&a["state"].as_str().unwrap_or(""))
            });
        pending.then_some(())
    });
    drop(relays);
}

/// The metric names an expression reads: identifiers starting `cloudha_`, and `up`, outside
/// quoted label values.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in expr.chars().chain([' ']) {
        if !quoted && (c.is_ascii_alphanumeric() || c == '_') {
            word.push(c);
            continue;
        }
        if (word.starts_with("cloudha_") || word == "up") && !names.contains(&word) {
            names.push(word.clone());
        }
        word.clear();
        if c == '"' {
            quoted = !quoted;
        }
    }
    names
}

#[test]
fn metric_names_skips_label_values_and_functions() {
    assert_eq!(
        metric_names(r#"sum by (job) (rate(cloudha_x_total{a="cloudha_y"}[5m])) or up == 0"#),
        ["cloudha_x_total", "up"]
    );
}
