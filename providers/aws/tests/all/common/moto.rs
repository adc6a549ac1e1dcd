//! A real moto server on a free loopback port, shared by the tests that run at the same time and
//! stopped when the last of them drops it.
//!
//! It is moto's own server started through `tests/moto/cloudha_moto_server.py`, which adds what
//! `cloudha selftest` needs and moto 5.2.5 lacks: IAM `SimulatePrincipalPolicy` (evaluated from
//! the policies in moto's IAM backend) and `DryRun` on `CreateRoute`/`ReplaceRoute`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Where `scripts/install-deps.sh` installs moto.
const VENV_MOTO: &str = "/opt/cloudha-venv/bin/moto_server";

/// Runs the server in the background and kills it as soon as our end of its stdin closes, which
/// happens in `Drop` and also when the test process dies without unwinding (abort, SIGKILL).
const WATCHDOG: &str =
    r#""$@" & server=$!; read -r _ || true; kill "$server" 2>/dev/null; wait "$server""#;

/// How long moto may take to import and bind (it is Python; a loaded 2-core machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server.
pub struct MotoServer {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The loopback port moto listens on.
    pub port: u16,
    /// moto's own log (every request), for reading after a failure.
    pub log: PathBuf,
}

static SHARED: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());

/// The moto server of this test binary, started if no running test holds one.
pub fn shared() -> Arc<MotoServer> {
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(server) = slot.upgrade() {
        return server;
    }
    let server = Arc::new(MotoServer::start(false));
    *slot = Arc::downgrade(&server);
    server
}

/// A plain upstream moto server of its own, without the additions of
/// `tests/moto/cloudha_moto_server.py`: it ignores `DryRun` on `CreateRoute`/`ReplaceRoute` and
/// has no `SimulatePrincipalPolicy`, as an EC2-compatible endpoint or a proxy may. The judge of
/// "the self-test changes nothing even where DryRun is ignored".
pub fn plain() -> Arc<MotoServer> {
    Arc::new(MotoServer::start(true))
}

impl MotoServer {
    /// The endpoint URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn start(plain: bool) -> Self {
        let moto = moto_program();
        // This harness is compiled into the AWS provider's tests and the workspace's end-to-end
        // tests: the script is next to the provider's manifest in both cases.
        let (program, script) = if plain {
            (moto, None)
        } else {
            let script = ["", "providers/aws"]
                .iter()
                .map(|dir| {
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join(dir)
                        .join("tests/moto/cloudha_moto_server.py")
                })
                .find(|p| p.is_file())
                .expect("tests/moto/cloudha_moto_server.py of the AWS provider");
            (python_next_to(&moto), Some(script))
        };
        let mut last_error = String::new();
        // A port found free can be taken before moto binds it; a fresh one then will do.
        for _ in 0..3 {
            let port = free_port();
            let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("moto-{port}.log"));
            let out = File::create(&log).expect("create the moto log");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("moto-watchdog")
                .arg(&program)
                .args(&script)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(out.try_clone().expect("clone the moto log"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let stdin = child.stdin.take();
            let mut server = MotoServer {
                child,
                stdin,
                port,
                log,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("moto did not start: {last_error}");
    }

    /// Poll until moto answers HTTP, or fail if it exits or takes too long.
    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return Err(format!("moto_server exited with {status}: {log}"));
            }
            if answers_http(self.port) {
                return Ok(());
            }
            // Poll interval while a process starts: nothing to wait on but the port.
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "no HTTP answer on port {} within {START_TIMEOUT:?}",
            self.port
        ))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing stdin tells the watchdog to kill moto and exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answers_http(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// The Python interpreter of moto's installation (the one next to `moto_server`), else `python3`.
fn python_next_to(moto_server: &Path) -> PathBuf {
    moto_server
        .parent()
        .map(|dir| dir.join("python"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// `CLOUDHA_MOTO_SERVER`, else the venv install-deps.sh makes, else `moto_server` on PATH.
fn moto_program() -> PathBuf {
    if let Some(path) = std::env::var_os("CLOUDHA_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    if Path::new(VENV_MOTO).exists() {
        return PathBuf::from(VENV_MOTO);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("moto_server"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "moto_server not found: run `sudo scripts/install-deps.sh` (installs moto into \
                 /opt/cloudha-venv) or point CLOUDHA_MOTO_SERVER at a moto_server"
            )
        })
}
