//! Driving the `criu` binary: version, pre-dump, dump, restore, cpuinfo; with the log's last
//! errors in every failure, because "criu failed" alone tells a user nothing.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

pub const CRIU: &str = "criu";

#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    #[error("criu is not installed (apt-get install criu)")]
    Missing,
    #[error("criu {action} failed ({status}); from {log}:\n{tail}")]
    Failed { action: String, status: String, log: String, tail: String },
    #[error("criu {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("criu {action} did not finish within {secs} s")]
    Timeout { action: String, secs: u64 },
}

/// The error lines of a CRIU log (or its last lines when none is marked as an error).
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // rdmig's plugin logs its refusals through CRIU's log without CRIU's "Error" prefix.
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error") || l.contains("Warn") || l.contains("rdmig_criu: cannot")).collect();
    let lines: Vec<&str> = if errors.is_empty() { text.lines().collect() } else { errors };
    lines[lines.len().saturating_sub(12)..].join("\n")
}

async fn run(action: &str, args: &[String], log: &Path, timeout: Duration) -> Result<(), CriuError> {
    run_with(action, args, log, timeout, None).await
}

/// `run` with these variables added to criu's environment.
async fn run_env(action: &str, args: &[String], log: &Path, timeout: Duration, env: &[(&str, &str)]) -> Result<(), CriuError> {
    run_spawned(action, spawn(action, args, None, env)?, log, timeout).await
}

/// The descriptor number a page-stream socket has in criu (`--ps-socket`).
const PS_FD: i32 = 3;

/// `criu` with `args`; `ps`, when given, becomes its descriptor [`PS_FD`].
fn spawn(action: &str, args: &[String], ps: Option<&OwnedFd>, env: &[(&str, &str)]) -> Result<tokio::process::Child, CriuError> {
    let mut cmd = Command::new(CRIU);
    cmd.envs(env.iter().copied());
    cmd.args(args).stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    if let Some(fd) = ps {
        let raw = fd.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = if raw == PS_FD { libc::fcntl(raw, libc::F_SETFD, 0) } else { libc::dup2(raw, PS_FD) };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CriuError::Missing,
        _ => CriuError::Io { action: action.into(), source: e },
    })
}

async fn run_with(action: &str, args: &[String], log: &Path, timeout: Duration, ps: Option<OwnedFd>) -> Result<(), CriuError> {
    let child = spawn(action, args, ps.as_ref(), &[])?;
    // Our copy of criu's end must close, or the relay would never see criu hang up.
    drop(ps);
    run_spawned(action, child, log, timeout).await
}

async fn run_spawned(action: &str, child: tokio::process::Child, log: &Path, timeout: Duration) -> Result<(), CriuError> {
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| CriuError::Timeout { action: action.into(), secs: timeout.as_secs() })?
        .map_err(|e| CriuError::Io { action: action.into(), source: e })?;
    if !out.status.success() {
        let mut tail = log_tail(log);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !stderr.trim().is_empty() {
            tail.push_str(&format!("\n(stderr) {}", stderr.trim()));
        }
        return Err(CriuError::Failed { action: action.into(), status: out.status.to_string(), log: log.display().to_string(), tail });
    }
    Ok(())
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `criu --version` → "3.17.1".
pub async fn version() -> Result<String, CriuError> {
    let out = Command::new(CRIU).arg("--version").output().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CriuError::Missing,
        _ => CriuError::Io { action: "--version".into(), source: e },
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().find_map(|l| l.strip_prefix("Version:")).map(|v| v.trim().to_string()).unwrap_or_else(|| text.trim().to_string()))
}

/// Options every CRIU step of one migration shares.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A directory holding only rdmig's CRIU plugin (`-L`): for processes with verbs state.
    pub plugins: Option<PathBuf>,
    /// Established TCP connections are checkpointed and restored (`--tcp-established`); the
    /// addresses they use must exist where the process is restored.
    pub tcp_established: bool,
    /// Restore only: the process stays stopped (`--leave-stopped`) and rdmig's plugin leaves its
    /// QPs stopped ([`HOLD_ENV`]) until whoever restored it lets it run (`process::resume`):
    /// an agent does so when the source commits, so that an uncommitted copy never runs.
    pub hold: bool,
}

