//! Day two, end to end with two real daemons in namespaces (local provider: fast and exact):
//! `/metrics` scraped with the Prometheus project's own Python text parser, the journal read
//! with `cloudha events`, alarms for a wrong-key sender and a mismatched config, notify hooks,
//! SIGHUP reloads and systemd's notify protocol.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::e2e_local::{forged, inject, local_provider, name, Options, Pair, SOON};
use crate::netns::{self, wait_until, Node};

/// Scrapes `/metrics` inside the node's namespace and parses it with `prometheus_client`'s
/// Prometheus text parser (and, as a cross-check, its OpenMetrics parser): sample -> value.
const SCRAPE: &str = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families as prometheus_text
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_text
text = urllib.request.urlopen("http://127.0.0.1:9465/metrics", timeout=5).read().decode()
def samples(parse):
    out = {}
    for family in parse(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out
prometheus = samples(prometheus_text)
assert prometheus == samples(openmetrics_text), "the two parsers disagree"
print(json.dumps(prometheus))
"#;

const VENV_PYTHON: &str = "/opt/cloudha-venv/bin/python";

pub(crate) fn scrape(pair: &Pair, node: Node) -> BTreeMap<String, f64> {
    let out = pair
        .topo
        .exec(node, &[VENV_PYTHON, "-c", SCRAPE])
        .expect("run the scraper");
    assert!(
        out.status.success(),
        "scrape failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("scraper output")
}

pub(crate) fn metric(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", samples.keys()))
}

fn config_path(pair: &Pair, node: Node) -> PathBuf {
    pair.dir.path().join(format!("{}.toml", name(node)))
}

/// The node's journal through `cloudha events --json`.
pub(crate) fn events(pair: &Pair, node: Node) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudha"))
        .args(["events", "--json", "--journal"])
        // By path: the tests below break the config file on purpose.
        .arg(
            pair.dir
                .path()
                .join(format!("{}-state/journal.jsonl", name(node))),
        )
        .output()
        .expect("run cloudha events");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The node's newest failover drawn by `cloudha events --failover`.
fn timeline(pair: &Pair, node: Node) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudha"))
        .args(["events", "--failover", "--journal"])
        .arg(
            pair.dir
                .path()
                .join(format!("{}-state/journal.jsonl", name(node))),
        )
        .output()
        .expect("run cloudha events --failover");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect()
}

/// The local provider plus a hook on every role that appends its environment to a file.
fn with_hooks(dir: &Path) -> impl Fn(Node) -> String + '_ {
    move |node| {
        let log = dir.join(format!("hooks-{}.log", name(node)));
        let script = format!(
            "echo \\\"$CLOUDHA_NODE $CLOUDHA_STATE from $CLOUDHA_PREVIOUS_STATE epoch $CLOUDHA_EPOCH: $CLOUDHA_REASON\\\" >> {}",
            log.display()
        );
        format!(
            "{}\n[hooks]\non_active = [\"/bin/sh\", \"-c\", \"{script}\"]\non_standby = [\"/bin/sh\", \"-c\", \"{script}\"]\ntimeout = \"5s\"\n",
            local_provider(node)
        )
    }
}

