//! The deploy kit (`deploy/`): every role, policy and template grants exactly the actions of the
//! shared lists in `providers/*/src/permissions.rs`, the Bicep files pass a structural lint (not
//! the Bicep compiler: `az bicep build` is the real check), and the systemd unit verifies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use cloudha_provider_aws::permissions as aws;
use cloudha_provider_azure::config::MoveMode;
use cloudha_provider_azure::permissions as azure;
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn json(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not valid JSON: {e}"))
}

/// A list that must hold each action once: as a set, with duplicates refused.
fn action_set<'a>(what: &str, actions: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for action in actions {
        assert!(
            set.insert(action.to_string()),
            "{what}: {action} listed twice"
        );
    }
    set
}

fn strings<'a>(what: &str, value: &'a Value) -> Vec<&'a str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not an array"))
        .iter()
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{what}: {v} is not a string"))
        })
        .collect()
}

fn azure_all() -> BTreeSet<String> {
    action_set("permissions.rs", azure::action_names())
}

fn azure_subscription_scoped() -> BTreeSet<String> {
    action_set(
        "permissions.rs",
        azure::FAILOVER_ACTIONS
            .iter()
            .filter(|a| a.scope == azure::Scope::Subscription)
            .map(|a| a.action),
    )
}

fn aws_all() -> BTreeSet<String> {
    action_set("permissions.rs", aws::action_names())
}

// ---- Azure role definitions --------------------------------------------------------------------

fn check_role_file(path: &str, expected: &BTreeSet<String>) {
    let role = json(path);
    assert_eq!(role["IsCustom"], Value::Bool(true), "{path}: IsCustom");
    let actions = action_set(path, strings(&format!("{path} Actions"), &role["Actions"]));
    assert_eq!(
        &actions, expected,
        "{path}: Actions differ from permissions.rs"
    );
    for empty in ["NotActions", "DataActions", "NotDataActions"] {
        assert_eq!(role[empty], serde_json::json!([]), "{path}: {empty}");
    }
    // The setup script fills this placeholder; the roles are assigned at resources of the
    // subscription and (operations) at the subscription itself, so that is the assignable scope.
    assert_eq!(
        strings(path, &role["AssignableScopes"]),
        vec!["/subscriptions/{subscriptionId}"],
        "{path}: AssignableScopes"
    );
    assert!(
        role["Name"].as_str().is_some_and(|n| !n.is_empty()),
        "{path}: Name"
    );
}

#[test]
fn azure_role_grants_exactly_the_failover_actions() {
    check_role_file("deploy/azure/cloudha-role.json", &azure_all());
}

#[test]
fn azure_operations_role_grants_only_the_subscription_scoped_actions() {
    let expected = azure_subscription_scoped();
    assert!(!expected.is_empty());
    check_role_file("deploy/azure/cloudha-operations-role.json", &expected);
}

// ---- Bicep: a structural lint ------------------------------------------------------------------

/// The code of a Bicep file with comments and string literals blanked out (interpolations
/// `${...}` stay: they are code). Line structure is kept so line numbers still match.
fn bicep_code(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut in_string = false;
    // Brace depth inside each open interpolation.
    let mut interpolations: Vec<usize> = Vec::new();
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if in_string {
            match c {
                '\\' => {
                    out.push(' ');
                    if let Some(n) = next {
                        out.push(blank(n));
                    }
                    i += 2;
                }
                '\'' => {
                    in_string = false;
                    out.push(' ');
                    i += 1;
                }
                '$' if next == Some('{') => {
                    interpolations.push(0);
                    in_string = false;
                    out.push_str("  ");
                    i += 2;
                }
                _ => {
                    out.push(blank(c));
                    i += 1;
                }
            }
            continue;
        }
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
            continue;
        }
        if c == '\'' {
            in_string = true;
            out.push(' ');
            i += 1;
            continue;
        }
        if let Some(depth) = interpolations.last_mut() {
            if c == '{' {
                *depth += 1;
            } else if c == '}' {
                if *depth == 0 {
                    interpolations.pop();
                    in_string = true;
                    out.push(' ');
                    i += 1;
                    continue;
                }
                *depth -= 1;
            }
        }
        out.push(c);
        i += 1;
    }
    assert!(!in_string, "unterminated string literal");
    out
}

