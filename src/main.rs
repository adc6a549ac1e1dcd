//! The `cloudha` command line: a thin layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use cloudha::config::Config;
use cloudha::control::{self, Request, Response};
use cloudha::fsm::Command;
use cloudha::status::render_human;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (for `status`: the daemon answered; for `selftest`: no check failed)
  1  the daemon failed at run time; for `selftest`: a check failed
  2  bad usage or invalid configuration
  3  the daemon could not be reached
  4  the daemon refused the command";

const DEFAULT_CONFIG: &str = "/etc/cloudha/cloudha.toml";

/// HA controller for pairs of network appliances in the cloud.
#[derive(Parser)]
#[command(name = "cloudha", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon in the foreground (logs go to stderr; RUST_LOG sets the level).
    #[command(after_help = EXIT_CODES)]
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Show role, peer, keepalive paths, HA readiness, last failover and recent events.
    #[command(after_help = EXIT_CODES)]
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the event journal (works while the daemon is down).
    Events {
        /// Print JSON lines instead of text.
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they are written.
        #[arg(long, short)]
        follow: bool,
        /// Print only the last N events.
        #[arg(long, short = 'n')]
        lines: Option<usize>,
        /// Draw the failover of EPOCH (the newest without one) as a timeline instead.
        #[arg(long, value_name = "EPOCH", num_args = 0..=1, conflicts_with_all = ["json", "follow", "lines"])]
        failover: Option<Option<u64>>,
        /// Read journal.path (or node.state_dir) from this configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The journal file (overrides --config).
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Check on a healthy pair everything a failover needs (permissions, NIC settings, APIs, peer).
    #[command(after_help = EXIT_CODES)]
    Selftest {
        /// Print the checks as JSON.
        #[arg(long)]
        json: bool,
        /// Configuration file (the daemon's).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Hand the active role to the peer (on the standby: take it from the healthy active peer).
    #[command(after_help = EXIT_CODES)]
    Switchover {
        #[command(flatten)]
        target: Target,
    },
    /// Put this node in maintenance (it hands over first if active) or take it out.
    #[command(after_help = EXIT_CODES)]
    Maintenance {
        /// `on` or `off`.
        state: OnOff,
        /// Enter maintenance even if no peer can take over (the floating IPs go unserved).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Write the man pages and shell completions into DIR (for packaging; see
    /// scripts/package-deb.sh).
    #[command(hide = true)]
    GenerateAssets {
        /// Output directory: man/*.1, completions/{cloudha.bash,_cloudha,cloudha.fish}.
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a configuration file (and its key file) without starting anything.
    #[command(after_help = EXIT_CODES)]
    Check {
        /// Configuration file.
        path: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// Which daemon to talk to.
#[derive(Args)]
struct Target {
    /// Read status.socket from this configuration file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The daemon's control socket (overrides --config).
    #[arg(long)]
    socket: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf, String> {
        if let Some(socket) = &self.socket {
            return Ok(socket.clone());
        }
        let text = std::fs::read_to_string(&self.config).map_err(|e| {
            format!(
                "cannot read {}: {e}; pass --config PATH or --socket PATH",
                self.config.display()
            )
        })?;
        let config = Config::parse(&text).map_err(|(field, message)| {
            format!("config {}: {field}: {message}", self.config.display())
        })?;
        Ok(config.status.socket)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One thread for everything: the daemon is one event loop with a few tasks beside it. With
    // worker threads, a keepalive received on one woke the loop on another (a futex each way,
    // most of the idle syscall time in docs/bench.md). Blocking work (the local provider's
    // netlink calls, DNS) goes to tokio's blocking pool, so it never stalls the loop.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Cmd::Run { config } => runtime.block_on(run(&config)),
        Cmd::GenerateAssets { dir } => match generate_assets(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
        command => runtime.block_on(dispatch(command)),
    }
}

async fn dispatch(command: Cmd) -> ExitCode {
    match command {
        Cmd::Run { config } => run(&config).await,
        Cmd::GenerateAssets { .. } => unreachable_in_dispatch(),
        Cmd::Config {
            action: ConfigCmd::Check { path },
        } => match Config::load(&path) {
            Ok(config) => {
                // Risky but allowed: said on stderr, the exit code stays 0.
                for warning in config.warnings() {
                    eprintln!("warning: config {}: {warning}", path.display());
                }
                println!(
                    "{}: OK (node {}, peer {}, {} path(s), {} floating IP(s), provider {})",
                    path.display(),
                    config.node.name,
                    config.peer.name,
                    config.keepalive.paths.len(),
                    config.floating_ips.len(),
                    config.provider.kind
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Status { json, target } => {
            let socket = match target.socket() {
                Ok(s) => s,
                Err(e) => return usage_error(&e),
            };
            match control::request(&socket, &Request::Status).await {
                Ok(Response::Status { status }) => {
                    if json {
                        match serde_json::to_string_pretty(&status) {
                            Ok(text) => println!("{text}"),
                            Err(e) => {
                                eprintln!("error: {e}");
                                return ExitCode::from(1);
                            }
                        }
                    } else {
                        print!("{}", render_human(&status));
                    }
                    ExitCode::SUCCESS
                }
                other => no_answer(other),
            }
        }
        Cmd::Events {
            json,
            follow,
            lines,
            failover,
            config,
            journal,
        } => {
            let path = match journal {
                Some(path) => path,
                None => match Config::load(&config) {
                    Ok(c) => c.journal_path(),
                    Err(e) => return usage_error(&format!("{e}; or pass --journal PATH")),
                },
            };
            if let Some(epoch) = failover {
                return match cloudha::ops::events::show_failover(&path, epoch) {
                    Ok(drawing) => {
                        print!("{drawing}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: journal {}: {e}", path.display());
                        ExitCode::from(1)
                    }
                };
            }
            match cloudha::ops::events::show(&path, lines, json, follow).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: journal {}: {e}", path.display());
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Selftest { json, config } => match cloudha::selftest::run(&config).await {
            Ok(report) => {
                if json {
                    println!("{}", report.render_json());
                } else {
                    print!("{}", report.render_human());
                }
                ExitCode::from(report.exit_code())
            }
            Err(e) => usage_error(&e),
        },
        Cmd::Switchover { target } => send_command(&target, Command::Switchover).await,
        Cmd::Maintenance {
            state,
            force,
            target,
        } => {
            let command = match state {
                OnOff::On => Command::MaintenanceOn { force },
                OnOff::Off => Command::MaintenanceOff,
            };
            send_command(&target, command).await
        }
    }
}

/// `main` handles `generate-assets` before the runtime's dispatch; reaching here is a bug in
/// `main`, reported as a failure rather than a panic.
fn unreachable_in_dispatch() -> ExitCode {
    eprintln!("error: generate-assets is handled before dispatch");
    ExitCode::from(1)
}

/// The man pages (`cloudha.1` and one per visible subcommand, `cloudha-status.1`...) and the
/// bash, zsh and fish completions, from the clap definitions.
fn generate_assets(dir: &Path) -> std::io::Result<()> {
    use clap_complete::{generate_to, Shell};
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let mut command = Cli::command();
    command.build();
    man_pages(&command, &man)?;
    // clap_complete offers hidden subcommands too: complete a copy without them.
    let mut public = clap::Command::new("cloudha")
        .version(env!("CARGO_PKG_VERSION"))
        .about(command.get_about().cloned().unwrap_or_default());
    // From the definitions as written, before `build` added clap's own `help` subcommand.
    for sub in Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
    {
        public = public.subcommand(sub.clone());
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        generate_to(shell, &mut public, "cloudha", &completions)?;
    }
    Ok(())
}

/// One page for `command` and one for each visible subcommand, recursively; clap's own `help`
/// subcommands get none (`cloudha help status` is `cloudha-status(1)` already).
fn man_pages(command: &clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = command.get_display_name().unwrap_or(command.get_name());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    for sub in command.get_subcommands() {
        if !sub.is_hide_set() && sub.get_name() != "help" {
            man_pages(sub, dir)?;
        }
    }
    Ok(())
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

async fn send_command(target: &Target, command: Command) -> ExitCode {
    let socket = match target.socket() {
        Ok(s) => s,
        Err(e) => return usage_error(&e),
    };
    match control::request(&socket, &Request::Command { command }).await {
        Ok(Response::Accepted { message }) => {
            println!("accepted: {message}");
            ExitCode::SUCCESS
        }
        Ok(Response::Refused { message }) => {
            eprintln!("refused: {message}");
            ExitCode::from(4)
        }
        other => no_answer(other),
    }
}

/// The daemon could not be reached, or answered something this command does not expect.
fn no_answer(result: Result<Response, control::ClientError>) -> ExitCode {
    match result {
        Ok(other) => eprintln!("error: unexpected answer {other:?}"),
        Err(e) => eprintln!("error: {e}"),
    }
    ExitCode::from(3)
}

async fn run(path: &Path) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in config.warnings() {
        tracing::warn!("config {}: {warning}", path.display());
    }
    let provider = match cloudha::provider::build(&config).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(reload_on_sighup(path.to_path_buf(), reload_tx));
    // The loop runs as a task, not as the runtime's `block_on` future: a task that a keepalive
    // wakes runs in the same turn as the receiver that woke it, while a woken `block_on` future
    // costs the runtime one more look at the reactor (an `epoll_wait` per keepalive).
    let daemon = tokio::spawn(cloudha::daemon::run(
        config,
        provider,
        shutdown_signal(),
        reloads,
    ));
    match daemon.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: the daemon's loop ended abnormally: {e}");
            ExitCode::from(1)
        }
    }
}

/// On each SIGHUP, load and validate the config file again and hand the result to the daemon,
/// which applies it or keeps the running one.
async fn reload_on_sighup(
    path: PathBuf,
    tx: tokio::sync::mpsc::UnboundedSender<Result<Config, String>>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let loaded = Config::load(&path).map_err(|e| e.to_string());
        if tx.send(loaded).is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the daemon can only be killed; keep running.
            std::future::pending::<()>().await
        }
    }
}
