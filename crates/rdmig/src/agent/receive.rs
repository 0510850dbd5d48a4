//! Requests that bring a migration's images here: the RDMA data path (`RdmaSetup`), files and
//! links (`PutFile`, `PutSymlink`), transport probes (`Probe`), CRIU's page stream into a page
//! server (`PageStream`), and what `scp` delivered (`ScpDir`, `ScpDone`). Each file or stream is
//! checked end to end (`DataSum`) as it arrives, and sealed (`seal`) once it is on disk.

use std::path::Path;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::info;

use super::seal::{Sealing, Seals};
use super::{dir_of, AgentConfig, Table};
use crate::criu;
use crate::transport::rdma::{ChunkKey, ChunkProtection, RdmaReceiver};
use crate::transport::DataSum;
use rdmig_confine::Confined;
use rdmig_proto::msg::{self, Endpoint, MigrationId, RelPath, Reply};
use rdmig_proto::wire::Channel;

/// Opens this connection's RDMA data path towards the sender's QPs (one ring per lane); its
/// chunks are opened with a key of its own from the TLS session (the source derives it as it
/// asks, so this end does so first, whatever the answer).
pub(super) async fn rdma_setup(
    cfg: &AgentConfig,
    ch: &Channel<TcpStream>,
    rdma: &mut Option<RdmaReceiver>,
    eps: &[Endpoint],
    protection: ChunkProtection,
) -> Reply {
    let key = ChunkKey::new(&ch.next_stream_key(), protection);
    if let Err(e) = cfg.policy.admits_rdma(protection) {
        return Reply::Failed(e);
    }
    let Some(addr) = cfg.rdma_addr else {
        return Reply::Failed("this agent has no RDMA address (--rdma-addr): TCP only".into());
    };
    let gid = match rdmig_rxe::gid_index(&cfg.rdma_device, addr) {
        Ok(g) => g,
        Err(e) => return Reply::Failed(e.to_string()),
    };
    *rdma = None;
    match RdmaReceiver::start(&cfg.rdma_device, gid, eps, key).await {
        Ok(r) => {
            let info = r.info.clone();
            *rdma = Some(r);
            Reply::RdmaReady(info)
        }
        Err(e) => Reply::Failed(e.to_string()),
    }
}

