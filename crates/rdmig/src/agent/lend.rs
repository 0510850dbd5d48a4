//! The agent lends `/dev/rxe_ctl` to CRIU where CRIU cannot open it: inside a container's
//! device cgroup and mount namespace (why, and what it gives away: [`rdmig_rxe::lend`]).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tracing::{info, warn};

/// Listens on `path` (its directory made root-only if new; a socket left by an earlier agent
/// replaced) and lends the control device to each root peer, until the agent ends.
pub fn start(path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "lending {} to CRIU inside containers", rdmig_rxe::CTL_DEV);
    tokio::spawn(serve(listener, path.to_path_buf()));
    Ok(())
}

async fn serve(listener: UnixListener, path: PathBuf) {
    loop {
        let conn = match listener.accept().await {
            Ok((c, _)) => c,
            Err(e) => {
                warn!(socket = %path.display(), "accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // One open and one send of a byte on a fresh socket: nothing there waits for long.
        match tokio::task::spawn_blocking(move || rdmig_rxe::lend::lend_to(&conn)).await {
            Ok(Ok(pid)) => info!(pid, "lent {} to CRIU ({})", rdmig_rxe::CTL_DEV, comm(pid)),
            Ok(Err(why)) => warn!("did not lend {}: {why}", rdmig_rxe::CTL_DEV),
            Err(e) => warn!("lending {}: {e}", rdmig_rxe::CTL_DEV),
        }
    }
}

/// The name of process `pid` ("criu"), for the log.
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer gets an answer from the socket, which only root can reach: the descriptor where
    /// the device exists, or a closed connection (and the agent's log saying why) where not.
    #[tokio::test]
    async fn the_socket_is_root_only_and_answers() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("sub/rxe_ctl.sock");
        start(&path).unwrap();
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let p = path.clone();
        let r = tokio::task::spawn_blocking(move || rdmig_rxe::lend::borrow(&p)).await.unwrap();
        if Path::new(rdmig_rxe::CTL_DEV).exists() {
            assert!(r.is_ok(), "{:?}", r.err());
        } else {
            assert!(r.err().unwrap().contains("no descriptor"));
        }
        // A second agent replaces the socket a first one left.
        start(&path).unwrap();
    }
}