/// Identifiers of the code with the (1-based) line they are on; object keys (a line starting
/// with `key:`) are not uses of a symbol and are left out.
fn identifiers(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let key = line
            .trim_start()
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        let mut word = String::new();
        let mut first = true;
        for c in line.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_alphanumeric() || c == '_' {
                word.push(c);
            } else if !word.is_empty() {
                let is_key = first && key == Some(word.as_str());
                first = false;
                if !word.starts_with(|c: char| c.is_ascii_digit()) && !is_key {
                    out.push((n + 1, std::mem::take(&mut word)));
                }
                word.clear();
            }
        }
    }
    out
}

struct BicepFile {
    path: String,
    source: String,
    code: String,
    /// name -> (line, has a default)
    params: BTreeMap<String, (usize, bool)>,
    outputs: BTreeSet<String>,
}

impl BicepFile {
    fn load(path: &str) -> Self {
        Self::parse(path, read(path))
    }

    fn parse(path: &str, source: String) -> Self {
        let code = bicep_code(&source);
        let mut params = BTreeMap::new();
        let mut outputs = BTreeSet::new();
        for (n, line) in code.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["param", name, _type, rest @ ..] => {
                    let previous =
                        params.insert(name.to_string(), (n + 1, rest.first() == Some(&"=")));
                    assert!(
                        previous.is_none(),
                        "{path}:{}: param {name} declared twice",
                        n + 1
                    );
                }
                ["output", name, ..] => {
                    outputs.insert(name.to_string());
                }
                _ => {}
            }
        }
        Self {
            path: path.to_string(),
            source,
            code,
            params,
            outputs,
        }
    }

    fn lint(&self) {
        let path = &self.path;
        // Balanced braces, brackets and parentheses (outside strings and comments).
        let mut stack = Vec::new();
        for (n, line) in self.code.lines().enumerate() {
            for c in line.chars() {
                match c {
                    '{' | '[' | '(' => stack.push((c, n + 1)),
                    '}' | ']' | ')' => {
                        let open = match c {
                            '}' => '{',
                            ']' => '[',
                            _ => '(',
                        };
                        let top = stack.pop();
                        assert_eq!(
                            top.map(|t| t.0),
                            Some(open),
                            "{path}:{}: {c} closes {top:?}",
                            n + 1
                        );
                    }
                    _ => {}
                }
            }
        }
        assert!(stack.is_empty(), "{path}: unclosed {stack:?}");

        let target = self
            .source
            .lines()
            .find_map(|l| l.strip_prefix("targetScope = "))
            .unwrap_or_else(|| panic!("{path}: no targetScope"));
        assert!(
            ["'resourceGroup'", "'subscription'"].contains(&target.trim()),
            "{path}: targetScope {target}"
        );

        // Every resource names 'Namespace/type@yyyy-mm-dd[-preview]'; symbols are unique.
        let mut symbols = BTreeSet::new();
        for (n, line) in self.source.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["resource", symbol, type_version, rest @ ..] = words.as_slice() {
                assert!(
                    symbols.insert(symbol.to_string()),
                    "{path}:{}: {symbol} twice",
                    n + 1
                );
                let inner = type_version
                    .strip_prefix('\'')
                    .and_then(|t| t.strip_suffix('\''))
                    .unwrap_or_else(|| panic!("{path}:{}: type not quoted: {line}", n + 1));
                let (kind, version) = inner
                    .split_once('@')
                    .unwrap_or_else(|| panic!("{path}:{}: no @api-version: {line}", n + 1));
                let mut segments = kind.split('/');
                let namespace = segments.next().unwrap_or_default();
                assert!(
                    namespace.starts_with("Microsoft.") && segments.clone().count() >= 1,
                    "{path}:{}: resource type {kind}",
                    n + 1
                );
                assert!(
                    segments.all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())),
                    "{path}:{}: resource type {kind}",
                    n + 1
                );
                let date = version.strip_suffix("-preview").unwrap_or(version);
                let parts: Vec<&str> = date.split('-').collect();
                assert!(
                    parts.len() == 3
                        && [4, 2, 2].iter().zip(&parts).all(
                            |(len, p)| p.len() == *len && p.chars().all(|c| c.is_ascii_digit())
                        ),
                    "{path}:{}: api-version {version}",
                    n + 1
                );
                assert!(
                    rest.first() == Some(&"=")
                        || (rest.first() == Some(&"existing") && rest.get(1) == Some(&"=")),
                    "{path}:{}: expected `= {{` or `existing =` after the type: {line}",
                    n + 1
                );
            }
            if let ["module", symbol, ..] = words.as_slice() {
                assert!(
                    symbols.insert(symbol.to_string()),
                    "{path}:{}: {symbol} twice",
                    n + 1
                );
            }
        }

        // Params: declared before their first use, and used.
        let ids = identifiers(&self.code);
        for (name, (line, _)) in &self.params {
            let uses: Vec<usize> = ids
                .iter()
                .filter(|(_, id)| id == name)
                .map(|(l, _)| *l)
                .collect();
            assert_eq!(
                uses.first(),
                Some(line),
                "{path}: param {name} used before its declaration on line {line}"
            );
            assert!(uses.len() > 1, "{path}:{line}: param {name} is never used");
        }
    }

    /// `module symbol 'file' = ...` with the keys of its `params: { ... }` block.
    fn modules(&self) -> Vec<(String, String, BTreeSet<String>)> {
        let source: Vec<&str> = self.source.lines().collect();
        let code: Vec<&str> = self.code.lines().collect();
        let mut out = Vec::new();
        for (n, line) in source.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let ["module", symbol, file, ..] = words.as_slice() else {
                continue;
            };
            let file = file.trim_matches('\'').to_string();
            let start = (n..code.len())
                .find(|&i| code[i].trim_start().starts_with("params: {"))
                .unwrap_or_else(|| panic!("{}: module {symbol} has no params block", self.path));
            let mut keys = BTreeSet::new();
            let mut depth = 0i32;
            for line in &code[start..] {
                if depth == 1 {
                    if let Some((key, _)) = line.trim().split_once(':') {
                        keys.insert(key.trim().to_string());
                    }
                }
                depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
                if depth == 0 {
                    break;
                }
            }
            out.push((symbol.to_string(), file, keys));
        }
        out
    }
}