/// Set in CRIU's environment for a held restore: rdmig's plugin does not resume the QPs.
pub use rdmig_image::HOLD_ENV;

impl Options {
    fn args(&self) -> Vec<String> {
        let mut a = vec![];
        if let Some(p) = &self.plugins {
            // CRIU's own directory needs no -L: CRIU loads the installed plugin by itself.
            if !is_criu_default_dir(p) {
                a.extend(["-L".into(), s(p)]);
            }
        }
        if self.tcp_established {
            a.push("--tcp-established".into());
        }
        if self.hold {
            a.push("--leave-stopped".into());
        }
        a
    }
}

/// How one dump step relates to the previous ones.
#[derive(Debug, Clone)]
pub struct DumpSpec {
    pub pid: i32,
    pub dir: PathBuf,
    /// Previous round's directory, relative to `dir` (CRIU writes a `parent` link to it).
    pub parent: Option<String>,
    pub timeout: Duration,
    pub opts: Options,
}

impl DumpSpec {
    fn common(&self) -> Vec<String> {
        let mut a = vec!["-t".into(), self.pid.to_string(), "-D".into(), s(&self.dir), "--track-mem".into(), "-v2".into()];
        if let Some(p) = &self.parent {
            a.extend(["--prev-images-dir".into(), p.clone()]);
        }
        a.extend(self.opts.args());
        a
    }
}

/// Whether process `pid` holds verbs state (a uverbs file open or mapped).
pub fn has_verbs(pid: i32) -> bool {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.flatten().any(|f| std::fs::read_link(f.path()).is_ok_and(|l| l.to_string_lossy().starts_with("/dev/infiniband/uverbs"))))
        .unwrap_or(false);
    fds || std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| m.contains("/dev/infiniband/uverbs"))
}

/// Name of rdmig's CRIU plugin library.
pub const PLUGIN_SO: &str = "librdmig_criu.so";

/// Where CRIU looks for plugins when it is given no `-L` and no `CRIU_LIBS_DIR` (CRIU's
/// `CR_PLUGIN_DEFAULT`, Debian's criu 3.17 included); the rdmig package installs the plugin here.
pub const CRIU_PLUGIN_DIR: &str = "/usr/lib/criu";

/// Whether CRIU, given no `-L`, loads its plugins from `dir`.
fn is_criu_default_dir(dir: &Path) -> bool {
    dir == Path::new(CRIU_PLUGIN_DIR) && std::env::var_os("CRIU_LIBS_DIR").is_none()
}

/// The plugin directory for CRIU's `-L`. A build (a `librdmig_criu.so` next to this executable,
/// as in `target/`): a copy of it alone in `dir`/criu-plugins (CRIU loads every `*.so` of its
/// plugin directory). An installed rdmig (none next to it): CRIU's own directory, if the package
/// put the plugin there; CRIU then finds it without `-L`.
pub fn plugin_dir(work: &Path) -> Result<PathBuf, CriuError> {
    let io = |e| CriuError::Io { action: "plugin".into(), source: e };
    let exe = std::env::current_exe().map_err(io)?;
    let so = exe.with_file_name(PLUGIN_SO);
    if !so.is_file() {
        let installed = Path::new(CRIU_PLUGIN_DIR).join(PLUGIN_SO);
        if installed.is_file() {
            return Ok(PathBuf::from(CRIU_PLUGIN_DIR));
        }
        return Err(CriuError::Io {
            action: "plugin".into(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "neither {} nor {} exists (install the rdmig package, or build the workspace: cargo build --workspace)",
                    so.display(),
                    installed.display()
                ),
            ),
        });
    }
    let dir = work.join("criu-plugins");
    std::fs::create_dir_all(&dir).map_err(io)?;
    // A copy as long as the build's and made after it is that build's (a development build's
    // plugin is some 30 MB: copying it for every migration cost seconds in the lab).
    let up_to_date =
        |src: std::fs::Metadata, dst: std::fs::Metadata| -> Option<bool> { Some(src.len() == dst.len() && dst.modified().ok()? >= src.modified().ok()?) };
    if let (Ok(src), Ok(dst)) = (std::fs::metadata(&so), std::fs::symlink_metadata(dir.join(PLUGIN_SO))) {
        if dst.is_file() && up_to_date(src, dst) == Some(true) {
            return Ok(dir);
        }
    }
    crate::atomic_file::replace_with(&dir.join(PLUGIN_SO), io, |tmp| std::fs::copy(&so, tmp).map(drop).map_err(io))?;
    Ok(dir)
}

