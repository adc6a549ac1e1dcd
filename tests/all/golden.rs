//! Golden tests of the state machine: each folder under `tests/golden/` holds `config.json`
//! (an `FsmConfig`), `events.jsonl` (one `{"at": ms, "event": ...}` per line) and
//! `expected.jsonl` (one `{"at": ms, "role": ..., "actions": [...]}` per event).
//!
//! Run with `CLOUDHA_BLESS=1` to rewrite `expected.jsonl` from the current behaviour; review
//! the diff before committing it. Field incidents become new folders.

use std::path::{Path, PathBuf};

use cloudha::fsm::{Action, Event, Fsm, FsmConfig, Millis, Role};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Input {
    at: Millis,
    event: Event,
}

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Output {
    at: Millis,
    role: Role,
    epoch: u64,
    actions: Vec<Action>,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn run_case(dir: &Path) -> (Vec<Output>, String) {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", dir.display()))
    };
    let config: FsmConfig = serde_json::from_str(&read("config.json"))
        .unwrap_or_else(|e| panic!("{}: config.json: {e}", dir.display()));
    let mut fsm = Fsm::new(config, 0);
    let mut outputs = Vec::new();
    for (n, line) in read("events.jsonl").lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with("//") {
            continue;
        }
        let input: Input = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: events.jsonl line {}: {e}", dir.display(), n + 1));
        let actions = fsm.step(input.event, input.at);
        outputs.push(Output {
            at: input.at,
            role: fsm.role(),
            epoch: fsm.epoch(),
            actions,
        });
    }
    let text = outputs
        .iter()
        .map(|o| serde_json::to_string(o).expect("outputs serialise"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    (outputs, text)
}

#[test]
fn golden_cases() {
    let bless = std::env::var_os("CLOUDHA_BLESS").is_some();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/golden exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 10,
        "expected the golden cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let (outputs, text) = run_case(dir);
        let expected_path = dir.join("expected.jsonl");
        if bless {
            std::fs::write(&expected_path, &text).expect("write expected.jsonl");
            continue;
        }
        let expected_text = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with CLOUDHA_BLESS=1 to create it)",
                expected_path.display()
            )
        });
        let expected: Vec<Output> = expected_text
            .lines()
            .map(|l| serde_json::from_str(l).expect("expected.jsonl parses"))
            .collect();
        if expected != outputs {
            let first = expected
                .iter()
                .zip(&outputs)
                .position(|(e, o)| e != o)
                .unwrap_or(expected.len().min(outputs.len()));
            failures.push(format!(
                "{}: differs at event {}:\n  expected {:?}\n  got      {:?}",
                dir.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                first + 1,
                expected.get(first),
                outputs.get(first)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
