//! sshd in the lab's nodes, for the baseline that copies images with scp (`rdmig migrate
//! --transport scp`, the MigrOS artifact's checkpoint/scp/restore).
//!
//! `lab up` makes one host key and one client key for the whole lab in the lab share (so every
//! node trusts every other node, and only this lab's key logs in), and each node starts sshd on
//! its underlay address. From inside a node: `scp -F /mnt/lab/ssh/ssh_config FILE 10.99.0.N:DIR`.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;

use super::{write_private, LabError, LAB_SHARE_IN_NODE};

pub const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

/// The ssh client configuration for scp between nodes, as the nodes see it.
pub fn node_ssh_config() -> String {
    format!("{LAB_SHARE_IN_NODE}/ssh/ssh_config")
}

/// The sshd configuration, as the nodes see it.
pub fn node_sshd_config() -> String {
    format!("{LAB_SHARE_IN_NODE}/ssh/sshd_config")
}

/// Is there an sshd the nodes can run (the host's root is theirs)?
pub fn available() -> bool {
    Path::new(SSHD).is_file() && Path::new(SFTP_SERVER).is_file() && which("ssh-keygen")
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// Writes keys and configurations into `<lab_share>/ssh`.
pub fn prepare(lab_share: &Path) -> Result<(), LabError> {
    let dir = lab_share.join("ssh");
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    for (key, comment) in [("host_ed25519", "rdmig-lab-host"), ("id_ed25519", "rdmig-lab-client")] {
        let path = dir.join(key);
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(&path)
            .output()
            .map_err(|e| LabError::io("run ssh-keygen", e))?;
        if !out.status.success() {
            return Err(LabError::Command {
                cmd: format!("ssh-keygen -f {}", path.display()),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
    }
    let read = |name: &str| fs::read_to_string(dir.join(name)).map_err(|e| LabError::io(format!("read {name}"), e));
    let host_pub = read("host_ed25519.pub")?;
    let client_pub = read("id_ed25519.pub")?;
    let node_dir = format!("{LAB_SHARE_IN_NODE}/ssh");
    write_private(&dir.join("authorized_keys"), client_pub.as_bytes())?;
    // Every node has the lab's one host key, whatever its address.
    write_private(&dir.join("known_hosts"), format!("* {}", host_pub.trim()).as_bytes())?;
    let client = format!(
        "# rdmig lab: ssh/scp between the nodes (written by `rdmig lab up`)\n\
         Host *\n  User root\n  IdentityFile {node_dir}/id_ed25519\n  IdentitiesOnly yes\n  \
         UserKnownHostsFile {node_dir}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  \
         StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
    );
    write_private(&dir.join("ssh_config"), client.as_bytes())?;
    // StrictModes off: the share is the host's directory, seen over 9p with the host's owners.
    let server = format!(
        "# rdmig lab: sshd of the nodes (written by `rdmig lab up`); ListenAddress is given per node\n\
         HostKey {node_dir}/host_ed25519\nAuthorizedKeysFile {node_dir}/authorized_keys\n\
         PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         UsePAM no\nStrictModes no\nPidFile /run/sshd.pid\nSubsystem sftp {SFTP_SERVER}\n"
    );
    write_private(&dir.join("sshd_config"), server.as_bytes())?;
    Ok(())
}