/// The quoted strings of `var NAME = [ ... ]`.
fn bicep_string_array(file: &BicepFile, name: &str) -> Vec<String> {
    let header = format!("var {name} = [");
    let mut lines = file.source.lines().skip_while(|l| l.trim() != header);
    assert!(lines.next().is_some(), "{}: no `{header}`", file.path);
    lines
        .take_while(|l| l.trim() != "]")
        .map(|l| {
            let item = l.trim();
            item.strip_prefix('\'')
                .and_then(|i| i.strip_suffix('\''))
                .unwrap_or_else(|| panic!("{}: {name}: not a plain string: {item}", file.path))
                .to_string()
        })
        .collect()
}

#[test]
fn bicep_templates_pass_the_structural_lint() {
    let main = BicepFile::load("deploy/azure/cloudha.bicep");
    main.lint();
    let modules = main.modules();
    assert!(modules.len() >= 3, "{modules:?}");
    for (symbol, file, keys) in modules {
        let module = BicepFile::load(&format!("deploy/azure/{file}"));
        module.lint();
        for key in &keys {
            assert!(
                module.params.contains_key(key),
                "module {symbol} passes {key}, which {file} does not declare"
            );
        }
        for (param, (_, has_default)) in &module.params {
            assert!(
                *has_default || keys.contains(param),
                "module {symbol} does not pass {file}'s required param {param}"
            );
        }
        for line in main.code.lines() {
            if let Some(rest) = line.split(&format!("{symbol}.outputs.")).nth(1) {
                let output: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                assert!(
                    module.outputs.contains(&output),
                    "{symbol}.outputs.{output}: {file} has no such output"
                );
            }
        }
    }
}

#[test]
fn bicep_lint_catches_broken_templates() {
    // The lint must be able to fail: each break below must be refused.
    let good = read("deploy/azure/cloudha-identity.bicep");
    let breaks = [
        ("  location: location\n}", "  location: location\n"),
        (
            "userAssignedIdentities@2023-01-31",
            "userAssignedIdentities",
        ),
        ("param name string", "param nom string"),
        ("name: name", "name: 'fixed'"),
    ];
    for (from, to) in breaks {
        assert!(good.contains(from), "{from:?}");
        let broken = good.replacen(from, to, 1);
        let outcome = std::panic::catch_unwind(|| {
            BicepFile::parse("broken.bicep", broken).lint();
        });
        assert!(
            outcome.is_err(),
            "the lint accepted {to:?} in place of {from:?}"
        );
    }
}

