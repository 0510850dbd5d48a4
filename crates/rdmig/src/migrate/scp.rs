//! `--transport scp`: the image files travel with `scp` over ssh, the MigrOS artifact's
//! baseline.

use std::path::Path;

use tokio::net::TcpStream;

use super::remote::busy;
use super::transfer::{image_entries, put_link, Entry};
use super::Step;
use rdmig_proto::msg::{MigrationId, RelPath, Reply, Request, ScpFile};
use rdmig_proto::wire::Channel;

/// `--transport scp`: the image files travel with `scp` over ssh, as in the MigrOS artifact's
/// procedure; the channel only asks the destination where to put them and has it check what
/// arrived (ssh's MAC protects the bytes on the way; names and lengths are checked there).
pub(super) struct Scp {
    host: String,
    config: Option<std::path::PathBuf>,
}

impl Scp {
    pub(super) fn new(host: &str, config: Option<std::path::PathBuf>) -> Result<Self, String> {
        // It becomes an argument of scp and ssh: no options, no shell or scp syntax.
        let ok = !host.is_empty()
            && host.len() <= 255
            && !host.starts_with('-')
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b))
            && host.matches('@').count() <= 1;
        if !ok {
            return Err(format!("ssh host {host:?}: expected [user@]host of [A-Za-z0-9._-]"));
        }
        if let Some(c) = &config {
            if !c.is_file() {
                return Err(format!("ssh config {}: not a readable file", c.display()));
            }
        }
        Ok(Self { host: host.to_string(), config })
    }

    fn command(&self, prog: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(prog);
        // Never prompt: a migration runs unattended.
        c.args(["-o", "BatchMode=yes"]);
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        c.stdin(std::process::Stdio::null());
        c
    }

    /// Can we log in at the destination? Checked before anything is frozen.
    pub(super) async fn check(&self) -> Result<(), String> {
        let mut c = self.command("ssh");
        c.args([self.host.as_str(), "true"]);
        run(c, "ssh").await.map_err(|e| format!("--transport scp: cannot log in to {} with ssh: {e}", self.host))
    }

    /// Copies `<root>/<name>` to the destination: the files with scp, CRIU's `parent` link as
    /// a message. Returns the bytes copied.
    pub(super) async fn send_dir(&self, ch: &mut Channel<TcpStream>, id: &MigrationId, root: &Path, name: &str) -> Result<u64, Step> {
        let rel = RelPath::new(name).map_err(|e| Step::Fail(format!("image directory {name:?}: {e}")))?;
        let mut files: Vec<ScpFile> = vec![];
        let mut paths = vec![];
        for entry in image_entries(&root.join(name))? {
            match entry {
                Entry::Link { name: link, target } => put_link(ch, id, name, &link, target).await?,
                Entry::File { name, path, len } => {
                    files.push(ScpFile { name, len });
                    paths.push(path);
                }
            }
        }
        ch.send_msg(&Request::ScpDir { id: id.clone(), rel: rel.clone() }).await?;
        let remote = match ch.recv_msg().await? {
            Reply::Dir(d) => d,
            Reply::Failed(e) => return Err(Step::Fail(format!("destination: {e}"))),
            other => return Err(Step::Fail(format!("destination: unexpected reply {other:?}"))),
        };
        // The path comes from an authenticated agent, but it still lands on a command line.
        if !remote.starts_with('/') || !remote.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b)) {
            return Err(Step::Fail(format!("destination directory {remote:?} is not a plain absolute path")));
        }
        if !paths.is_empty() {
            let mut c = self.command("scp");
            c.arg("-q").arg("--").args(&paths).arg(format!("{}:{remote}/", self.host));
            // The destination keeps hearing from us while scp copies.
            let (copied, alive) = busy(ch, run(c, "scp")).await;
            copied.map_err(|e| Step::Fail(format!("scp to {}: {e}", self.host)))?;
            alive?;
        }
        let total = files.iter().map(|f| f.len).sum();
        ch.send_msg(&Request::ScpDone { id: id.clone(), rel, files }).await?;
        match ch.recv_msg().await? {
            Reply::Ack => Ok(total),
            Reply::Failed(e) => Err(Step::Fail(format!("destination checked what scp delivered: {e}"))),
            other => Err(Step::Fail(format!("destination: unexpected reply {other:?}"))),
        }
    }
}

/// Runs `c` to completion; its stderr is the error.
async fn run(mut c: tokio::process::Command, what: &str) -> Result<(), String> {
    let out = c.output().await.map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim();
        Err(if err.is_empty() { format!("{what} failed ({})", out.status) } else { format!("{} ({})", err.lines().last().unwrap_or(err), out.status) })
    }
}

#[cfg(test)]
mod tests {
    use super::Scp;

    #[test]
    fn scp_hosts_cannot_smuggle_options_or_syntax() {
        assert!(Scp::new("10.99.0.3", None).is_ok());
        assert!(Scp::new("root@node3", None).is_ok());
        for bad in ["", "-oProxyCommand=x", "a b", "h:/tmp", "a@b@c", "x;reboot", "$(id)"] {
            assert!(Scp::new(bad, None).is_err(), "{bad:?}");
        }
        assert!(Scp::new("h", Some("/nonexistent/ssh_config".into())).is_err());
    }
}
