//! `azure-emulator`: serves a scenario for manual use and demos.
//!
//! ```text
//! azure-emulator [--scenario FILE.toml|FILE.json] [--listen ADDR] [--imds VM=ADDR]...
//!                [--timing-profile custom|network_rp]
//! ```
//! Without `--scenario` the shipped two-appliance scenario is used. `--listen` defaults to
//! `127.0.0.1:0` (a free port); the chosen URL is printed. Each `--imds VM=ADDR` adds a
//! listener serving only that VM's IMDS (e.g. on 169.254.169.254:80 inside a namespace).
//! `--timing-profile network_rp` overrides the scenario's `timing_profile` (`Retry-After: 10`
//! on NIC operations, as the Network RP sends).

use cloudha_azure_emulator::{Emulator, Scenario, TimingProfile};
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;

struct Args {
    scenario: Option<PathBuf>,
    listen: String,
    imds: Vec<(String, String)>,
    timing_profile: Option<TimingProfile>,
}

fn usage() -> &'static str {
    "usage: azure-emulator [--scenario FILE] [--listen ADDR] [--imds VM=ADDR]... [--timing-profile custom|network_rp]"
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        scenario: None,
        listen: "127.0.0.1:0".to_string(),
        imds: Vec::new(),
        timing_profile: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--scenario" => args.scenario = Some(PathBuf::from(value("--scenario")?)),
            "--listen" => args.listen = value("--listen")?,
            "--imds" => {
                let v = value("--imds")?;
                let Some((vm, addr)) = v.split_once('=') else {
                    return Err(format!("--imds takes VM=ADDR, got {v}"));
                };
                args.imds.push((vm.to_string(), addr.to_string()));
            }
            "--timing-profile" => {
                args.timing_profile = Some(match value("--timing-profile")?.as_str() {
                    "custom" => TimingProfile::Custom,
                    "network_rp" => TimingProfile::NetworkRp,
                    v => {
                        return Err(format!(
                            "--timing-profile takes custom or network_rp, got {v}"
                        ))
                    }
                })
            }
            "-h" | "--help" => return Err(usage().to_string()),
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let scenario = match &args.scenario {
        Some(p) => match Scenario::from_path(p) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("azure-emulator: {e}");
                return ExitCode::from(2);
            }
        },
        None => Scenario::two_appliances(),
    };
    let mut scenario = scenario;
    if let Some(p) = args.timing_profile {
        scenario.settings.timing_profile = p;
    }
    let emu = match Emulator::new(&scenario) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("azure-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("azure-emulator: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let base = match listener.local_addr() {
        Ok(a) => format!("http://{a}"),
        Err(e) => {
            eprintln!("azure-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("azure-emulator: ARM and IMDS listening on {base}");
    println!(
        "  subscription {} resource group {}",
        scenario.subscription_id, scenario.resource_group
    );
    for vm in &scenario.virtual_machines {
        if let Some(id) = emu.vm_identity(&vm.name) {
            println!(
                "  vm {}: principal {} client_id {}; IMDS {base}/vms/{}/metadata/...; IDENTITY_ENDPOINT={base}/msi/token IDENTITY_HEADER={}",
                vm.name, id.principal_id, id.client_id, vm.name, id.identity_header
            );
        }
    }
    let mut tasks = Vec::new();
    for (vm, addr) in &args.imds {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                println!("  IMDS of {vm} listening on http://{addr}");
                let emu = emu.clone();
                let vm = vm.clone();
                tasks.push(tokio::spawn(async move { emu.serve_imds(l, &vm).await }));
            }
            Err(e) => {
                eprintln!("azure-emulator: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match emu.serve(listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("azure-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}