/// One image file: `len` bytes, then its check; written under the migration's directory.
pub(super) async fn put_file(
    ch: &mut Channel<TcpStream>,
    rdma: &mut Option<RdmaReceiver>,
    table: &Table,
    id: &MigrationId,
    rel: &RelPath,
    len: u64,
    via_rdma: bool,
) -> Result<Reply, msg::MsgError> {
    // Beneath the migration's directory only (see `rdmig_confine`).
    let dir = dir_of(table, id).and_then(|d| Confined::open(&d).map_err(|e| e.to_string()));
    let mut file = match &dir {
        Ok(c) => c.create_new(rel.as_str()).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    let mut sealing = Sealing::default();
    let r = receive_data(ch, rdma, via_rdma, len, |chunk| {
        use std::io::Write;
        sealing.update(chunk);
        match &mut file {
            Ok(f) => f.write_all(chunk).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        }
    })
    .await;
    // Whatever ended the file early (a chunk that failed authentication, a broken connection,
    // a bad check) leaves no part of it behind.
    let drop_file = || {
        if let (Ok(c), Ok(_)) = (&dir, &file) {
            let _ = c.remove(rel.as_str());
        }
    };
    Ok(match r {
        Err(e) => {
            drop_file();
            return Err(e);
        }
        Ok(Ok(())) => match file.as_ref().map_err(|e| e.clone()).and_then(|f| sealing.finish(f).map_err(|e| e.to_string())) {
            Ok(sealed) => {
                seal(table, id, |s| s.add(rel.as_str(), sealed));
                Reply::Ack
            }
            Err(e) => Reply::Failed(format!("{}: sealing: {e}", rel.as_str())),
        },
        Ok(Err(e)) => {
            drop_file();
            Reply::Failed(format!("{}: {e}", rel.as_str()))
        }
    })
}

/// Throw-away data, checked as a file is: to measure a transport.
pub(super) async fn probe(ch: &mut Channel<TcpStream>, rdma: &mut Option<RdmaReceiver>, len: u64, via_rdma: bool) -> Result<Reply, msg::MsgError> {
    Ok(match receive_data(ch, rdma, via_rdma, len, |_| Ok(())).await? {
        Ok(()) => Reply::Ack,
        Err(e) => Reply::Failed(e),
    })
}

/// CRIU's `parent` link of an image directory.
pub(super) fn put_symlink(table: &Table, id: &MigrationId, rel: &RelPath, target: &str) -> Reply {
    // Made beneath the migration's directory; an existing link of the same target is the page
    // server's (a streamed pre-copy round).
    match dir_of(table, id).and_then(|d| Confined::open(&d).map_err(|e| e.to_string())) {
        Ok(c) => match c.symlink(target, rel.as_str()) {
            Ok(_) => Reply::Ack,
            Err(e) => Reply::Failed(e.to_string()),
        },
        Err(e) => Reply::Failed(e),
    }
}

/// CRIU's page stream of one dump, relayed into `criu page-server` writing image directory
/// `rel`: `Ack` once the server runs, then the stream, then `Streamed` or `Failed`.
pub(super) async fn page_stream(
    ch: &mut Channel<TcpStream>,
    rdma: &mut Option<RdmaReceiver>,
    table: &Table,
    id: &MigrationId,
    rel: &RelPath,
    parent: Option<&RelPath>,
    via_rdma: bool,
) -> Result<Reply, msg::MsgError> {
    if via_rdma && rdma.is_none() {
        return Ok(Reply::Failed("page stream over RDMA, but no RDMA path was set up".into()));
    }
    // A real directory beneath the migration's (no link on the way) for the page server.
    let d = match dir_of(table, id).and_then(|d| Confined::open(&d).and_then(|c| c.dir(rel.as_str())).map_err(|e| e.to_string())) {
        Ok(d) => d,
        Err(e) => return Ok(Reply::Failed(e)),
    };
    let (ours, theirs) = match std::os::unix::net::UnixStream::pair().and_then(|(a, b)| a.set_nonblocking(true).map(|_| (a, b))) {
        Ok(p) => p,
        Err(e) => return Ok(Reply::Failed(format!("socket pair: {e}"))),
    };
    for end in [&ours, &theirs] {
        crate::transport::pagestream::enlarge_buffers(std::os::fd::AsRawFd::as_raw_fd(end));
    }
    let parent_arg = parent.map(|p| format!("../{}", p.as_str()));
    let mut server = match criu::page_server(&d, parent_arg.as_deref(), theirs.into()) {
        Ok(c) => c,
        Err(e) => return Ok(Reply::Failed(e.to_string())),
    };
    let ours = match tokio::net::UnixStream::from_std(ours) {
        Ok(s) => s,
        Err(e) => return Ok(Reply::Failed(format!("socket pair: {e}"))),
    };
    ch.send_msg(&Reply::Ack).await?;
    info!(%id, dir = rel.as_str(), via_rdma, "page stream begins");
    let relayed = crate::transport::pagestream::destination(ours, ch, if via_rdma { rdma.as_mut() } else { None }, || {
        let _ = server.start_kill();
    })
    .await;
    let served = criu::page_server_wait(&d, server, Duration::from_secs(60)).await;
    Ok(match (relayed, served) {
        (Ok(n), Ok(())) => {
            // What the page server wrote is sealed now (its identity; nothing is read).
            if let Err(e) = seal_written(table, id, rel) {
                return Ok(Reply::Failed(format!("sealing {}: {e}", rel.as_str())));
            }
            let page_bytes = criu::page_bytes(&d);
            info!(%id, dir = rel.as_str(), stream_bytes = n, page_bytes, "page stream complete");
            Reply::Streamed { page_bytes }
        }
        (Err(e), _) => Reply::Failed(format!("page stream into {}: {e}", rel.as_str())),
        (Ok(_), Err(e)) => Reply::Failed(format!("page stream into {}: {e}", rel.as_str())),
    })
}

/// Adds to migration `id`'s seals (gone meanwhile: nothing to seal for).
fn seal(table: &Table, id: &MigrationId, add: impl FnOnce(&mut Seals)) {
    if let Some(m) = table.lock().expect("table lock").get_mut(id.as_str()) {
        add(&mut m.seals);
    }
}

/// Seals what a tool wrote into directory `rel` by path (CRIU's page server, scp).
fn seal_written(table: &Table, id: &MigrationId, rel: &RelPath) -> Result<(), String> {
    let c = dir_of(table, id).and_then(|d| Confined::open(&d).map_err(|e| e.to_string()))?;
    // Files that arrived there earlier keep their first seal.
    let mut fresh = Seals::default();
    fresh.seal_dir(&c, rel.as_str()).map_err(|e| e.to_string())?;
    seal(table, id, |s| s.merge(fresh));
    Ok(())
}

/// `--transport scp`: where the source may copy image directory `rel` to.
pub(super) fn scp_dir(table: &Table, id: &MigrationId, rel: &RelPath) -> Reply {
    match dir_of(table, id).and_then(|d| Confined::open(&d).and_then(|c| c.dir(rel.as_str())).and_then(|p| p.canonicalize()).map_err(|e| e.to_string())) {
        Ok(abs) => Reply::Dir(abs.to_string_lossy().into_owned()),
        Err(e) => Reply::Failed(e),
    }
}

/// `--transport scp`: did exactly `files` arrive in `rel`?
pub(super) fn scp_done(table: &Table, id: &MigrationId, rel: &RelPath, files: &[msg::ScpFile]) -> Reply {
    match dir_of(table, id).and_then(|d| Confined::open(&d).and_then(|c| c.dir(rel.as_str())).map_err(|e| e.to_string())) {
        Ok(d) => match check_scp_delivery(&d, files).and_then(|()| seal_written(table, id, rel)) {
            Ok(()) => Reply::Ack,
            Err(e) => Reply::Failed(format!("{}: {e}", rel.as_str())),
        },
        Err(e) => Reply::Failed(e),
    }
}

/// Reads `len` bytes of a file or probe from where they travel, feeding `sink` (which may fail:
/// the data is consumed anyway, so the stream stays in step), then the end-to-end check
/// (`DataSum`). Returns whether it matched.
async fn receive_data(
    ch: &mut Channel<TcpStream>,
    rdma: &mut Option<RdmaReceiver>,
    via_rdma: bool,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<Result<(), String>, msg::MsgError> {
    let mut sum = DataSum::for_receiving(ch);
    let mut got = 0u64;
    let mut sink_err: Option<String> = None;
    while got < len {
        let owned;
        let chunk = if via_rdma {
            let r = rdma.as_mut().ok_or_else(|| msg::MsgError::Decode("data over RDMA, but no RDMA path was set up".into()))?;
            owned = match tokio::time::timeout(Duration::from_secs(30), r.recv()).await {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => return Err(msg::MsgError::Stream(e.to_string())),
                Ok(None) | Err(_) => return Err(msg::MsgError::Stream("RDMA data path stalled or closed".into())),
            };
            &owned[..]
        } else {
            ch.recv_frame().await?
        };
        got += chunk.len() as u64;
        if got > len {
            return Err(msg::MsgError::Stream(format!("{} bytes announced, more sent", len)));
        }
        sum.update(chunk);
        if sink_err.is_none() {
            if let Err(e) = sink(chunk) {
                sink_err = Some(e);
            }
        }
    }
    let trailer = ch.recv_raw().await?;
    Ok(match sink_err {
        Some(e) => Err(e),
        None if !sum.matches(&trailer) => Err("checksum mismatch".into()),
        None => Ok(()),
    })
}

/// What scp delivered into `dir` is exactly `files`: each one a regular file of its length, and
/// nothing else but CRIU's `parent` link (sent over the channel).
fn check_scp_delivery(dir: &Path, files: &[msg::ScpFile]) -> Result<(), String> {
    let mut want: std::collections::HashMap<&str, u64> = files.iter().map(|f| (f.name.as_str(), f.len)).collect();
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path()).map_err(|err| format!("{name}: {err}"))?;
        if meta.file_type().is_symlink() && name == "parent" {
            continue;
        }
        match want.remove(name.as_str()) {
            Some(len) if meta.file_type().is_file() && meta.len() == len => {}
            Some(len) => return Err(format!("{name}: {} bytes arrived, {len} were sent", meta.len())),
            None => return Err(format!("{name}: not part of the image")),
        }
    }
    match want.keys().next() {
        Some(missing) => Err(format!("{missing}: did not arrive")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_delivery_must_match_the_list_exactly() {
        let d = std::env::temp_dir().join(format!("rdmig-scp-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("pages-1.img"), vec![0u8; 8192]).unwrap();
        std::fs::write(d.join("core-7.img"), b"core").unwrap();
        std::os::unix::fs::symlink("../pre-1", d.join("parent")).unwrap();
        let f = |name: &str, len| msg::ScpFile { name: name.into(), len };
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8192), f("core-7.img", 4)]).is_ok());
        // Short, missing, unexpected.
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8193), f("core-7.img", 4)]).unwrap_err().contains("8192 bytes arrived"));
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8192), f("core-7.img", 4), f("mm-7.img", 1)]).unwrap_err().contains("did not arrive"));
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8192)]).unwrap_err().contains("not part of the image"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