#[test]
fn bicep_roles_grant_exactly_the_failover_actions() {
    let main = BicepFile::load("deploy/azure/cloudha.bicep");
    let failover = bicep_string_array(&main, "failoverActions");
    assert_eq!(
        action_set(
            "cloudha.bicep failoverActions",
            failover.iter().map(String::as_str)
        ),
        azure_all()
    );
    let operations = bicep_string_array(&main, "operationsActions");
    assert_eq!(
        action_set(
            "cloudha.bicep operationsActions",
            operations.iter().map(String::as_str)
        ),
        azure_subscription_scoped()
    );
    // Each role uses its own list, and the operations role is the only one assigned at the
    // subscription: the failover role is granted through the per-resource modules.
    assert!(main.source.contains("actions: failoverActions"));
    assert!(main.source.contains("actions: operationsActions"));
    let subscription_assignments: Vec<&str> = main
        .source
        .split("resource ")
        .filter(|r| r.contains("'Microsoft.Authorization/roleAssignments@"))
        .collect();
    assert_eq!(subscription_assignments.len(), 1);
    assert!(subscription_assignments[0].contains("roleDefinitionId: operationsRole.id"));
    // Every kind of scope in permissions.rs except the subscription has a grant in the module.
    let grant = read("deploy/azure/cloudha-grant.bicep");
    for (scope, kind) in [
        (azure::Scope::Nics, "nic"),
        (azure::Scope::Subnet, "subnet"),
        (azure::Scope::OwnVm, "vm"),
        (azure::Scope::RouteTables, "routeTable"),
        (azure::Scope::PublicIps, "publicIp"),
        (azure::Scope::NetworkSecurityGroup, "nsg"),
        (azure::Scope::VirtualNetwork, "vnet"),
        (azure::Scope::LinkedResources, "asg"),
        (azure::Scope::LinkedResources, "loadBalancer"),
        (azure::Scope::LinkedResources, "applicationGateway"),
    ] {
        assert!(azure::FAILOVER_ACTIONS.iter().any(|a| a.scope == scope));
        assert!(
            grant.contains(&format!("= if (kind == '{kind}')")),
            "no grant for {kind}"
        );
    }
}

/// The lines of `module SYMBOL ...` up to its closing `}` or `}]` at the start of a line.
fn bicep_module_block<'a>(file: &'a BicepFile, symbol: &str) -> Vec<&'a str> {
    let header = format!("module {symbol} ");
    let mut lines = file.source.lines().skip_while(|l| !l.starts_with(&header));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{}: no module {symbol}", file.path));
    let mut block = vec![first];
    for line in lines {
        block.push(line);
        if line == "}" || line == "}]" {
            break;
        }
    }
    block
}

/// The quoted strings of a `@allowed([ ... ])` decorator right above `param NAME`.
fn bicep_allowed(file: &BicepFile, name: &str) -> Vec<String> {
    let lines: Vec<&str> = file.source.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.starts_with(&format!("param {name} ")))
        .unwrap_or_else(|| panic!("{}: no param {name}", file.path));
    let open = (0..at)
        .rev()
        .find(|&i| lines[i] == "@allowed([")
        .unwrap_or_else(|| panic!("{}: param {name} has no @allowed", file.path));
    assert!(
        lines[open..at]
            .iter()
            .position(|l| *l == "])")
            // Only other decorators between its `])` and the param.
            .is_some_and(|close| lines[open + close + 1..at]
                .iter()
                .all(|l| l.starts_with('@'))),
        "{}: the @allowed above param {name} is not its own",
        file.path
    );
    lines[open + 1..at]
        .iter()
        .take_while(|l| **l != "])")
        .map(|l| {
            l.trim()
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or_else(|| panic!("{}: @allowed of {name}: {l}", file.path))
                .to_string()
        })
        .collect()
}

