//! Sending a CRIU image directory to the destination agent over the authenticated channel.
//! (Issue 7 puts the page stream on RDMA; this is the TCP path every migration can fall back to.)

use std::path::Path;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::Step;
use crate::transport::rdma::RdmaSender;
use crate::transport::DataSum;
use crate::agent::msg::{MigrationId, RelPath, Reply, Request, CHUNK};
use crate::agent::wire::Channel;

/// Sends `<root>/<name>` (files and CRIU's `parent` link); returns the bytes sent. File data goes
/// over `rdma` when given, else as frames on the channel.
pub(super) async fn send_dir(ch: &mut Channel<TcpStream>, rdma: Option<&RdmaSender>, id: &MigrationId, root: &Path, name: &str) -> Result<u64, Step> {
    let dir = root.join(name);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Step::Fail(format!("{}: {e}", dir.display())))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    let mut total = 0u64;
    for e in entries {
        let fname = e.file_name().to_string_lossy().into_owned();
        // Our own logs stay here; they are not part of the image.
        if fname.ends_with(".log") {
            continue;
        }
        let rel = RelPath::new(&format!("{name}/{fname}")).map_err(|err| Step::Fail(format!("image file {fname:?}: {err}")))?;
        let ft = e.file_type().map_err(|err| Step::Fail(format!("{fname}: {err}")))?;
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).map_err(|err| Step::Fail(format!("{fname}: {err}")))?;
            let req = Request::PutSymlink { id: id.clone(), rel, target: target.to_string_lossy().into_owned() };
            ch.send_msg(&req).await?;
            super::expect_ack(ch.recv_msg().await?, &format!("link {fname}"))?;
            continue;
        }
        if !ft.is_file() {
            return Err(Step::Fail(format!("unexpected entry {fname} in {}", dir.display())));
        }
        let mut f = tokio::fs::File::open(e.path()).await.map_err(|err| Step::Fail(format!("{fname}: {err}")))?;
        let len = f.metadata().await.map_err(|err| Step::Fail(format!("{fname}: {err}")))?.len();
        ch.send_msg(&Request::PutFile { id: id.clone(), rel, len, via_rdma: rdma.is_some() }).await?;
        let mut sum = DataSum::new(rdma.is_some());
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
    let mut sum = DataSum::new(rdma.is_some());
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
