//! Podman, as `rdmig migrate --container` and the agent run it: always `podman` from `PATH`
//! with an argument vector rdmig builds itself, and Podman's settings (storage root, cgroup
//! manager, runtime...) from Podman's own configuration files, never from a peer.
//!
//! Which files: `--containers-conf` and `--containers-storage-conf` (of `rdmig migrate` and of
//! `rdmig agent`), handed to Podman as its own `CONTAINERS_CONF` and `CONTAINERS_STORAGE_CONF`;
//! unset, Podman reads its defaults (`/etc/containers/...`) or those variables from rdmig's
//! environment. Files rather than a list of global options, so that the user's own `podman`
//! commands and rdmig's see the same containers by setting the same two variables.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Podman {
    /// Podman's `containers.conf` (its `CONTAINERS_CONF`).
    pub containers_conf: Option<PathBuf>,
    /// Podman's `storage.conf` (its `CONTAINERS_STORAGE_CONF`).
    pub storage_conf: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("podman is not installed here (apt-get install podman runc)")]
    Missing,
    #[error("`podman {args}`: {source}")]
    Spawn { args: String, source: std::io::Error },
    #[error("`podman {args}` took longer than {secs} s and was killed")]
    TimedOut { args: String, secs: u64 },
    #[error("`podman {args}` failed ({status}): {stderr}")]
    Failed { args: String, status: std::process::ExitStatus, stderr: String },
}

/// What one `podman` run said.
#[derive(Debug)]
pub struct Output {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Podman {
    /// `podman ARGS` with this configuration (stdin closed, killed if dropped).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        if let Some(p) = &self.containers_conf {
            c.env("CONTAINERS_CONF", p);
        }
        if let Some(p) = &self.storage_conf {
            c.env("CONTAINERS_STORAGE_CONF", p);
        }
        c
    }

    /// Runs `podman ARGS` within `timeout`, whatever its exit code.
    pub async fn output(&self, args: &[&str], timeout: Duration) -> Result<Output, PodmanError> {
        let spelled = args.join(" ");
        let child = self.command(args).output();
        let o = match tokio::time::timeout(timeout, child).await {
            Err(_) => return Err(PodmanError::TimedOut { args: spelled, secs: timeout.as_secs() }),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Err(PodmanError::Missing),
            Ok(Err(e)) => return Err(PodmanError::Spawn { args: spelled, source: e }),
            Ok(Ok(o)) => o,
        };
        Ok(Output { status: o.status, stdout: String::from_utf8_lossy(&o.stdout).into_owned(), stderr: String::from_utf8_lossy(&o.stderr).into_owned() })
    }

    /// Runs `podman ARGS` within `timeout`; its stdout if it exits 0.
    pub async fn run(&self, args: &[&str], timeout: Duration) -> Result<String, PodmanError> {
        let o = self.output(args, timeout).await?;
        if !o.status.success() {
            return Err(PodmanError::Failed { args: args.join(" "), status: o.status, stderr: last_lines(&o.stderr, 8) });
        }
        Ok(o.stdout)
    }

    /// Whether a container of this name or ID exists here (`podman container exists`: 0 yes,
    /// 1 no, anything else an error).
    pub async fn exists(&self, name_or_id: &str) -> Result<bool, PodmanError> {
        let o = self.output(&["container", "exists", name_or_id], SHORT).await?;
        match o.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(PodmanError::Spawn { args: format!("container exists {name_or_id}"), source: std::io::Error::other(last_lines(&o.stderr, 8)) }),
        }
    }

    /// Every container here (`podman container ls --all`): full ID and name of each. One call,
    /// not one per name: each `podman` takes seconds in an emulated node.
    pub async fn containers(&self) -> Result<Vec<(String, String)>, PodmanError> {
        let out = self.run(&["container", "ls", "--all", "--no-trunc", "--format", "{{.ID}} {{.Names}}"], SHORT).await?;
        Ok(parse_containers(&out))
    }

    /// A container's fields (`podman container inspect`): ID, state, main process.
    pub async fn inspect(&self, name: &str) -> Result<Inspected, PodmanError> {
        let out = self.run(&["container", "inspect", "--format", "{{.Id}} {{.State.Status}} {{.State.Pid}}", name], SHORT).await?;
        let f: Vec<&str> = out.split_whitespace().collect();
        match f[..] {
            [id, status, pid] => Ok(Inspected { id: id.to_string(), status: status.to_string(), pid: pid.parse().unwrap_or(0) }),
            _ => Err(PodmanError::Spawn { args: format!("container inspect {name}"), source: std::io::Error::other(format!("unexpected answer {out:?}")) }),
        }
    }
}

/// What `podman container inspect` says of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub id: String,
    /// `running`, `exited`, `created`...
    pub status: String,
    /// Its main process on this host (0 when it runs none).
    pub pid: i32,
}

/// `ID NAME` lines.
fn parse_containers(out: &str) -> Vec<(String, String)> {
    out.lines().filter_map(|l| l.trim().split_once(' ')).map(|(id, name)| (id.to_string(), name.trim().to_string())).collect()
}

/// A query's time: Podman takes seconds in an emulated node, never minutes.
pub const SHORT: Duration = Duration::from_secs(120);

/// The last `n` lines of `text` (Podman's errors come last).
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn podman_gets_its_configuration_files_and_nothing_else() {
        let p = Podman { containers_conf: Some("/etc/rdmig/containers.conf".into()), storage_conf: None };
        let c = p.command(&["container", "exists", "srv"]);
        let c = c.as_std();
        assert_eq!(c.get_program(), "podman");
        assert_eq!(c.get_args().collect::<Vec<_>>(), ["container", "exists", "srv"]);
        let envs: Vec<_> = c.get_envs().collect();
        assert_eq!(envs, [(std::ffi::OsStr::new("CONTAINERS_CONF"), Some(std::ffi::OsStr::new("/etc/rdmig/containers.conf")))]);
    }

    #[test]
    fn the_container_list_is_read_as_id_and_name() {
        let id = "a".repeat(64);
        assert_eq!(parse_containers(&format!("{id} ctr-srv\n\n{id}b x\n")), [(id.clone(), "ctr-srv".into()), (format!("{id}b"), "x".into())]);
        assert!(parse_containers("").is_empty());
    }

    #[test]
    fn last_lines_keeps_the_end() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a", 5), "a");
    }
}