#[test]
fn bicep_grants_the_vnet_only_when_atomic_and_each_linked_resource() {
    let main = BicepFile::load("deploy/azure/cloudha.bicep");
    let grant = BicepFile::load("deploy/azure/cloudha-grant.bicep");

    // Every kind the grant module allows has its resource and its assignment on it, both under
    // the same condition (a kind without them would deploy and grant nothing).
    let kinds = bicep_allowed(&grant, "kind");
    for kind in ["vnet", "asg", "loadBalancer", "applicationGateway"] {
        assert!(kinds.iter().any(|k| k == kind), "kind {kind} not allowed");
    }
    for kind in &kinds {
        let condition = format!("= if (kind == '{kind}') {{");
        let existing = format!("existing {condition}");
        assert!(
            grant
                .source
                .lines()
                .any(|l| l.starts_with(&format!("resource {kind} ")) && l.ends_with(&existing)),
            "no existing {kind} resource"
        );
        let assignment = format!(
            "resource {kind}Assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' {condition}\n  scope: {kind}\n"
        );
        assert!(
            grant.source.contains(&assignment),
            "no assignment on {kind}"
        );
    }

    // moveMode takes exactly the config's move_mode values, two_step by default.
    let modes: Vec<String> = [MoveMode::TwoStep, MoveMode::Atomic]
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .expect("serialize")
                .as_str()
                .expect("a string")
                .to_string()
        })
        .collect();
    assert_eq!(bicep_allowed(&main, "moveMode"), modes);
    assert!(main
        .source
        .contains("\nparam moveMode string = 'two_step'\n"));

    // The VNet grant exists only when atomic, on the VNet derived from subnetId (or vnetId).
    let vnet = bicep_module_block(&main, "vnetGrant").join("\n");
    assert!(
        vnet.starts_with("module vnetGrant 'cloudha-grant.bicep' = if (moveMode == 'atomic') {"),
        "{vnet}"
    );
    assert!(vnet.contains("kind: 'vnet'"), "{vnet}");
    assert!(vnet.contains("split(moveVnetId, '/')"), "{vnet}");
    assert!(main.source.contains(
        "var moveVnetId = empty(vnetId) ? join(take(split(subnetId, '/'), 9), '/') : vnetId"
    ));
    // No other module grants with kind 'vnet'.
    assert_eq!(main.source.matches("kind: 'vnet'").count(), 1);

    // One linked grant per linkedIds entry, its kind looked up by the id's type.
    let linked = bicep_module_block(&main, "linkedGrants").join("\n");
    assert!(
        linked.starts_with(
            "module linkedGrants 'cloudha-grant.bicep' = [for (id, i) in linkedIds: {"
        ),
        "{linked}"
    );
    assert!(
        linked.contains("kind: linkedKinds[toLower('${split(id, '/')[6]}/${split(id, '/')[7]}')]"),
        "{linked}"
    );
    let table: BTreeMap<String, String> = main
        .source
        .lines()
        .skip_while(|l| *l != "var linkedKinds = {")
        .skip(1)
        .take_while(|l| *l != "}")
        .map(|l| {
            let (key, value) = l
                .trim()
                .split_once(": ")
                .unwrap_or_else(|| panic!("linkedKinds: {l}"));
            (
                key.trim_matches('\'').to_string(),
                value.trim_matches('\'').to_string(),
            )
        })
        .collect();
    assert_eq!(
        table,
        BTreeMap::from([
            (
                "microsoft.network/applicationsecuritygroups".to_string(),
                "asg".to_string()
            ),
            (
                "microsoft.network/loadbalancers".to_string(),
                "loadBalancer".to_string()
            ),
            (
                "microsoft.network/applicationgateways".to_string(),
                "applicationGateway".to_string()
            ),
        ])
    );
    for kind in table.values() {
        assert!(
            kinds.contains(kind),
            "linkedKinds maps to {kind}, which the module does not allow"
        );
    }
}

// ---- AWS ---------------------------------------------------------------------------------------

