//! The checks stage: everything that can refuse, before anything is touched. What the process
//! needs here (CRIU plugin, its moving address), the destination agent's facts against ours,
//! the clock offset, the pre hook, the transport (measured for `auto`), and the migration begun
//! at the destination.

use std::path::Path;
use std::time::Instant;

use tokio::net::TcpStream;
use tracing::warn;

use super::known::{self, ProbeKey, Probed};
use super::remote::{busy, call, connect, expect_ack, IO_WAIT};
use super::{hooks, mib, scp, transfer, Run, Step};
use crate::agent::{host_facts, now_ns};
use crate::criu;
use crate::timeline::{attrs, estimate_offset, ClockSample, Phase};
use crate::transport::rdma::RdmaSender;
use crate::transport::{mb_s, TransportChoice, TransportReport, Used};
use crate::tsc;
use rdmig_proto::msg::{ChunkProtection, MovedAddr, MsgError, Reply, Request};
use rdmig_proto::wire::{Channel, Limits, WireError};

fn rss_bytes(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Run<'_> {
    /// The whole stage: on success the channel to the destination, where the migration has begun.
    /// All of it is the timeline's `check` phase: no second before the freeze is in none.
    pub(super) async fn checks(&mut self) -> Result<Channel<TcpStream>, Step> {
        self.rec.start(Phase::Check);
        self.prepare()?;
        let limits = Limits::idle(IO_WAIT).until(self.stages_end);
        let mut ch = connect(self.o.to, &self.o.tls, limits).await.map_err(Step::Refuse)?;
        let rss = self.check_fit(&mut ch).await?;
        self.choose_transport(&mut ch).await?;
        call(&mut ch, &Request::Begin { id: self.id.clone(), pid: self.pid() }).await.map_err(Step::from).and_then(|r| expect_ack(r, "begin"))?;
        self.rec.end_with(Phase::Check, attrs([("rss_bytes", rss)]));
        Ok(ch)
    }

    /// What this side needs: a work directory, the CRIU plugin for verbs state, the device and
    /// prefix of the address that moves.
    fn prepare(&mut self) -> Result<(), Step> {
        let o = self.o;
        std::fs::create_dir_all(&self.dir).map_err(|e| Step::Refuse(format!("work directory {}: {e}", self.dir.display())))?;
        self.copts.tcp_established = o.tcp_established;
        // (A container's CRIU, which runc runs, finds the plugin in CRIU's own directory.)
        if o.container.is_none() && criu::has_verbs(o.pid) {
            match criu::plugin_dir(&o.work_dir) {
                Ok(p) => {
                    self.say("the process holds verbs state: rdmig's CRIU plugin saves and restores it");
                    self.copts.plugins = Some(p);
                }
                Err(e) => return Err(Step::Refuse(format!("the process holds verbs state, but rdmig's CRIU plugin is unavailable: {e}"))),
            }
        }
        if let Some(a) = o.move_addr {
            match crate::netaddr::find(a) {
                Some((dev, prefix)) => {
                    let m = MovedAddr { addr: a, prefix, dev };
                    m.validate().map_err(|e| Step::Refuse(format!("--move-addr {a}: {e}")))?;
                    self.moved = Some(m);
                }
                None => return Err(Step::Refuse(format!("--move-addr {a}: no device here has this address"))),
            }
        }
        Ok(())
    }

    /// Does the process fit the destination? Everything that can refuse, before anything is
    /// touched: versions, room, free numbers, CPU, then the clock offset and the pre hook.
    /// Returns the process's resident memory.
    async fn check_fit(&mut self, ch: &mut Channel<TcpStream>) -> Result<u64, Step> {
        let o = self.o;
        if let Some(name) = &o.container {
            self.find_container(name).await?;
        } else if o.pid <= 1 || !Path::new(&format!("/proc/{}", o.pid)).exists() {
            return Err(Step::Refuse(format!("no process {} here", o.pid)));
        }
        if self.pid() as u32 == std::process::id() {
            return Err(Step::Refuse("rdmig cannot migrate itself".into()));
        }
        // A container's process: its main one (the checks are about it, as a process's are).
        let pid = self.pid();
        let t = Instant::now();
        let src = host_facts(&o.work_dir, None).await;
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "local facts");
        let Some(src_criu) = src.criu_version.clone() else {
            return Err(Step::Refuse("CRIU is not installed here (apt-get install criu)".into()));
        };
        let t = Instant::now();
        // (A container's process need not have its pid free there: runc gives it a pid
        // namespace of its own.)
        let dst = match call(ch, &Request::Facts { pid: o.container.is_none().then_some(pid) }).await {
            Ok(Reply::Facts(f)) => f,
            // The agent's policy: this node may not migrate to it (the reason says which rule).
            Ok(Reply::Failed(e)) => return Err(Step::Refuse(format!("the destination agent at {} refused: {e}", o.to))),
            Ok(other) => return Err(Step::Refuse(format!("destination answered {other:?} to a facts request"))),
            // TLS 1.3: an agent that refuses this node's certificate says so after the handshake,
            // at the first read.
            Err(MsgError::Wire(WireError::Tls(e))) => {
                return Err(Step::Refuse(format!(
                    "the destination agent at {} refused this node's certificate ({e}): is it of the cluster's CA? (the agent's log says why)",
                    o.to
                )))
            }
            Err(MsgError::Wire(WireError::Closed | WireError::Io(_))) => {
                return Err(Step::Refuse(format!("the destination agent at {} hung up on the first request (its log says why)", o.to)))
            }
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "destination facts");
        self.src = Some(src.clone());
        self.dst = Some(dst.clone());
        let Some(dst_criu) = dst.criu_version.clone() else {
            return Err(Step::Refuse(format!("the destination {} has no CRIU (apt-get install criu there)", dst.hostname)));
        };
        if src_criu != dst_criu {
            return Err(Step::Refuse(format!("CRIU versions differ: {src_criu} here, {dst_criu} at {}", dst.hostname)));
        }
        if src.rdmig_version != dst.rdmig_version {
            return Err(Step::Refuse(format!("rdmig versions differ: {} here, {} at {}", src.rdmig_version, dst.rdmig_version, dst.hostname)));
        }
        if src.kernel != dst.kernel && !o.allow_kernel_mismatch {
            return Err(Step::Refuse(format!(
                "kernels differ: {} here, {} at {} (--allow-kernel-mismatch to try anyway)",
                src.kernel, dst.kernel, dst.hostname
            )));
        }
        if o.container.is_none() && dst.pid_free != Some(true) {
            return Err(Step::Refuse(format!("pid {} is in use at {}; CRIU restores a process with its own pid", o.pid, dst.hostname)));
        }
        if o.container.is_some() {
            self.container_fits_there(ch).await?;
        }
        let rss = rss_bytes(pid).unwrap_or(0);
        // Images and the restored process both need room there; pre-copy rounds may resend pages.
        let need_mem = rss + (64 << 20);
        if dst.mem_available < need_mem {
            return Err(Step::Refuse(format!(
                "{} has {} of memory available, the process needs about {}",
                dst.hostname,
                mib(dst.mem_available),
                mib(need_mem)
            )));
        }
        let need_disk = rss * 2 + (16 << 20);
        if dst.disk_available < need_disk || src.disk_available < need_disk {
            return Err(Step::Refuse(format!(
                "image space: {} free here, {} at {}, about {} needed on each",
                mib(src.disk_available),
                mib(dst.disk_available),
                dst.hostname,
                mib(need_disk)
            )));
        }
        // Verbs state: the process's QP numbers and MR keys must be free at the destination.
        if criu::has_verbs(pid) {
            let recs = rdmig_rxe::status::read().map_err(|e| Step::Refuse(format!("the process holds verbs state, but {e}")))?;
            let mine = |kind: &str, key: &str| -> Vec<(String, u32)> {
                recs.iter()
                    .filter(|r| r.kind == kind && r.fields.get("pid").is_some_and(|p| *p == pid.to_string()))
                    .filter_map(|r| Some((r.fields.get("dev")?.clone(), r.fields.get(key)?.parse().ok()?)))
                    .collect()
            };
            let (qps, mrs) = (mine("qp", "qpn"), mine("mr", "index"));
            let mut devs: Vec<String> = qps.iter().chain(&mrs).map(|x| x.0.clone()).collect();
            devs.dedup();
            for dev in devs {
                let pick = |v: &[(String, u32)]| v.iter().filter(|x| x.0 == dev).map(|x| x.1).collect::<Vec<u32>>();
                let req = Request::CheckNumbers { ibdev: dev.clone(), qpns: pick(&qps), mrs: pick(&mrs) };
                match call(ch, &req).await? {
                    Reply::Ack => {}
                    Reply::Failed(e) => return Err(Step::Refuse(format!("the process's verbs numbers at {}: {e}", dst.hostname))),
                    other => return Err(Step::Refuse(format!("destination answered {other:?} to a numbers check"))),
                }
            }
        }
        // rdma_cm files: only rdmig's rdma_ucm (with its ib_cm and rdma_cm) recreates CM IDs.
        if let Some(dev) = rdmig_rxe::ucma::devno() {
            if crate::process::char_dev_fds(pid, dev).is_ok_and(|f| !f.is_empty()) {
                ucma_fits(dst.ucma, &dst.hostname).map_err(Step::Refuse)?;
            }
        }
        // CPU features: CRIU's own comparison, run at the destination on our cpuinfo image
        // (dumped once per boot here; the agent there keeps its verdict per image).
        let t = Instant::now();
        let (image, kept) = known::cpuinfo(&o.work_dir, &src_criu, &self.dir.join("cpuinfo")).await.map_err(|e| Step::Refuse(e.to_string()))?;
        if let Reply::Failed(e) = call(ch, &Request::CpuCheck { image }).await? {
            return Err(Step::Refuse(e));
        }
        tracing::debug!(ms = t.elapsed().as_millis() as u64, image_kept = kept, "cpu check");
        // Clock offset: a few round trips, the best one wins (see timeline).
        for _ in 0..8 {
            let t0 = now_ns();
            let r = call(ch, &Request::Time).await?;
            let t3 = now_ns();
            if let Reply::Time { t1_ns, t2_ns } = r {
                self.clock.push(ClockSample { t0, t1: t1_ns, t2: t2_ns, t3 });
            }
        }
        self.compare_tsc();
        // The hook may take its time: the destination keeps hearing from us meanwhile.
        let (cmd, env) = (o.hooks.pre.clone(), self.hook_env("pre", &[]));
        let (hooked, alive) = busy(ch, tokio::task::spawn_blocking(move || hooks::run_hook(&cmd, &env))).await;
        hooked.map_err(|e| Step::Refuse(format!("pre hook: {e}")))?.map_err(Step::Refuse)?;
        alive?;
        self.say(&format!("checks passed: {} -> {} (CRIU {src_criu}, process RSS {})", src.hostname, dst.hostname, mib(rss)));
        Ok(rss)
    }

    /// The counter the process will read at the destination, against this host's: lined up
    /// with the clock offset just measured (the same estimate the timeline merges with). Linux
    /// gives a process no TSC offset of its own, so rdmig cannot hide a difference: it reports
    /// it and says so, and never refuses over it.
    fn compare_tsc(&mut self) {
        let (Some(src), Some(dst)) = (self.src.as_ref().and_then(|f| f.tsc), self.dst.as_ref().and_then(|f| f.tsc)) else {
            tracing::debug!("no TSC comparison: a host has no TSC facts");
            return;
        };
        let offset = match estimate_offset(&self.clock) {
            Ok(o) => o,
            Err(e) => {
                warn!("no TSC comparison: {e}");
                return;
            }
        };
        let c = tsc::change(&src, &dst, offset.offset_ns);
        tracing::debug!(step_ns = c.step_ns, step_ticks = c.step_ticks, source_khz = c.source_khz, destination_khz = c.destination_khz, "TSC change");
        if let Some(w) = c.warning() {
            warn!("{w}");
            self.say(&w);
        }
        self.tsc = Some(c);
    }

    /// Opens the RDMA data path to the destination.
    pub(super) async fn open_rdma(&self, ch: &mut Channel<TcpStream>) -> Result<RdmaSender, String> {
        let o = self.o;
        let addr = o.rdma_addr.ok_or("no local RDMA address (--rdma-addr)")?;
        let gid = rdmig_rxe::gid_index(&o.rdma_device, addr).map_err(|e| e.to_string())?;
        let mut s = RdmaSender::open(&o.rdma_device, gid, o.rdma_qps).await.map_err(|e| e.to_string())?;
        // The data path's chunk key, from the TLS session (the agent derives it as it is asked).
        let key = crate::transport::rdma::ChunkKey::new(&ch.next_stream_key(), o.rdma_protection);
        match call(ch, &Request::RdmaSetup { eps: s.eps.clone(), protection: o.rdma_protection }).await.map_err(|e| e.to_string())? {
            Reply::RdmaReady(info) => s.connect(info, key).map_err(|e| e.to_string())?,
            Reply::Failed(e) => return Err(format!("the destination cannot: {e}")),
            other => return Err(format!("unexpected reply {other:?}")),
        }
        Ok(s)
    }

    /// Chooses the transport: as asked, or for `auto` the faster of the two over a short probe.
    async fn choose_transport(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        let report = match self.o.transport {
            TransportChoice::Tcp => {
                TransportReport { used: Used::Tcp, reason: "asked for".into(), tcp_mb_s: None, rdma_mb_s: None, rdma_qps: None, rdma_protection: None }
            }
            TransportChoice::Scp => {
                let host = self.o.ssh_host.clone().unwrap_or_else(|| self.o.to.ip().to_string());
                let scp = scp::Scp::new(&host, self.o.ssh_config.clone()).map_err(Step::Refuse)?;
                // Refuse now, while the process runs, rather than after freezing it.
                scp.check().await.map_err(Step::Refuse)?;
                self.scp = Some(scp);
                TransportReport {
                    used: Used::Scp,
                    reason: format!("asked for: image files copied with scp to {host} (the MigrOS artifact's procedure)"),
                    tcp_mb_s: None,
                    rdma_mb_s: None,
                    rdma_qps: None,
                    rdma_protection: None,
                }
            }
            TransportChoice::Rdma => {
                let s = self.open_rdma(ch).await.map_err(|e| Step::Refuse(format!("RDMA transport: {e}")))?;
                self.rdma = Some(s);
                TransportReport { used: Used::Rdma, reason: "asked for".into(), tcp_mb_s: None, rdma_mb_s: None, rdma_qps: None, rdma_protection: None }
            }
            TransportChoice::Auto => self.probe_transports(ch).await?,
        };
        let mut report = report;
        report.rdma_qps = self.rdma.as_ref().map(|s| s.lanes());
        report.rdma_protection = self.rdma.as_ref().map(|_| self.o.rdma_protection);
        match report.rdma_qps {
            Some(n) => {
                let what = match self.o.rdma_protection {
                    ChunkProtection::Authenticated => "chunks authenticated, data in clear",
                    ChunkProtection::Encrypted => "chunks encrypted",
                };
                self.say(&format!("transport: {:?} over {n} QP(s), {what} ({})", report.used, report.reason))
            }
            None => self.say(&format!("transport: {:?} ({})", report.used, report.reason)),
        }
        self.transport = Some(report);
        Ok(())
    }

    /// `auto`: the faster of TCP and RDMA over a probe of each, or as a probe towards the same
    /// destination found within `--probe-max-age` (see `known`). RDMA chosen that way is still
    /// tried with a short probe: a path that broke since falls back to TCP, as a failed probe
    /// does, and is measured afresh next time.
    async fn probe_transports(&mut self, ch: &mut Channel<TcpStream>) -> Result<TransportReport, Step> {
        const PROBE: u64 = 16 << 20;
        const TRY: u64 = 1 << 20;
        let o = self.o;
        let key = ProbeKey { to: o.to, rdma_device: o.rdma_device.clone(), rdma_addr: o.rdma_addr, rdma_qps: o.rdma_qps, rdma_protection: o.rdma_protection };
        let kept = if o.probe_max_age.is_zero() { None } else { known::probe(&o.work_dir, &key, o.probe_max_age) };
        let report = |used, reason, tcp: f64, rdma: Option<f64>| TransportReport {
            used,
            reason,
            tcp_mb_s: Some(tcp),
            rdma_mb_s: rdma,
            rdma_qps: None,
            rdma_protection: None,
        };
        if let Some(k) = kept {
            let ago = k.age().as_secs();
            if k.tcp_mb_s > k.rdma_mb_s {
                let why = format!("faster in a {} probe {ago} s ago ({:.1} vs {:.1} MB/s)", mib(PROBE), k.tcp_mb_s, k.rdma_mb_s);
                return Ok(report(Used::Tcp, why, k.tcp_mb_s, Some(k.rdma_mb_s)));
            }
            let tried = match self.open_rdma(ch).await {
                Err(e) => Err(format!("RDMA unavailable: {e}")),
                Ok(s) => match transfer::probe(ch, Some(&s), TRY).await {
                    Ok(_) => Ok(s),
                    Err(e) => {
                        drop(s);
                        self.reconnect_after_probe(ch, &e).await?;
                        Err(format!("the RDMA probe failed ({e}); a probe {ago} s ago had chosen RDMA"))
                    }
                },
            };
            return Ok(match tried {
                Ok(s) => {
                    self.rdma = Some(s);
                    let why = format!(
                        "faster in a {} probe {ago} s ago ({:.1} vs {:.1} MB/s); its path took a {} probe now",
                        mib(PROBE),
                        k.rdma_mb_s,
                        k.tcp_mb_s,
                        mib(TRY)
                    );
                    report(Used::Rdma, why, k.tcp_mb_s, Some(k.rdma_mb_s))
                }
                Err(why) => {
                    known::forget_probe(&o.work_dir, &key);
                    report(Used::Tcp, why, k.tcp_mb_s, None)
                }
            });
        }
        let tcp = mb_s(PROBE, transfer::probe(ch, None, PROBE).await?);
        Ok(match self.open_rdma(ch).await {
            Err(e) => report(Used::Tcp, format!("RDMA unavailable: {e}"), tcp, None),
            Ok(s) => match transfer::probe(ch, Some(&s), PROBE).await {
                Ok(secs) => {
                    let r = mb_s(PROBE, secs);
                    known::keep_probe(&o.work_dir, &key, Probed::now(tcp, r));
                    if r >= tcp {
                        self.rdma = Some(s);
                        report(Used::Rdma, format!("faster in a {} probe ({r:.1} vs {tcp:.1} MB/s)", mib(PROBE)), tcp, Some(r))
                    } else {
                        report(Used::Tcp, format!("faster in a {} probe ({tcp:.1} vs {r:.1} MB/s)", mib(PROBE)), tcp, Some(r))
                    }
                }
                Err(e) => {
                    drop(s);
                    self.reconnect_after_probe(ch, &e).await?;
                    report(Used::Tcp, format!("the RDMA probe failed ({e})"), tcp, None)
                }
            },
        })
    }

    /// After a failed RDMA probe the channel is out of step (the destination may still wait for
    /// probe data, or have hung up over it): nothing has begun there yet, so a fresh connection
    /// carries on, over TCP.
    async fn reconnect_after_probe(&self, ch: &mut Channel<TcpStream>, e: &Step) -> Result<(), Step> {
        warn!("RDMA probe failed: {e}; going on over TCP, on a new connection");
        *ch = connect(self.o.to, &self.o.tls, ch.limits()).await.map_err(Step::Refuse)?;
        Ok(())
    }
}