/// Iterative pre-dump: memory pages only, the process keeps running.
pub async fn pre_dump(d: &DumpSpec) -> Result<(), CriuError> {
    let log = d.dir.join("pre-dump.log");
    let mut a = vec!["pre-dump".to_string()];
    a.extend(d.common());
    a.extend(["-o".into(), s(&log)]);
    run("pre-dump", &a, &log, d.timeout).await
}

/// Like [`pre_dump`], with the pages written into `ps` (CRIU's page-server protocol, relayed
/// to the destination's page server) instead of local page images.
pub async fn pre_dump_streamed(d: &DumpSpec, ps: OwnedFd) -> Result<(), CriuError> {
    let log = d.dir.join("pre-dump.log");
    let mut a = vec!["pre-dump".to_string()];
    a.extend(d.common());
    a.extend(["--page-server".into(), "--ps-socket".into(), PS_FD.to_string(), "-o".into(), s(&log)]);
    run_with("pre-dump", &a, &log, d.timeout, Some(ps)).await
}

/// Like [`dump_leave_stopped`], with the pages written into `ps`.
pub async fn dump_leave_stopped_streamed(d: &DumpSpec, ps: OwnedFd) -> Result<(), CriuError> {
    let log = d.dir.join("dump.log");
    let mut a = vec!["dump".to_string()];
    a.extend(d.common());
    a.extend(["--leave-stopped".into(), "--page-server".into(), "--ps-socket".into(), PS_FD.to_string(), "-o".into(), s(&log)]);
    run_with("dump", &a, &log, d.timeout, Some(ps)).await
}

/// `criu page-server` writing the page images of one dump into `dir` from the stream on `ps`;
/// `parent` is the previous round's directory relative to `dir` (pre-copy chains).
pub fn page_server(dir: &Path, parent: Option<&str>, ps: OwnedFd) -> Result<tokio::process::Child, CriuError> {
    let log = dir.join("page-server.log");
    let mut a = vec!["page-server".to_string(), "-D".into(), s(dir), "--ps-socket".into(), PS_FD.to_string(), "-v2".into(), "-o".into(), s(&log)];
    if let Some(p) = parent {
        a.extend(["--prev-images-dir".into(), p.into()]);
    }
    let child = spawn("page-server", &a, Some(&ps), &[]);
    drop(ps);
    child
}

/// Waits for a page server started by [`page_server`]; its log's errors when it failed.
pub async fn page_server_wait(dir: &Path, child: tokio::process::Child, timeout: Duration) -> Result<(), CriuError> {
    let log = dir.join("page-server.log");
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| CriuError::Timeout { action: "page-server".into(), secs: timeout.as_secs() })?
        .map_err(|e| CriuError::Io { action: "page-server".into(), source: e })?;
    if !out.status.success() {
        return Err(CriuError::Failed { action: "page-server".into(), status: out.status.to_string(), log: log.display().to_string(), tail: log_tail(&log) });
    }
    Ok(())
}

/// Final dump. The process is frozen from the start and left stopped afterwards (not killed), so
/// it can be resumed here if the destination fails and killed only once the destination confirms.
/// On a failed dump CRIU resumes the process itself.
pub async fn dump_leave_stopped(d: &DumpSpec) -> Result<(), CriuError> {
    let log = d.dir.join("dump.log");
    let mut a = vec!["dump".to_string()];
    a.extend(d.common());
    a.extend(["--leave-stopped".into(), "-o".into(), s(&log)]);
    run("dump", &a, &log, d.timeout).await
}

