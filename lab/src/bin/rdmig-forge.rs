//! rdmig-forge: a source that lies, for the lab's security scenarios (issue 17).
//!
//! RDMA is outside the control channel's TLS: whoever can put RoCE packets on the wire can write
//! into an agent's receive ring. rdmig-forge plays that party on real rxe. It opens a migration
//! at an agent exactly as `rdmig migrate` does (mutual TLS with a node's certificate, `Begin`,
//! `RdmaSetup`), then sends one image file over the RDMA data path with its chunks sealed under
//! a key of its choice:
//!
//! - `--key session`: the key both ends export from their TLS session, as `rdmig migrate` does.
//!   The control: the same path delivers the file when nothing is forged.
//! - `--key forged`: any other key, as an injected chunk has. The agent must refuse the chunk
//!   before any of its bytes reach a file, and drop the data path.
//!
//! Prints one JSON line on stdout: the agent's answer, and the SHA-256 of the file it sent (for
//! the lab to compare with what the agent kept).
//!
//!   rdmig-forge --to 10.99.0.3:7800 --to-name node2 --tls-dir /mnt/node/tls \
//!       --rdma-addr 10.0.1.11 --id m-forged --key forged

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use rdmig::transport::rdma::{ChunkKey, ChunkProtection, RdmaSender, SLOT};
use rdmig::transport::DataSum;
use rdmig_proto::msg::{MigrationId, RelPath, Reply, Request};
use rdmig_proto::tls::Identity;
use rdmig_proto::wire::{Channel, Limits};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum KeyChoice {
    /// The data path's key from the TLS session (what an honest source uses).
    Session,
    /// Another key (what a party without the session's secrets has).
    Forged,
}

#[derive(Parser)]
#[command(name = "rdmig-forge", version, about = "Sends an image file over an agent's RDMA data path, sealed with the session's key or a forged one")]
struct Args {
    /// The agent's control address.
    #[arg(long)]
    to: SocketAddr,
    /// The node name the agent's certificate must carry.
    #[arg(long)]
    to_name: String,
    /// This node's certificate directory (`rdmig ca issue` output).
    #[arg(long)]
    tls_dir: PathBuf,
    /// This node's RDMA (overlay) address.
    #[arg(long)]
    rdma_addr: Ipv4Addr,
    #[arg(long, default_value = "rxe0")]
    device: String,
    /// The migration to open at the agent (a new one).
    #[arg(long)]
    id: String,
    #[arg(long, value_enum)]
    key: KeyChoice,
    /// Encrypt the chunks (as `rdmig migrate --encrypt`); else they are authenticated only.
    #[arg(long)]
    encrypt: bool,
    /// The file's size in bytes (a few 1 MiB chunks by default).
    #[arg(long, default_value_t = 3 * SLOT as u64 / 2)]
    len: u64,
    /// The file's path in the migration's directory.
    #[arg(long, default_value = "pages-1.img")]
    file: String,
}

/// Byte `i` of the file: not all zeros, not page-periodic.
fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// What the agent made of the file.
enum Answer {
    Reply(Reply),
    /// The agent hung up (or said nothing within the wait): it gave up on the connection.
    Gone(String),
}

async fn ask(ch: &mut Channel<TcpStream>, req: &Request) -> Result<Reply> {
    ch.send_msg(req).await?;
    Ok(ch.recv_msg::<Reply>().await?)
}

async fn run(a: &Args, data: &[u8]) -> Result<Answer> {
    let tls = Identity::load(&a.tls_dir)?.client(Some(&a.to_name))?;
    let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(a.to)).await.context("connect: timed out")??;
    let mut ch = Channel::client_within(sock, &tls, tls.named(&a.to_name)?, Limits::idle(Duration::from_secs(60))).await?;
    let id = MigrationId::new(&a.id)?;
    match ask(&mut ch, &Request::Begin { id: id.clone(), pid: std::process::id() as i32 }).await? {
        Reply::Ack => {}
        other => bail!("Begin: {other:?}"),
    }
    let gid = rdmig_rxe::gid_index(&a.device, a.rdma_addr)?;
    let mut rdma = RdmaSender::open(&a.device, gid, 1).await?;
    // The agent exports the data path's key as it is asked; this end does so too, so that the
    // streams after it are keyed alike on both ends whichever key the chunks get.
    let session = ch.next_stream_key();
    let key = match a.key {
        KeyChoice::Session => session,
        KeyChoice::Forged => session.map(|b| !b),
    };
    let protection = if a.encrypt { ChunkProtection::Encrypted } else { ChunkProtection::Authenticated };
    match ask(&mut ch, &Request::RdmaSetup { eps: rdma.eps.clone(), protection }).await? {
        Reply::RdmaReady(info) => rdma.connect(info, ChunkKey::new(&key, protection))?,
        other => bail!("RdmaSetup: {other:?}"),
    }
    ch.send_msg(&Request::PutFile { id, rel: RelPath::new(&a.file)?, len: a.len, via_rdma: true }).await?;
    let mut sum = DataSum::for_sending(&ch);
    for chunk in data.chunks(SLOT) {
        sum.update(chunk);
        if let Err(e) = rdma.send(chunk.to_vec()).await {
            return Ok(Answer::Gone(format!("RDMA stream: {e}")));
        }
    }
    // The end of the file travels over TLS, as `rdmig migrate` sends it; the agent answers once
    // every chunk has arrived and opened, or hangs up at the first that does not.
    if let Err(e) = ch.send_raw(&sum.finish()).await {
        return Ok(Answer::Gone(e.to_string()));
    }
    Ok(match tokio::time::timeout(Duration::from_secs(60), ch.recv_msg::<Reply>()).await {
        Ok(Ok(r)) => Answer::Reply(r),
        Ok(Err(e)) => Answer::Gone(e.to_string()),
        Err(_) => Answer::Gone("no answer within 60 s".into()),
    })
}

fn main() -> Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let data: Vec<u8> = (0..a.len).map(pattern_byte).collect();
    let answer = rt.block_on(run(&a, &data))?;
    let (answer, detail) = match answer {
        Answer::Reply(Reply::Ack) => ("ack", String::new()),
        Answer::Reply(Reply::Failed(e)) => ("failed", e),
        Answer::Reply(other) => ("unexpected", format!("{other:?}")),
        Answer::Gone(e) => ("gone", e),
    };
    let sha256 = format!("{:x}", Sha256::digest(&data));
    println!("{}", json!({ "key": format!("{:?}", a.key).to_lowercase(), "answer": answer, "detail": detail, "sha256": sha256 }));
    Ok(())
}