/// Whether a destination whose rdma_ucm is `ucma` (its ABI version, None: stock or none) can
/// recreate the CM IDs of a process that holds rdma_cm files.
fn ucma_fits(ucma: Option<u32>, host: &str) -> Result<(), String> {
    let want = rdmig_rxe::ucma::ABI_VERSION;
    match ucma {
        Some(v) if v == want => Ok(()),
        Some(v) => Err(format!(
            "the process holds rdma_cm files (librdmacm), and {host}'s rdmig rdma_ucm has ABI version {v}, this rdmig's {want}: \
             install the same rdmig-rxe-dkms there (or scripts/build-softroce.sh) and reload the modules"
        )),
        None => Err(format!(
            "the process holds rdma_cm files (librdmacm), but {host} has no rdmig rdma_ucm loaded (a stock one, or none), which \
             cannot recreate its CM IDs: install rdmig-rxe-dkms there (or scripts/build-softroce.sh) and load rdmig's modules"
        )),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rdma_cm_processes_need_rdmig_s_rdma_ucm_of_the_same_abi_there() {
        assert!(super::ucma_fits(Some(rdmig_rxe::ucma::ABI_VERSION), "node3").is_ok());
        let stock = super::ucma_fits(None, "node3").unwrap_err();
        assert!(stock.contains("node3 has no rdmig rdma_ucm") && stock.contains("rdmig-rxe-dkms"), "{stock}");
        let old = super::ucma_fits(Some(1), "node3").unwrap_err();
        assert!(old.contains("ABI version 1") && old.contains(&format!("this rdmig's {}", rdmig_rxe::ucma::ABI_VERSION)), "{old}");
    }
}
