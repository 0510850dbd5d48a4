//! Host side of the node protocol: ping and exec against a node's guest agent.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::net::TcpStream;

use super::host::connect_in_netns;
use super::proto::{read_frame, read_json, write_json, ExecSpec, FrameKind, NodeStatus, Op, ProtoError, Reply, Request, SpawnSpec, PROTO_VERSION};
use super::LabError;

/// What to do with a command's output as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Write it to this process' stdout and stderr.
    Forward,
    /// Keep it for the caller.
    Capture,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecOutcome {
    pub node: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    #[serde(serialize_with = "lossy")]
    pub stdout: Vec<u8>,
    #[serde(serialize_with = "lossy")]
    pub stderr: Vec<u8>,
}

fn lossy<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

impl ExecOutcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// The exit code a shell would report: 128+N for a signal, 124 for a timeout (like timeout(1)).
    pub fn shell_code(&self) -> i32 {
        if self.timed_out {
            124
        } else {
            self.code.unwrap_or(128 + self.signal.unwrap_or(0))
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeClient {
    pub node: String,
    pub netns: String,
    pub addr: SocketAddr,
    pub token: String,
}

impl NodeClient {
    fn err(&self, source: ProtoError) -> LabError {
        LabError::Node { node: self.node.clone(), source }
    }

    async fn connect(&self, timeout: Duration) -> Result<TcpStream, LabError> {
        let (ns, addr) = (self.netns.clone(), self.addr);
        let std = tokio::task::spawn_blocking(move || connect_in_netns(&ns, addr, timeout))
            .await
            .map_err(|e| LabError::io("connect", std::io::Error::other(e)))?
            .map_err(|e| self.err(e.into()))?;
        // A node that stops answering (its NIC or kernel hung) ends the call within about a
        // minute, instead of leaving a command that waits for its reply hanging for ever.
        let sock = socket2::SockRef::from(&std);
        let ka = socket2::TcpKeepalive::new().with_time(Duration::from_secs(20)).with_interval(Duration::from_secs(5)).with_retries(6);
        sock.set_tcp_keepalive(&ka).map_err(|e| self.err(e.into()))?;
        sock.set_tcp_user_timeout(Some(Duration::from_secs(60))).map_err(|e| self.err(e.into()))?;
        std.set_nonblocking(true).map_err(|e| self.err(e.into()))?;
        let s = TcpStream::from_std(std).map_err(|e| self.err(e.into()))?;
        s.set_nodelay(true).map_err(|e| self.err(e.into()))?;
        Ok(s)
    }

    async fn send(&self, s: &mut TcpStream, op: Op) -> Result<(), LabError> {
        let req = Request { version: PROTO_VERSION, token: self.token.clone(), op };
        write_json(s, &req).await.map_err(|e| self.err(e))
    }

    pub async fn ping(&self, timeout: Duration) -> Result<NodeStatus, LabError> {
        let fut = async {
            let mut s = self.connect(timeout).await?;
            self.send(&mut s, Op::Ping).await?;
            match read_json(&mut s).await.map_err(|e| self.err(e))? {
                Reply::Pong(st) => Ok(st),
                Reply::Refused(r) => Err(LabError::Refused { node: self.node.clone(), reason: r }),
                other => Err(LabError::Invalid(format!("{}: unexpected reply {other:?}", self.node))),
            }
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| self.err(ProtoError::Io(std::io::ErrorKind::TimedOut.into())))?
    }

    /// Starts a detached process on the node; returns its pid there.
    pub async fn spawn(&self, spec: SpawnSpec) -> Result<u32, LabError> {
        let mut s = self.connect(Duration::from_secs(10)).await?;
        self.send(&mut s, Op::Spawn(spec)).await?;
        match read_json(&mut s).await.map_err(|e| self.err(e))? {
            Reply::Spawned { pid } => Ok(pid),
            Reply::Refused(r) => Err(LabError::Refused { node: self.node.clone(), reason: r }),
            other => Err(LabError::Invalid(format!("{}: unexpected reply {other:?}", self.node))),
        }
    }

    pub async fn exec(&self, spec: ExecSpec, output: Output) -> Result<ExecOutcome, LabError> {
        let mut s = self.connect(Duration::from_secs(10)).await?;
        self.send(&mut s, Op::Exec(spec)).await?;
        let mut out = ExecOutcome { node: self.node.clone(), ..Default::default() };
        loop {
            let frame = read_frame(&mut s).await.map_err(|e| self.err(e))?;
            let Some((kind, data)) = frame else {
                return Err(self.err(ProtoError::Closed));
            };
            match (kind, output) {
                (FrameKind::Stdout, Output::Forward) => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(&data).and_then(|_| o.flush());
                }
                (FrameKind::Stderr, Output::Forward) => {
                    let _ = std::io::stderr().write_all(&data);
                }
                (FrameKind::Stdout, Output::Capture) => out.stdout.extend_from_slice(&data),
                (FrameKind::Stderr, Output::Capture) => out.stderr.extend_from_slice(&data),
                (FrameKind::Json, _) => {
                    let reply: Reply = serde_json::from_slice(&data).map_err(|e| self.err(e.into()))?;
                    return match reply {
                        Reply::Exited { code, signal, timed_out } => {
                            out.code = code;
                            out.signal = signal;
                            out.timed_out = timed_out;
                            Ok(out)
                        }
                        Reply::Refused(r) => Err(LabError::Refused { node: self.node.clone(), reason: r }),
                        other => Err(LabError::Invalid(format!("{}: unexpected reply {other:?}", self.node))),
                    };
                }
            }
        }
    }
}
