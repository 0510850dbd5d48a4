//! What the nodes' journals and agents say, gathered from their agents: the ordered event
//! stream of `rdmig events` and the inventory of `rdmig status`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::journal::{NodeJournal, NodeName};
use crate::migrate::remote::{connect, IO_WAIT};
use rdmig_journal::NodeStream;
use rdmig_proto::msg::{Reply, Request};
use rdmig_proto::tls::ClientTls;
use rdmig_proto::wire::Limits;

/// How long one agent may take to answer.
const ASK: Duration = Duration::from_secs(10);

/// One node's events, and what to add to its wall clock to get this host's.
#[derive(Debug, Clone)]
pub struct NodeEvents {
    pub stream: NodeStream,
    pub offset_ns: i64,
}

/// The events of the agent at `agent` after sequence number `after`. Its clock offset is taken
/// from the same exchange: its wall clock when it answered against the middle of our request
/// and its reply (good to half the round trip).
pub async fn events_of(agent: SocketAddr, tls: &ClientTls, after: u64) -> Result<NodeEvents, String> {
    let until = Instant::now() + ASK;
    let mut ch = connect(agent, tls, Limits::idle(IO_WAIT).until(until)).await?;
    let t0 = rdmig_journal::wall_ns();
    ch.send_msg(&Request::Events { after }).await.map_err(|e| format!("{agent}: {e}"))?;
    let reply: Reply = ch.recv_msg().await.map_err(|e| format!("{agent}: {e}"))?;
    let t3 = rdmig_journal::wall_ns();
    match reply {
        Reply::Events { stream_json, wall_ns } => {
            let stream: NodeStream = serde_json::from_str(&stream_json).map_err(|e| format!("{agent}: its events do not parse: {e}"))?;
            Ok(NodeEvents { stream, offset_ns: t0 / 2 + t3 / 2 - wall_ns })
        }
        Reply::Failed(e) => Err(format!("{agent}: {e}")),
        other => Err(format!("{agent}: unexpected reply {other:?}")),
    }
}

/// This node's events, read from its journal file.
pub fn local_events(journal: &Path, after: u64) -> Result<NodeEvents, String> {
    let j = NodeJournal::open(journal).map_err(|e| format!("{}: {e}", journal.display()))?;
    let stream = j.with(|j| j.stream_since(after)).map_err(|e| e.to_string())?;
    Ok(NodeEvents { stream, offset_ns: 0 })
}

/// The offsets `rdmig_journal::merge` wants.
pub fn offsets(nodes: &[NodeEvents]) -> BTreeMap<NodeName, i64> {
    nodes.iter().map(|n| (n.stream.node().clone(), n.offset_ns)).collect()
}

/// What the agent at `agent` holds (JSON: node, work directory, migrations).
pub async fn inventory_of(agent: SocketAddr, tls: &ClientTls) -> Result<serde_json::Value, String> {
    let until = Instant::now() + ASK;
    let mut ch = connect(agent, tls, Limits::idle(IO_WAIT).until(until)).await?;
    ch.send_msg(&Request::Inventory).await.map_err(|e| format!("{agent}: {e}"))?;
    match ch.recv_msg::<Reply>().await.map_err(|e| format!("{agent}: {e}"))? {
        Reply::Inventory { json } => serde_json::from_str(&json).map_err(|e| format!("{agent}: its inventory does not parse: {e}")),
        Reply::Failed(e) => Err(format!("{agent}: {e}")),
        other => Err(format!("{agent}: unexpected reply {other:?}")),
    }
}