#[test]
fn e2e_ops_metrics_journal_alarms_hooks_and_reload_through_a_failover() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let pair = Pair::prepare("e2eops", Options::default(), with_hooks(scratch.path()));
    let mut pair = pair.start_both();

    let a = scrape(&pair, Node::A);
    assert_eq!(metric(&a, "cloudha_role{role=\"active\"}"), 1.0);
    assert_eq!(metric(&a, "cloudha_role{role=\"standby\"}"), 0.0);
    assert_eq!(metric(&a, "cloudha_peer_alive{}"), 1.0);
    assert!(metric(&a, "cloudha_keepalives_received_total{path=\"lan\"}") > 0.0);
    assert_eq!(metric(&a, "cloudha_alarm{alarm=\"bad_packets\"}"), 0.0);

    // A sender with the wrong key: dropped, counted, and an alarm on A.
    inject(
        &pair,
        &forged(7, "fw-b", u64::MAX, b"the wrong key, but long enough"),
    );
    let s = wait_until("the bad_packets alarm on fw-a", SOON, || {
        pair.status(Node::A).filter(|s| {
            s["alarms"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"] == "bad_packets"))
        })
    });
    assert_eq!(s["role"], "active", "a forged packet changes nothing");
    let a = scrape(&pair, Node::A);
    assert_eq!(metric(&a, "cloudha_alarm{alarm=\"bad_packets\"}"), 1.0);
    assert_eq!(
        metric(
            &a,
            "cloudha_keepalives_rejected_total{path=\"lan\",reason=\"unauthenticated\"}"
        ),
        1.0
    );
    let text = pair.cli(Node::A, &["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("ALARM bad_packets"));
    assert!(kinds(&events(&pair, Node::A)).contains(&"alarm_raised".to_string()));

    // Failover: B's journal, hooks and metrics tell the story.
    pair.daemon(Node::A).kill9().expect("kill fw-a");
    wait_until("fw-b active and converged", SOON, || {
        pair.status(Node::B)
            .filter(|s| s["role"] == "active" && s["takeover"]["state"] == "done")
    });
    let journal = events(&pair, Node::B);
    let story: Vec<String> = kinds(&journal)
        .into_iter()
        .filter(|k| ["transition", "takeover_started", "takeover_done"].contains(&k.as_str()))
        .collect();
    assert_eq!(
        story,
        [
            "transition",
            "transition",
            "takeover_started",
            "takeover_done"
        ],
        "init->standby, standby->active, then the takeover: {journal:#?}"
    );
    // The takeover_done entry carries the failover record, and `events --failover` draws it.
    let done = journal
        .iter()
        .rfind(|e| e["kind"] == "takeover_done")
        .expect("takeover_done");
    let record = &done["data"]["failover"];
    assert_eq!(record["epoch"], done["epoch"], "{done:#}");
    let operations = record["operations"].as_array().expect("operations");
    assert!(!operations.is_empty(), "{done:#}");
    assert!(
        operations.iter().all(|op| op["started_ms"].is_u64()),
        "every operation has its start: {done:#}"
    );
    let drawing = timeline(&pair, Node::B);
    assert!(
        drawing.starts_with(&format!(
            "Failover to epoch {} on fw-b: converged",
            done["epoch"]
        )),
        "{drawing}"
    );
    assert!(drawing.contains("\ndetection "), "{drawing}");
    for op in operations {
        let id = op["id"].as_str().expect("id");
        assert!(
            drawing
                .lines()
                .any(|l| l.starts_with(id) && l.contains('#')),
            "a bar for {id}:\n{drawing}"
        );
    }
    assert!(
        drawing.lines().all(|l| l.len() <= 100 && l.is_ascii()),
        "{drawing}"
    );
    let hooks = wait_until("fw-b's active hook", SOON, || {
        let text =
            std::fs::read_to_string(scratch.path().join("hooks-fw-b.log")).unwrap_or_default();
        text.contains("fw-b active").then_some(text)
    });
    let lines: Vec<&str> = hooks.lines().collect();
    assert!(
        lines[0].starts_with("fw-b standby from init epoch"),
        "{hooks}"
    );
    assert!(
        lines[1].starts_with("fw-b active from standby epoch") && lines[1].contains("peer silent"),
        "{hooks}"
    );
    let hook_entries = journal.iter().filter(|e| e["kind"] == "hook").count();
    assert!(hook_entries >= 1, "{journal:#?}");
    let b = scrape(&pair, Node::B);
    assert_eq!(
        metric(
            &b,
            "cloudha_failovers_total{cause=\"peer_dead\",result=\"converged\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &b,
            "cloudha_failover_phase_seconds_count{phase=\"detection\"}"
        ),
        1.0
    );
    let detection = metric(
        &b,
        "cloudha_failover_phase_seconds_sum{phase=\"detection\"}",
    );
    assert!((0.5..2.0).contains(&detection), "detection {detection} s");

    // SIGHUP: a broken file is refused and the daemon runs on; a change that needs a restart
    // is refused naming it; a hook change is applied.
    let path = config_path(&pair, Node::B);
    let good = std::fs::read_to_string(&path).expect("config");
    let pid = pair.daemon(Node::B).pid().to_string();
    let hup = || {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill -HUP");
        assert!(ok.success());
    };
    let reloads = |pair: &Pair, n: usize| {
        wait_until("a reload in the journal", SOON, || {
            let r: Vec<Value> = events(pair, Node::B)
                .into_iter()
                .filter(|e| e["kind"] == "reload")
                .collect();
            (r.len() >= n).then_some(r)
        })
    };
    std::fs::write(&path, "[cluster]\nid = \"seven\"\n").expect("write");
    hup();
    let r = reloads(&pair, 1);
    assert_eq!(r[0]["data"]["applied"], false);
    assert!(
        r[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cluster.id")),
        "{r:?}"
    );
    std::fs::write(
        &path,
        good.replace("dead_interval = \"500ms\"", "dead_interval = \"900ms\""),
    )
    .expect("write");
    hup();
    let r = reloads(&pair, 2);
    assert_eq!(r[1]["data"]["applied"], false);
    assert!(
        r[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("keepalive")),
        "{r:?}"
    );
    std::fs::write(&path, good.replace("timeout = \"5s\"", "timeout = \"7s\"")).expect("write");
    hup();
    let r = reloads(&pair, 3);
    assert_eq!(r[2]["data"]["applied"], true, "{r:?}");
    assert_eq!(
        pair.status(Node::B).expect("status")["role"],
        "active",
        "reloads never disturb the role"
    );
}

#[test]
fn e2e_ops_a_mismatched_config_raises_an_alarm_on_both_nodes() {
    let pair = Pair::prepare("e2eopsmis", Options::default(), local_provider);
    // B's floating IP prefix differs: part of the HA digest, harmless to run with.
    let path = config_path(&pair, Node::B);
    let text = std::fs::read_to_string(&path).expect("config");
    let ours = format!("prefix_len = {}", netns::PREFIX_LEN);
    assert!(text.contains(&ours), "{text}");
    let theirs = format!("prefix_len = {}", netns::PREFIX_LEN + 1);
    std::fs::write(&path, text.replace(&ours, &theirs)).expect("write");
    let pair = pair.start_both();
    for node in [Node::A, Node::B] {
        let s = wait_until("the config_mismatch alarm", SOON, || {
            pair.status(node).filter(|s| {
                s["alarms"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x["name"] == "config_mismatch"))
            })
        });
        assert_eq!(s["ready"], false, "{s}");
    }
}

/// The next datagram on the notify socket, within 10 s. A signal to this test process (tokio's
/// SIGCHLD handler, when another test's child exits) makes a `recv` with a socket timeout fail
/// with EINTR whatever the handler's flags (signal(7)): that is no timeout, so wait on.
fn recv_notification(socket: &UnixDatagram, buf: &mut [u8]) -> usize {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match socket.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                assert!(
                    std::time::Instant::now() < until,
                    "no notification within 10 s"
                );
            }
            other => return other.expect("a notification within 10 s"),
        }
    }
}

#[test]
fn e2e_ops_systemd_ready_status_and_watchdog() {
    let pair = Pair::prepare("e2eopssd", Options::default(), local_provider);
    let socket_path = pair.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut pair = pair;
    pair.spawn_with_env(
        Node::A,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("utf-8")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: READY, a STATUS with the role, then at least three watchdog pings.
    for _ in 0..200 {
        let n = recv_notification(&socket, &mut buf);
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
        if pings >= 3 && seen.iter().any(|m| m.contains("READY=1")) {
            break;
        }
    }
    let ready = seen
        .iter()
        .position(|m| m.contains("READY=1"))
        .expect("READY=1");
    assert!(
        seen[ready].contains("STATUS=active"),
        "READY comes with the first decided role: {seen:?}"
    );
    assert!(
        seen[..ready].iter().all(|m| !m.contains("STATUS=active")),
        "{seen:?}"
    );
    assert!(
        seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{seen:?}"
    );
}
