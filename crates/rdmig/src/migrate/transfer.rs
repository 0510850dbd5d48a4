//! The transfer stage, and how any image directory reaches the destination: files over the
//! authenticated channel (data as frames, or over the RDMA lanes), CRIU's `parent` link as a
//! message, or pages streamed to the destination's page server while CRIU dumps. (`scp` copies
//! them instead with `--transport scp`.)

use std::path::Path;
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::info;

use super::remote::expect_ack;
use super::{Run, Step};
use crate::criu::{self, DumpSpec};
use crate::timeline::{attrs, Phase};
use crate::transport::rdma::RdmaSender;
use crate::transport::DataSum;
use rdmig_proto::msg::{MigrationId, RelPath, Reply, Request, CHUNK};
use rdmig_proto::wire::Channel;

/// What an image directory holds to send, in name order: files (our own logs excepted: they
/// stay here) and CRIU's `parent` link.
pub(super) enum Entry {
    File { name: String, path: std::path::PathBuf, len: u64 },
    Link { name: String, target: String },
}

pub(super) fn image_entries(dir: &Path) -> Result<Vec<Entry>, Step> {
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
pub(super) async fn put_link(ch: &mut Channel<TcpStream>, id: &MigrationId, dir: &str, name: &str, target: String) -> Result<(), Step> {
    let rel = RelPath::new(&format!("{dir}/{name}")).map_err(|err| Step::Fail(format!("image file {name:?}: {err}")))?;
    ch.send_msg(&Request::PutSymlink { id: id.clone(), rel, target }).await?;
    expect_ack(ch.recv_msg().await?, &format!("link {name}"))
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
        let mut sum = DataSum::for_sending(ch);
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
            sum.update(data);
            // The lanes give up on a silent receiver by themselves; the deadline holds too.
            let sent = r.send(data.to_vec());
            match ch.limits().deadline {
                Some(at) => tokio::time::timeout_at(at, sent).await.map_err(|_| Step::Fail("RDMA stream: the deadline passed".into()))?,
                None => sent.await,
            }
            .map_err(|e| Step::Fail(format!("{e}")))
        }
        None => {
            ch.send_raw(data).await.map_err(|e| Step::Fail(format!("destination: {e}")))?;
            sum.update(data);
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
    let mut sum = DataSum::for_sending(ch);
    let mut left = len;
    while left > 0 {
        let want = (left as usize).min(CHUNK);
        send_chunk(ch, rdma, &buf[..want], &mut sum).await?;
        left -= want as u64;
    }
    ch.send_raw(&sum.finish()).await.map_err(|err| Step::Fail(format!("destination: {err}")))?;
    expect_ack(ch.recv_msg().await?, "probe")?;
    Ok(t.elapsed().as_secs_f64())
}

impl Run<'_> {
    /// The stage: the final images go to the destination (those not already streamed).
    pub(super) async fn transfer(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        self.rec.start(Phase::Transfer);
        let t = Instant::now();
        let sent = self.send_dir(ch, "final").await?;
        self.rec.end_with(Phase::Transfer, attrs([("bytes", sent)]));
        self.say(&format!("final images sent in {:.0} ms", t.elapsed().as_secs_f64() * 1e3));
        Ok(())
    }

    pub(super) async fn send_dir(&mut self, ch: &mut Channel<TcpStream>, name: &str) -> Result<u64, Step> {
        let sent = match &self.scp {
            Some(scp) => scp.send_dir(ch, &self.id, &self.dir, name).await?,
            None => send_dir(ch, self.rdma.as_ref(), &self.id, &self.dir, name).await?,
        };
        self.bytes_total += sent;
        Ok(sent)
    }

    /// Pages go through CRIU's page stream to the destination's page server while CRIU dumps,
    /// rather than into local images sent afterwards (the scp baseline copies files).
    pub(super) fn streams_pages(&self) -> bool {
        self.o.page_stream && self.scp.is_none()
    }

    /// One dump step (`final_dump` or a pre-dump) with its pages streamed into the destination's
    /// `name` directory; returns the bytes of page images written there.
    pub(super) async fn dump_streamed(
        &mut self,
        ch: &mut Channel<TcpStream>,
        name: &str,
        parent: Option<&str>,
        spec: &DumpSpec,
        final_dump: bool,
    ) -> Result<u64, Step> {
        let rel = RelPath::new(name).map_err(|e| Step::Fail(format!("image directory {name:?}: {e}")))?;
        let parent = parent.map(RelPath::new).transpose().map_err(|e| Step::Fail(format!("parent directory: {e}")))?;
        let via_rdma = self.rdma.is_some();
        ch.send_msg(&Request::PageStream { id: self.id.clone(), rel, parent, via_rdma }).await?;
        expect_ack(ch.recv_msg().await?, "page stream")?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| Step::Fail(format!("socket pair: {e}")))?;
        for end in [&ours, &theirs] {
            crate::transport::pagestream::enlarge_buffers(std::os::fd::AsRawFd::as_raw_fd(end));
        }
        let ours = ours.set_nonblocking(true).and_then(|_| tokio::net::UnixStream::from_std(ours)).map_err(|e| Step::Fail(format!("socket pair: {e}")))?;
        let dump = async {
            if final_dump {
                criu::dump_leave_stopped_streamed(spec, theirs.into()).await
            } else {
                criu::pre_dump_streamed(spec, theirs.into()).await
            }
        };
        let relay = crate::transport::pagestream::source(ours, ch, self.rdma.as_ref());
        let (dumped, relayed) = tokio::join!(dump, relay);
        // The destination always answers once its page server is done (the channel stays in step).
        let reply = ch.recv_msg::<Reply>().await;
        // A broken stream is the cause when both failed (CRIU then only saw its socket close).
        let sent = match (relayed, dumped) {
            (Err(e), Err(c)) => return Err(Step::Fail(format!("page stream: {e} (and so: {c})"))),
            (Err(e), Ok(())) => return Err(Step::Fail(format!("page stream: {e}"))),
            (Ok(_), Err(c)) => return Err(Step::Fail(c.to_string())),
            (Ok(n), Ok(())) => n,
        };
        match reply? {
            Reply::Streamed { page_bytes } => {
                info!(dir = name, stream_bytes = sent, page_bytes, "pages streamed");
                self.bytes_total += page_bytes;
                Ok(page_bytes)
            }
            Reply::Failed(e) => Err(Step::Fail(format!("destination: {e}"))),
            other => Err(Step::Fail(format!("destination: unexpected reply {other:?}"))),
        }
    }
}
