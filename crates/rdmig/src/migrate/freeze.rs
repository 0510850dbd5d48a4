//! The freeze stage: the final dump (`criu dump --leave-stopped`, pages streamed or written
//! here), after which the process stays stopped until the destination runs it or it is resumed
//! here; then its address leaves this host.

use std::time::Instant;

use tokio::net::TcpStream;

use super::remote::busy;
use super::{mib, Run, Step};
use crate::criu::{self, DumpSpec};
use crate::journal::{Outcome as JOutcome, Phase as JPhase};
use crate::timeline::{attrs, Phase, RDMA_US};
use rdmig_proto::wire::Channel;

impl Run<'_> {
    /// Freezes the process and dumps what pre-copy left (`parent`: the last round). On failure
    /// the `final_dump` span is left open for `dump_failed`.
    pub(super) async fn freeze(&mut self, ch: &mut Channel<TcpStream>, parent: Option<String>) -> Result<(), Step> {
        let o = self.o;
        if o.container.is_some() {
            return self.checkpoint_container(ch).await;
        }
        self.rec.start(Phase::Freeze);
        self.rec.start(Phase::FinalDump);
        let final_dir = self.dir.join("final");
        let _ = std::fs::create_dir_all(&final_dir);
        let t = Instant::now();
        let spec = DumpSpec {
            pid: o.pid,
            dir: final_dir.clone(),
            parent: parent.as_ref().map(|p| format!("../{p}")),
            timeout: o.dump_timeout,
            opts: self.copts.clone(),
        };
        let streamed = if self.streams_pages() {
            Some(self.dump_streamed(ch, "final", parent.as_deref(), &spec, true).await?)
        } else {
            let (dumped, alive) = busy(ch, criu::dump_leave_stopped(&spec)).await;
            dumped.map_err(|e| Step::Fail(e.to_string()))?;
            // Frozen, but the destination is gone: the caller rolls back.
            alive?;
            None
        };
        let final_bytes = streamed.unwrap_or_else(|| criu::page_bytes(&final_dir));
        self.final_bytes = final_bytes;
        let mut a = attrs([("bytes", final_bytes), ("pages", (final_bytes / 4096))]);
        // The plugin's part of the dump (saving the verbs objects): MigrRDMA's DumpRDMA.
        if let Some(rdma) = rdmig_image::timing::read_total(&final_dir, rdmig_image::timing::Kind::DumpRdma) {
            a.insert(RDMA_US.into(), (rdma.as_micros() as u64).into());
        }
        if let Some(steps) = crate::timeline::steps_json(&crate::timeline::rdma_steps_us(&final_dir, rdmig_image::timing::Kind::DumpRdma)) {
            a.insert(crate::timeline::RDMA_STEPS_US.into(), steps);
        }
        self.rec.end_with(Phase::FinalDump, a);
        self.say(&format!("frozen; final dump {} in {:.0} ms", mib(final_bytes), t.elapsed().as_secs_f64() * 1e3));
        Ok(())
    }

    /// The process is frozen: its address (`--move-addr`) leaves with it.
    pub(super) fn address_leaves(&self) -> Result<(), String> {
        if let Some(m) = &self.moved {
            // Recovery puts it back from this record.
            self.must_note(JPhase::AddrRemove, Some(serde_json::json!({ "move_addr": m })))?;
            crate::netaddr::del(m).map_err(|e| format!("removing {} here: {e}", m.addr))?;
            self.note(JPhase::AddrRemove, JOutcome::Done, None);
        }
        Ok(())
    }
}
