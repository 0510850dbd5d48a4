//! The control channel to the destination agent: connecting, one request and its reply, and the
//! fresh connections a failing migration opens to ask what became of it or to abort it there.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tracing::warn;

use super::{MigrateOptions, Step};
use rdmig_proto::msg::{MigState, MigrationId, MsgError, Reply, Request};
use rdmig_proto::wire::Channel;

pub(super) async fn connect(o: &MigrateOptions) -> Result<Channel<TcpStream>, String> {
    let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(o.to))
        .await
        .map_err(|_| format!("cannot reach the destination agent at {}: timed out", o.to))?
        .map_err(|e| format!("cannot reach the destination agent at {}: {e}", o.to))?;
    sock.set_nodelay(true).ok();
    Channel::client(sock, &o.secret).await.map_err(|e| format!("destination agent at {}: {e}", o.to))
}

pub(super) async fn call(ch: &mut Channel<TcpStream>, req: &Request) -> Result<Reply, MsgError> {
    ch.send_msg(req).await?;
    ch.recv_msg().await
}

pub(super) fn expect_ack(r: Reply, what: &str) -> Result<(), Step> {
    match r {
        Reply::Ack => Ok(()),
        Reply::Failed(e) => Err(Step::Fail(format!("{what}: {e}"))),
        other => Err(Step::Fail(format!("{what}: unexpected reply {other:?}"))),
    }
}

/// Asks the destination (on a fresh connection) what became of a migration whose restore reply
/// was lost.
pub(super) async fn ask_state(o: &MigrateOptions, id: &MigrationId) -> Option<MigState> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(mut ch) = connect(o).await {
            if let Ok(Reply::State(s)) = call(&mut ch, &Request::Status { id: id.clone() }).await {
                return Some(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Tells the destination (on a fresh connection) to drop the migration: its images, and any copy
/// it restored.
pub(super) async fn abort_remote(o: &MigrateOptions, id: &MigrationId) {
    if let Ok(mut ch) = connect(o).await {
        if let Err(e) = call(&mut ch, &Request::Abort { id: id.clone() }).await {
            warn!("abort at the destination: {e}");
        }
    }
}