/// The actions of an IAM policy document, each statement checked to be a plain Allow.
fn policy_actions(what: &str, policy: &Value) -> Vec<(String, Value)> {
    assert_eq!(policy["Version"], "2012-10-17", "{what}: Version");
    let mut out = Vec::new();
    for statement in policy["Statement"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: Statement"))
    {
        assert_eq!(statement["Effect"], "Allow", "{what}: {statement}");
        assert!(statement.get("Condition").is_none() && statement.get("NotAction").is_none());
        let actions = match &statement["Action"] {
            Value::String(one) => vec![one.as_str()],
            list => strings(what, list),
        };
        for action in actions {
            out.push((action.to_string(), statement["Resource"].clone()));
        }
    }
    out
}

#[test]
fn aws_policy_grants_exactly_the_failover_actions() {
    let actions = policy_actions(
        "cloudha-policy.json",
        &json("deploy/aws/cloudha-policy.json"),
    );
    assert_eq!(
        action_set(
            "cloudha-policy.json",
            actions.iter().map(|(a, _)| a.as_str())
        ),
        aws_all()
    );
    for (action, resource) in &actions {
        assert_eq!(resource, "*", "{action}");
    }
    assert!(!actions
        .iter()
        .any(|(a, _)| a == aws::SELFTEST_SIMULATE_ACTION));
}

#[test]
fn cloudformation_template_grants_the_policy_and_the_selftest_self_grant_only() {
    let template = json("deploy/aws/cloudha.cfn.json");
    let resources = template["Resources"].as_object().expect("Resources");
    for (name, resource) in resources {
        assert!(
            resource["Type"]
                .as_str()
                .is_some_and(|t| t.starts_with("AWS::")),
            "{name}"
        );
    }
    let role = &resources["CloudhaRole"];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    assert_eq!(
        role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com"
    );
    let inline = role["Properties"]["Policies"].as_array().expect("Policies");
    assert_eq!(inline.len(), 1);
    // The inline policy is the policy file, statement for statement.
    assert_eq!(
        inline[0]["PolicyDocument"],
        json("deploy/aws/cloudha-policy.json")
    );
    let actions = policy_actions("CloudhaRole", &inline[0]["PolicyDocument"]);
    assert_eq!(
        action_set("CloudhaRole", actions.iter().map(|(a, _)| a.as_str())),
        aws_all()
    );

    let selftest = &resources["CloudhaSelftestPolicy"];
    assert_eq!(selftest["Type"], "AWS::IAM::Policy");
    assert_eq!(
        selftest["Properties"]["Roles"],
        serde_json::json!([{"Ref": "CloudhaRole"}])
    );
    let granted = policy_actions(
        "CloudhaSelftestPolicy",
        &selftest["Properties"]["PolicyDocument"],
    );
    assert_eq!(
        granted,
        vec![(
            aws::SELFTEST_SIMULATE_ACTION.to_string(),
            serde_json::json!({"Fn::GetAtt": ["CloudhaRole", "Arn"]})
        )]
    );

    let profile = &resources["CloudhaInstanceProfile"];
    assert_eq!(profile["Type"], "AWS::IAM::InstanceProfile");
    assert_eq!(
        profile["Properties"]["Roles"],
        serde_json::json!([{"Ref": "CloudhaRole"}])
    );
    assert_eq!(
        resources.len(),
        3,
        "only the role, its self-grant and the instance profile"
    );

    // Every Ref / Fn::GetAtt names a resource of the template.
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(name)) = map.get("Ref") {
                    out.push(name.clone());
                }
                if let Some(Value::Array(get)) = map.get("Fn::GetAtt") {
                    out.extend(get.first().and_then(Value::as_str).map(str::to_string));
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut named = Vec::new();
    refs(&template, &mut named);
    assert!(!named.is_empty());
    for name in named {
        assert!(
            resources.contains_key(&name),
            "reference to unknown resource {name}"
        );
    }
}

#[test]
fn aws_trust_policy_lets_only_ec2_assume_the_role() {
    let trust = json("deploy/aws/cloudha-trust.json");
    assert_eq!(
        trust["Statement"],
        serde_json::json!([{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }])
    );
}

// ---- systemd unit ------------------------------------------------------------------------------

/// `key=value` settings of the unit, by key (repeated keys keep every value).
fn unit_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        out.entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    out
}

