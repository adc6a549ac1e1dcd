//! The local control endpoint: a Unix socket serving `status` and the operator commands.
//!
//! A Unix socket (mode 0600) rather than TCP: it is never reachable from the network, and file
//! permissions decide who may run `switchover`. The protocol is one JSON request line and one
//! JSON response line per connection, so it can be driven with `socat` in an emergency.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use crate::fsm::Command;
use crate::status::StatusSnapshot;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client waits for the daemon.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to the daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The status snapshot.
    Status,
    /// An operator command.
    Command {
        /// The command.
        command: Command,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// The status snapshot.
    Status {
        /// The snapshot.
        status: Box<StatusSnapshot>,
    },
    /// The command was accepted.
    Accepted {
        /// What will happen.
        message: String,
    },
    /// The command was refused.
    Refused {
        /// Why.
        message: String,
    },
    /// The request could not be understood.
    Error {
        /// Why.
        message: String,
    },
}

/// A command with the channel its answer goes back on.
pub type CommandRequest = (Command, oneshot::Sender<Response>);

/// Bind the control socket: create its directory, replace a stale socket, refuse a live one.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "another cloudha daemon is serving {}; stop it or set status.socket to another path",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serve requests until the listener fails.
pub async fn serve(
    listener: UnixListener,
    status: watch::Receiver<StatusSnapshot>,
    commands: mpsc::Sender<CommandRequest>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                debug!("control socket accept: {e}");
                continue;
            }
        };
        let status = status.clone();
        let commands = commands.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, status, commands).await {
                debug!("control connection: {e}");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    status: watch::Receiver<StatusSnapshot>,
    commands: mpsc::Sender<CommandRequest>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Err(e) => Response::Error {
            message: format!("bad request: {e}"),
        },
        Ok(Request::Status) => Response::Status {
            status: Box::new(status.borrow().clone()),
        },
        Ok(Request::Command { command }) => {
            let (tx, rx) = oneshot::channel();
            if commands.send((command, tx)).await.is_err() {
                Response::Error {
                    message: "daemon is shutting down".into(),
                }
            } else {
                rx.await.unwrap_or(Response::Error {
                    message: "daemon is shutting down".into(),
                })
            }
        }
    };
    let mut text = serde_json::to_string(&response).map_err(std::io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    write.shutdown().await
}

/// Why the CLI could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("cannot reach the cloudha daemon at {path}: {source} (is `cloudha run` running with this status.socket?)")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The daemon did not answer in time.
    #[error("the cloudha daemon at {0} did not answer within 10 s")]
    Timeout(PathBuf),
    /// The answer was not understood.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// Send one request and wait for the answer.
pub async fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    let exchange = async {
        let unreachable = |source| ClientError::Unreachable {
            path: path.to_path_buf(),
            source,
        };
        let stream = UnixStream::connect(path).await.map_err(unreachable)?;
        let (read, mut write) = stream.into_split();
        let mut text =
            serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        text.push('\n');
        write
            .write_all(text.as_bytes())
            .await
            .map_err(unreachable)?;
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .map_err(unreachable)?;
        serde_json::from_str(line.trim()).map_err(|e| ClientError::Protocol(format!("{e}: {line}")))
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout(path.to_path_buf()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_status_and_commands_and_rejects_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/ctl.sock");
        let listener = bind(&path).await.expect("bind");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let snapshot = StatusSnapshot {
            node: "fw-a".into(),
            role: "active".into(),
            ..Default::default()
        };
        let (_status_tx, status_rx) = watch::channel(snapshot);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<CommandRequest>(4);
        tokio::spawn(serve(listener, status_rx, cmd_tx));
        tokio::spawn(async move {
            while let Some((command, reply)) = cmd_rx.recv().await {
                let _ = reply.send(Response::Refused {
                    message: format!("{command:?} refused"),
                });
            }
        });

        match request(&path, &Request::Status).await.expect("status") {
            Response::Status { status } => assert_eq!(status.role, "active"),
            other => panic!("unexpected {other:?}"),
        }
        let reply = request(
            &path,
            &Request::Command {
                command: Command::Switchover,
            },
        )
        .await
        .expect("command");
        assert!(matches!(reply, Response::Refused { message } if message.contains("Switchover")));

        let mut raw = UnixStream::connect(&path).await.expect("connect");
        raw.write_all(b"{\"op\":\"format_disk\"}\n")
            .await
            .expect("write");
        let mut answer = String::new();
        BufReader::new(raw)
            .read_line(&mut answer)
            .await
            .expect("read");
        assert!(answer.contains("\"result\":\"error\""), "{answer}");

        // A second daemon on the same socket is refused instead of stealing it.
        let err = bind(&path).await.expect_err("live socket");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn unreachable_daemon_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = request(&dir.path().join("none.sock"), &Request::Status)
            .await
            .expect_err("nothing listens");
        assert!(
            err.to_string().contains("is `cloudha run` running"),
            "{err}"
        );
    }
}