/// Restores a dump detached from criu; returns the restored root task's pid.
pub async fn restore(dir: &Path, timeout: Duration, opts: &Options) -> Result<i32, CriuError> {
    let log = dir.join("restore.log");
    let pidfile = dir.join("restored.pid");
    let mut a = vec!["restore".into(), "-D".into(), s(dir), "-d".into(), "-v2".into(), "--pidfile".into(), s(&pidfile), "-o".into(), s(&log)];
    a.extend(opts.args());
    let env: &[(&str, &str)] = if opts.hold { &[(HOLD_ENV, "1")] } else { &[] };
    run_env("restore", &a, &log, timeout, env).await?;
    let text = std::fs::read_to_string(&pidfile).map_err(|e| CriuError::Io { action: "restore (pid file)".into(), source: e })?;
    text.trim().parse().map_err(|_| CriuError::Failed { action: "restore".into(), status: "bad pid file".into(), log: s(&log), tail: text })
}

/// `criu cpuinfo dump` into `dir`; returns the image's bytes.
pub async fn cpuinfo_dump(dir: &Path) -> Result<Vec<u8>, CriuError> {
    let log = dir.join("cpuinfo.log");
    run("cpuinfo dump", &["cpuinfo".into(), "dump".into(), "-D".into(), s(dir), "-o".into(), s(&log)], &log, Duration::from_secs(30)).await?;
    std::fs::read(dir.join("cpuinfo.img")).map_err(|e| CriuError::Io { action: "cpuinfo dump".into(), source: e })
}

/// `criu cpuinfo check` of a source's image in `dir` against this CPU.
pub async fn cpuinfo_check(dir: &Path) -> Result<(), CriuError> {
    let log = dir.join("cpuinfo-check.log");
    run("cpuinfo check", &["cpuinfo".into(), "check".into(), "-D".into(), s(dir), "-o".into(), s(&log)], &log, Duration::from_secs(30)).await
}

/// Bytes of memory pages a dump directory holds (CRIU writes them to `pages-*.img`).
pub fn page_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("pages-") && n.ends_with(".img")
                })
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_prefers_errors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l");
        std::fs::write(&p, "a\nb\n(00.1) Error (criu/x.c:1): boom\nc\n").unwrap();
        assert_eq!(log_tail(&p), "(00.1) Error (criu/x.c:1): boom");
        std::fs::write(&p, "one\ntwo\n").unwrap();
        assert_eq!(log_tail(&p), "one\ntwo");
    }

    #[test]
    fn page_bytes_counts_only_page_images() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pages-1.img"), vec![0u8; 8192]).unwrap();
        std::fs::write(d.path().join("pages-2.img"), vec![0u8; 4096]).unwrap();
        std::fs::write(d.path().join("pagemap-1.img"), vec![0u8; 100]).unwrap();
        assert_eq!(page_bytes(d.path()), 12288);
    }

    #[test]
    fn dump_args_chain_rounds() {
        let mut d = DumpSpec { pid: 42, dir: "/w/pre-2".into(), parent: Some("../pre-1".into()), timeout: Duration::from_secs(1), opts: Options::default() };
        let a = d.common();
        assert!(a.windows(2).any(|w| w == ["--prev-images-dir", "../pre-1"]));
        assert!(a.windows(2).any(|w| w == ["-t", "42"]));
        assert!(!a.iter().any(|x| x == "-L" || x == "--tcp-established"));
        d.opts = Options { plugins: Some("/p".into()), tcp_established: true, hold: false };
        let a = d.common();
        assert!(a.windows(2).any(|w| w == ["-L", "/p"]) && a.iter().any(|x| x == "--tcp-established"));
        // The installed plugin, in CRIU's own directory: CRIU finds it without -L.
        d.opts = Options { plugins: Some(CRIU_PLUGIN_DIR.into()), tcp_established: false, hold: false };
        assert_eq!(!d.common().iter().any(|x| x == "-L"), std::env::var_os("CRIU_LIBS_DIR").is_none());
    }
}