#[test]
fn systemd_unit_has_the_notify_watchdog_and_hardening_settings() {
    let settings = unit_settings(&read("deploy/cloudha.service"));
    let one = |key: &str| -> &str {
        let values = settings.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert_eq!(values.len(), 1, "{key} set {} times", values.len());
        &values[0]
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert!(one("WatchdogSec").ends_with('s'), "WatchdogSec");
    for key in [
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
    ] {
        assert_eq!(one(key), "yes", "{key}");
    }
    assert_eq!(one("ProtectSystem"), "strict");
    for key in [
        "PrivateDevices",
        "PrivateMounts",
        "ProtectClock",
        "ProtectHostname",
        "RestrictNamespaces",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ] {
        assert_eq!(one(key), "yes", "{key}");
    }
    assert_eq!(one("ProtectProc"), "invisible");
    assert_eq!(one("DevicePolicy"), "closed");
    assert_eq!(one("UMask"), "0077");
    assert_eq!(one("StateDirectoryMode"), "0700");
    assert_eq!(one("RuntimeDirectoryMode"), "0700");
    assert_eq!(
        settings.get("SystemCallFilter").map(Vec::as_slice),
        Some(
            [
                "@system-service".to_string(),
                "~@privileged @resources".to_string()
            ]
            .as_slice()
        )
    );
    // Room for the /metrics connection cap many times over, but bounded.
    let nofile: usize = one("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    assert!(
        (cloudha::ops::metrics::MAX_CONNECTIONS * 8..=65536).contains(&nofile),
        "{nofile}"
    );
    // The cloud providers need no capability; the local provider's two come from its drop-in.
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert!(!settings.contains_key("AmbientCapabilities"));
    let families: BTreeSet<&str> = one("RestrictAddressFamilies").split(' ').collect();
    assert_eq!(families, BTreeSet::from(["AF_UNIX", "AF_INET", "AF_INET6"]));
    let local = unit_settings(&read("deploy/cloudha-local.conf"));
    assert_eq!(
        local.get("CapabilityBoundingSet").map(Vec::as_slice),
        Some(["CAP_NET_ADMIN CAP_NET_RAW".to_string()].as_slice())
    );
    assert_eq!(
        local.get("RestrictAddressFamilies").map(Vec::as_slice),
        Some(["AF_NETLINK AF_PACKET".to_string()].as_slice())
    );
    // The directories systemd creates are the daemon's defaults (state_dir, status.socket).
    assert_eq!(one("StateDirectory"), "cloudha");
    assert_eq!(one("RuntimeDirectory"), "cloudha");
    let defaults = cloudha::config::Config::parse(
        "[cluster]\nid = 1\nkey_file = \"/k\"\n[node]\nname = \"a\"\npriority = 1\n[peer]\nname = \"b\"\n\
         [keepalive]\n[provider]\nkind = \"local\"\n",
    )
    .expect("minimal config");
    assert_eq!(defaults.node.state_dir, Path::new("/var/lib/cloudha"));
    assert!(defaults.status.socket.starts_with("/run/cloudha/"));
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/cloudha run --config /etc/cloudha/cloudha.toml"
    );
    assert_eq!(
        one("ExecStartPre"),
        "/usr/local/bin/cloudha config check /etc/cloudha/cloudha.toml"
    );
    assert!(
        !settings.contains_key("ReadWritePaths"),
        "StateDirectory= already makes it writable"
    );
}

/// `systemd-analyze security --offline` of the unit in `dir` (with its drop-ins, if any): the
/// overall exposure, as printed (one decimal).
fn exposure(dir: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager", "cloudha.service"])
        .current_dir(dir)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze (apt-get install systemd; scripts/install-deps.sh does it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure in {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    line.split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line}"))
}

#[test]
fn systemd_unit_exposure_is_at_most_2_and_the_local_drop_in_adds_only_its_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = read("deploy/cloudha.service")
        .replace("/usr/local/bin/cloudha", env!("CARGO_BIN_EXE_cloudha"));
    std::fs::write(dir.path().join("cloudha.service"), unit).expect("write unit");
    let shipped = exposure(dir.path());
    assert!(shipped <= 2.0, "exposure {shipped} as shipped");
    let drop_ins = dir.path().join("cloudha.service.d");
    std::fs::create_dir(&drop_ins).expect("mkdir");
    std::fs::write(
        drop_ins.join("local.conf"),
        read("deploy/cloudha-local.conf"),
    )
    .expect("write drop-in");
    let local = exposure(dir.path());
    // Two capabilities and two socket families cost 0.5 at most (2.1 with systemd 252).
    assert!(
        local > shipped && local <= shipped + 0.5,
        "{shipped} -> {local}"
    );
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    // systemd-analyze comes with the systemd package (scripts/install-deps.sh installs it).
    let dir = tempfile::tempdir().expect("tempdir");
    // verify checks that ExecStart's binary exists: point it at the binary under test.
    let unit = read("deploy/cloudha.service")
        .replace("/usr/local/bin/cloudha", env!("CARGO_BIN_EXE_cloudha"));
    let path = dir.path().join("cloudha.service");
    std::fs::write(&path, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze (apt-get install systemd; scripts/install-deps.sh does it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings (exit 0): none may name our unit.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cloudha.service"))
        .collect();
    assert!(about_unit.is_empty(), "{about_unit:#?}");
}
