//! The local control endpoint: a Unix socket serving `status` and the operator commands.
//!
//! A Unix socket (mode 0600) rather than TCP: it is never reachable from the network, and file
//! permissions decide who may run `switchover`. The protocol is one JSON request line and one
//! JSON response line per connection, so it can be driven with `socat` in an emergency.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::fsm::Command;
use crate::status::{StatusSnapshot, StatusSource};

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

/// Bind the control socket: create its directory (0700) if missing, refuse a directory that
/// is not the daemon's or that others can write (they could swap the socket and answer the
/// operator's commands), replace a stale socket, refuse a live one and anything that is not a
/// socket (never deleted).
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let dir = path
        .parent()
        .filter(|d| path.is_absolute() && !d.as_os_str().is_empty())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an absolute path; write e.g. /run/cloudha/cloudha.sock",
            )
        })?;
    crate::secure_fs::ensure_private_dir(dir, false)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket (never deleted); remove it or set status.socket to another path",
            ));
        }
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

/// Remove the control socket at exit, if what is at `path` is still a socket (another file put
/// there meanwhile is left alone).
pub fn remove_socket(path: &Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket {
        let _ = std::fs::remove_file(path);
    }
}

/// Serve requests until the listener fails.
pub async fn serve(
    listener: UnixListener,
    status: StatusSource,
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
    status: StatusSource,
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
            status: Box::new(status.fresh().await),
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
    /// The socket's directory could be written by someone other than root and this user, who
    /// could have put their own socket there to answer in the daemon's name.
    #[error("refusing to talk to {path}: {reason}")]
    Untrusted {
        /// The socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The daemon did not answer in time.
    #[error("the cloudha daemon at {0} did not answer within 10 s")]
    Timeout(PathBuf),
    /// The answer was not understood.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
}

/// Send one request and wait for the answer. The socket's directory must belong to root or
/// this user and be writable by nobody else (the daemon creates it so): otherwise its owner
/// could have swapped the socket and would answer `switchover` with a fake "accepted".
pub async fn request(path: &Path, request: &Request) -> Result<Response, ClientError> {
    if let Some(dir) = path.parent().filter(|d| d.is_dir()) {
        crate::secure_fs::check_private_dir(dir).map_err(|reason| ClientError::Untrusted {
            path: path.to_path_buf(),
            reason,
        })?;
    }
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
        let (_status_tx, status_rx) = tokio::sync::watch::channel(snapshot);
        let (cmd_tx, mut cmd_rx) = mpsc::channel::<CommandRequest>(4);
        tokio::spawn(serve(listener, StatusSource::fixed(status_rx), cmd_tx));
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
    async fn socket_directory_is_created_0700_and_must_be_the_daemons() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run/cloudha/ctl.sock");
        let listener = bind(&path).await.expect("bind");
        let mode = std::fs::metadata(path.parent().expect("dir"))
            .expect("created")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(listener);

        // Others can write the directory: they could swap the socket, so it is refused.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = bind(&shared.join("ctl.sock"))
            .await
            .expect_err("others can write");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("0777"), "{err}");
        let err = bind(Path::new("ctl.sock")).await.expect_err("relative");
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_never_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        std::fs::write(&path, "precious").expect("write");
        let err = bind(&path).await.expect_err("a regular file");
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("not a socket"), "{err}");
        remove_socket(&path);
        assert_eq!(std::fs::read_to_string(&path).expect("kept"), "precious");

        // A stale socket (nobody listening) is replaced, and removed at exit.
        std::fs::remove_file(&path).expect("rm");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        let listener = bind(&path).await.expect("stale socket replaced");
        drop(listener);
        remove_socket(&path);
        assert!(std::fs::symlink_metadata(&path).is_err(), "removed");
    }

    #[tokio::test]
    async fn a_client_never_talks_to_a_socket_others_could_have_swapped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ctl.sock");
        let listener = bind(&path).await.expect("bind");
        let (_status_tx, status_rx) = tokio::sync::watch::channel(StatusSnapshot::default());
        let (cmd_tx, _cmd_rx) = mpsc::channel::<CommandRequest>(4);
        tokio::spawn(serve(listener, StatusSource::fixed(status_rx), cmd_tx));
        assert!(request(&path, &Request::Status).await.is_ok());
        // The directory becomes writable by others: whoever answers may not be the daemon.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let err = request(&path, &Request::Status)
            .await
            .expect_err("untrusted directory");
        assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
        assert!(err.to_string().contains("0777"), "{err}");
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
