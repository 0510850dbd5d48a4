//! Sending a CRIU image directory to the destination agent over the authenticated channel.
//! (Issue 7 puts the page stream on RDMA; this is the TCP path every migration can fall back to.)

use std::path::Path;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Step;
use crate::transport::rdma::RdmaSender;
use crate::transport::DataSum;
use rdmig_proto::msg::{MigrationId, RelPath, Reply, Request, ScpFile, CHUNK};
use rdmig_proto::wire::Channel;

/// What an image directory holds to send, in name order: files (our own logs excepted: they
/// stay here) and CRIU's `parent` link.
enum Entry {
    File { name: String, path: std::path::PathBuf, len: u64 },
    Link { name: String, target: String },
}

fn image_entries(dir: &Path) -> Result<Vec<Entry>, Step> {
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(|e| Step::Fail(format!("{}: {e}", dir.display())))?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let mut out = vec![];
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            continue;
        }
        let meta = std::fs::symlink_metadata(e.path()).map_err(|err| Step::Fail(format!("{name}: {err}")))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(|err| Step::Fail(format!("{name}: {err}")))?;
            out.push(Entry::Link { name, target: target.to_string_lossy().into_owned() });
        } else if meta.is_file() {
            out.push(Entry::File { name, path: e.path(), len: meta.len() });
        } else {
            return Err(Step::Fail(format!("unexpected entry {name} in {}", dir.display())));
        }
    }
    Ok(out)
}

/// Recreates link `<dir>/<name>` at the destination.
async fn put_link(ch: &mut Channel<TcpStream>, id: &MigrationId, dir: &str, name: &str, target: String) -> Result<(), Step> {
    let rel = RelPath::new(&format!("{dir}/{name}")).map_err(|err| Step::Fail(format!("image file {name:?}: {err}")))?;
    ch.send_msg(&Request::PutSymlink { id: id.clone(), rel, target }).await?;
    super::expect_ack(ch.recv_msg().await?, &format!("link {name}"))
}

/// Sends `<root>/<name>` (files and CRIU's `parent` link); returns the bytes sent. File data goes
/// over `rdma` when given, else as frames on the channel.
pub(super) async fn send_dir(ch: &mut Channel<TcpStream>, rdma: Option<&RdmaSender>, id: &MigrationId, root: &Path, name: &str) -> Result<u64, Step> {
    let mut total = 0u64;
    for entry in image_entries(&root.join(name))? {
        let (fname, path, len) = match entry {
            Entry::Link { name: link, target } => {
                put_link(ch, id, name, &link, target).await?;
                continue;
            }
            Entry::File { name, path, len } => (name, path, len),
        };
        let rel = RelPath::new(&format!("{name}/{fname}")).map_err(|err| Step::Fail(format!("image file {fname:?}: {err}")))?;
        let mut f = tokio::fs::File::open(&path).await.map_err(|err| Step::Fail(format!("{fname}: {err}")))?;
        ch.send_msg(&Request::PutFile { id: id.clone(), rel, len, via_rdma: rdma.is_some() }).await?;
        let mut sum = DataSum::for_sending(ch, rdma.is_some());
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(CHUNK);
            f.read_exact(&mut buf[..want]).await.map_err(|err| Step::Fail(format!("{fname}: {err}")))?;
            send_chunk(ch, rdma, &buf[..want], &mut sum).await?;
            left -= want as u64;
        }
        ch.send_raw(&sum.finish()).await.map_err(|err| Step::Fail(format!("destination: {err}")))?;
        match ch.recv_msg().await? {
            Reply::Ack => {}
            Reply::Failed(err) => return Err(Step::Fail(format!("destination refused {fname}: {err}"))),
            other => return Err(Step::Fail(format!("{fname}: unexpected reply {other:?}"))),
        }
        total += len;
    }
    Ok(total)
}

async fn send_chunk(ch: &mut Channel<TcpStream>, rdma: Option<&RdmaSender>, data: &[u8], sum: &mut DataSum) -> Result<(), Step> {
    match rdma {
        Some(r) => {
            sum.update(data, None);
            r.send(data.to_vec()).await.map_err(|e| Step::Fail(format!("{e}")))
        }
        None => {
            let tag = ch.send_raw(data).await.map_err(|e| Step::Fail(format!("destination: {e}")))?;
            sum.update(data, Some(&tag));
            Ok(())
        }
    }
}

/// Sends `len` bytes of probe data over the chosen path; returns the seconds it took, reply
/// included (so the data really arrived).
pub(super) async fn probe(ch: &mut Channel<TcpStream>, rdma: Option<&RdmaSender>, len: u64) -> Result<f64, Step> {
    let t = std::time::Instant::now();
    ch.send_msg(&Request::Probe { len, via_rdma: rdma.is_some() }).await?;
    let buf = vec![0x5au8; CHUNK];
    let mut sum = DataSum::for_sending(ch, rdma.is_some());
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        send_chunk(ch, rdma, &buf[..want], &mut sum).await?;
        left -= want as u64;
    }
    ch.send_raw(&sum.finish()).await.map_err(|err| Step::Fail(format!("destination: {err}")))?;
    super::expect_ack(ch.recv_msg().await?, "probe")?;
    Ok(t.elapsed().as_secs_f64())
}

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
            run(c, "scp").await.map_err(|e| Step::Fail(format!("scp to {}: {e}", self.host)))?;
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
