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
    send_link(ch, id, dir, name, target).await?;
    expect_ack(ch.recv_msg().await?, &format!("link {name}"))
}

/// Asks for link `<dir>/<name>`; its answer is read by the caller.
async fn send_link(ch: &mut Channel<TcpStream>, id: &MigrationId, dir: &str, name: &str, target: String) -> Result<(), Step> {
    let rel = RelPath::new(&format!("{dir}/{name}")).map_err(|err| Step::Fail(format!("image file {name:?}: {err}")))?;
    ch.send_msg(&Request::PutSymlink { id: id.clone(), rel, target }).await?;
    Ok(())
}

/// At most this many files and links of a directory are sent before their answers are read:
/// the destination answers each in order, and the answers wait in the socket's buffers, which
/// this keeps far from full.
const IN_FLIGHT: usize = 16;

/// Sends `<root>/<name>` (files and CRIU's `parent` link); returns the bytes sent. File data goes
/// over `rdma` when given, else as frames on the channel. The next file is sent while the
/// destination still writes the last one: a dump's directory holds some 20 files, and waiting
/// for each answer before sending the next put one round trip per file into the blackout. The
/// destination reads every file's data whatever it answers, so a refusal does not upset the
/// ones after it: the first refusal, in order, is the error, and no more files are sent once it
/// is read, but the answers still owed are read before it is returned, so that what the caller
/// sends next (an abort) gets its own answer.
pub(super) async fn send_dir(ch: &mut Channel<TcpStream>, rdma: Option<&RdmaSender>, id: &MigrationId, root: &Path, name: &str) -> Result<u64, Step> {
    let mut total = 0u64;
    // What each unanswered request was, oldest first.
    let mut waiting: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for entry in image_entries(&root.join(name))? {
        if waiting.len() >= IN_FLIGHT {
            if let Err(refused) = answer(ch, waiting.pop_front().expect("not empty")).await? {
                return Err(drained(ch, waiting, refused).await);
            }
        }
        let (fname, path, len) = match entry {
            Entry::Link { name: link, target } => {
                send_link(ch, id, name, &link, target).await?;
                waiting.push_back(format!("link {link}"));
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
        waiting.push_back(fname);
        total += len;
    }
    while let Some(what) = waiting.pop_front() {
        if let Err(refused) = answer(ch, what).await? {
            return Err(drained(ch, waiting, refused).await);
        }
    }
    Ok(total)
}

/// Reads the destination's answer to the file or link `what`: `Err` when the channel failed,
/// `Ok(Err)` when the destination refused it.
async fn answer(ch: &mut Channel<TcpStream>, what: String) -> Result<Result<(), Step>, Step> {
    Ok(match ch.recv_msg().await? {
        Reply::Ack => Ok(()),
        Reply::Failed(err) => Err(Step::Fail(format!("destination refused {what}: {err}"))),
        other => Err(Step::Fail(format!("{what}: unexpected reply {other:?}"))),
    })
}

/// After `refused`: reads the answers still owed for `waiting`; returns `refused`, or how the
/// channel failed meanwhile.
async fn drained(ch: &mut Channel<TcpStream>, mut waiting: std::collections::VecDeque<String>, refused: Step) -> Step {
    while let Some(what) = waiting.pop_front() {
        if let Err(broken) = answer(ch, what).await {
            return broken;
        }
    }
    refused
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tests::{agent_at, dial};
    use rdmig_proto::tls::testing::TestCa;

    /// A directory of `n` files of assorted sizes (empty, one chunk and more) and CRIU's parent
    /// link; their names and contents.
    fn image_dir(root: &Path, name: &str, n: usize) -> Vec<(String, Vec<u8>)> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("../r0", dir.join("parent")).unwrap();
        (0..n)
            .map(|i| {
                let len = [0, 1, 4096, CHUNK, CHUNK + 1, 3 * CHUNK / 2][i % 6];
                let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                let fname = format!("f{i:03}.img");
                std::fs::write(dir.join(&fname), &data).unwrap();
                (fname, data)
            })
            .collect()
    }

    #[tokio::test]
    async fn files_go_in_flight_and_a_refusal_leaves_the_channel_in_step() {
        let ca = TestCa::new();
        let work = tempfile::tempdir().unwrap();
        let to = agent_at(&ca, 8, work.path(), None).await;
        let mut ch = dial(&ca, to).await.unwrap();
        let id = MigrationId::new("m-in-flight").unwrap();
        ch.send_msg(&Request::Begin { id: id.clone(), pid: 4242 }).await.unwrap();
        expect_ack(ch.recv_msg().await.unwrap(), "begin").unwrap();
        let src = tempfile::tempdir().unwrap();
        // More files than may be in flight at once.
        let files = image_dir(src.path(), "r1", 3 * IN_FLIGHT + 1);
        let sent = send_dir(&mut ch, None, &id, src.path(), "r1").await.unwrap();
        assert_eq!(sent, files.iter().map(|f| f.1.len() as u64).sum::<u64>());
        let got = work.path().join("m-in-flight/r1");
        for (name, data) in &files {
            assert_eq!(&std::fs::read(got.join(name)).unwrap(), data, "{name}");
        }
        assert_eq!(std::fs::read_link(got.join("parent")).unwrap(), Path::new("../r0"));
        // Sent again, every file is refused (it exists): the first refusal, in order, is the
        // error, and every answer owed is read, so the next request gets its own answer.
        let e = send_dir(&mut ch, None, &id, src.path(), "r1").await.unwrap_err();
        assert!(format!("{e:?}").contains("destination refused f000.img"), "{e:?}");
        ch.send_msg(&Request::Ping).await.unwrap();
        expect_ack(ch.recv_msg().await.unwrap(), "ping").unwrap();
        let more = image_dir(src.path(), "r2", 5);
        send_dir(&mut ch, None, &id, src.path(), "r2").await.unwrap();
        assert_eq!(std::fs::read(work.path().join("m-in-flight/r2/f004.img")).unwrap(), more[4].1);
    }
}
