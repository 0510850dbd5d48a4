//! The node's agent lends `/dev/rxe_ctl` to CRIU where CRIU cannot open it.
//!
//! Under a container runtime CRIU runs inside the container's device cgroup (runc moves CRIU
//! there before a restore, so that the restored tasks land in the container's cgroups), and the
//! restored task is also inside the container's mount namespace: `open("/dev/rxe_ctl")` fails
//! with EPERM (or ENOENT) there, while rdmig's plugin needs the device to restore verbs state
//! with its old numbers. A device cgroup checks opens only, so a descriptor opened by a process
//! outside it works: the agent, a root service on every node, listens on [`LEND_SOCKET`] and
//! hands each root peer a freshly opened descriptor (SCM_RIGHTS), which the plugin uses only
//! once it answers VERSION with this rdmig's ABI.
//!
//! Lending gives no power a root peer does not have already (it could open the device itself
//! outside a container), and the device's ioctls want CAP_CHECKPOINT_RESTORE in the host's user
//! namespace, which CRIU has and a container's processes are not given.

use std::fs::File;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{getsockopt, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::ctl::{Ctl, CTL_DEV};

/// Where the agent lends the control device (the directory is the agent's, root-only).
pub const LEND_SOCKET: &str = "/run/rdmig/rxe_ctl.sock";

/// Lends a freshly opened control device to the peer of `conn` if it runs as root (its pid is
/// returned); says why not otherwise. Blocks only on the open and one send.
pub fn lend_to(conn: &impl AsRawFd) -> Result<i32, String> {
    let fd = conn.as_raw_fd();
    // SAFETY: borrowed for the duration of the call; `conn` outlives it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let cred = getsockopt(&borrowed, sockopt::PeerCredentials).map_err(|e| format!("peer credentials: {e}"))?;
    if cred.uid() != 0 {
        return Err(format!("pid {} runs as uid {}, not root", cred.pid(), cred.uid()));
    }
    let dev = std::fs::OpenOptions::new().read(true).write(true).open(CTL_DEV).map_err(|e| format!("open {CTL_DEV}: {e}"))?;
    let fds = [dev.as_raw_fd()];
    sendmsg::<()>(fd, &[IoSlice::new(b"c")], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).map_err(|e| format!("send: {e}"))?;
    Ok(cred.pid())
}

/// Borrows the control device from the agent listening at `socket` (a path this process can
/// reach; inside a container's mount namespace, one through a directory of the host's).
pub fn borrow(socket: &Path) -> Result<Ctl, String> {
    let conn = UnixStream::connect(socket).map_err(|e| format!("connect to the agent's {LEND_SOCKET}: {e}"))?;
    let fd = receive_fd(&conn).map_err(|e| format!("receive from the agent's {LEND_SOCKET}: {e}"))?;
    Ctl::from_file(File::from(fd)).map_err(|e| format!("the descriptor the agent lent: {e}"))
}

/// One descriptor sent with SCM_RIGHTS on `conn`.
fn receive_fd(conn: &UnixStream) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).map_err(|e| e.to_string())?;
    let mut got = None;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us; nobody
                // else owns it. Extra ones (there should be none) are closed when dropped.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                got.get_or_insert(owned);
            }
        }
    }
    got.ok_or_else(|| "the agent sent no descriptor (see its log)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lending itself, with a file that is not the device: what goes over the socket is a
    /// working descriptor (the test runs as root, as the agent does; as another user the lend
    /// is refused).
    #[test]
    fn a_descriptor_goes_to_a_root_peer() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let fds = [f.as_raw_fd()];
        sendmsg::<()>(a.as_raw_fd(), &[IoSlice::new(b"c")], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None).unwrap();
        let got = receive_fd(&b).unwrap();
        let text = std::io::read_to_string(File::from(got)).unwrap();
        assert!(text.contains("Pid:"), "{text}");
        // Nothing sent: said so.
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(receive_fd(&b).unwrap_err().contains("no descriptor"));
    }

    #[test]
    fn lending_without_the_device_says_so() {
        let (a, _b) = UnixStream::pair().unwrap();
        if nix::unistd::geteuid().is_root() && !Path::new(CTL_DEV).exists() {
            assert!(lend_to(&a).unwrap_err().contains(CTL_DEV));
        }
    }
}
