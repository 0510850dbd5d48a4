use std::path::PathBuf;

use super::proto::ProtoError;

/// Everything that can go wrong driving the lab, each naming what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab needs root (it creates network namespaces and tap devices); run it with sudo")]
    NotRoot,
    #[error("{what} is missing: {fix}")]
    Missing { what: String, fix: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    InUse(String),
    #[error("no lab is up (no state in {}); start one with `rdmig lab up`", dir.display())]
    NotUp { dir: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command { cmd: String, status: String, stderr: String },
    #[error("{node} did not come up: {reason}\n--- last lines of its console ({console}) ---\n{tail}")]
    Boot { node: String, reason: String, console: String, tail: String },
    #[error("{node}: {source}")]
    Node {
        node: String,
        #[source]
        source: ProtoError,
    },
    #[error("{node} refused the request: {reason}")]
    Refused { node: String, reason: String },
}

impl LabError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}
