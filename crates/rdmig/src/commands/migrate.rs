//! `rdmig migrate`: move a running process (or a Podman container) to another node, or roll back.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{print_json, PeerArgs};

#[derive(Args)]
pub struct MigrateArgs {
    /// The process to move.
    #[arg(required_unless_present = "container", conflicts_with = "container")]
    pub(crate) pid: Option<i32>,
    /// Move this Podman container (with runc) instead of a process. `podman container
    /// checkpoint --export` here (the container stops), the archive goes over rdmig's
    /// transport, the destination agent runs `podman container restore --import` (same name
    /// and ID); on failure the container is restored here. After the move the stopped
    /// container here is removed. With `--strategy precopy`, one pre-copy round first: `podman
    /// container checkpoint --pre-checkpoint` (the container keeps running) and its archive
    /// sent, then the checkpoint `--with-previous` carries only what changed since (Podman
    /// keeps one pre-checkpoint per container, so --max-rounds does not apply). Podman's
    /// settings come from its own configuration files (--containers-conf,
    /// --containers-storage-conf), here and, for the restore, from the destination agent's.
    #[arg(long, value_name = "NAME", value_parser = parse_container_name)]
    pub(crate) container: Option<rdmig_proto::msg::ContainerName>,
    #[command(flatten)]
    pub(crate) podman: super::PodmanArgs,
    #[command(flatten)]
    pub(crate) peer: PeerArgs,
    /// How to move it [default: precopy for a process, stop-and-copy for a container (whose
    /// pre-copy is one Podman pre-checkpoint, a whole CRIU pre-dump: worth it for a container
    /// with much memory)].
    #[arg(long, value_enum)]
    pub(crate) strategy: Option<rdmig::migrate::Strategy>,
    /// Pre-copy rounds at most (a container's pre-copy is one round).
    #[arg(long, default_value_t = 8)]
    pub(crate) max_rounds: u32,
    /// Pre-copy has converged when a round carries no more than this many MiB. No round runs
    /// when the process's anonymous memory is within this, less what it registered for RDMA if
    /// this host's rdma_rxe cannot have its pages tracked (before softroce patch 0032 pinned
    /// pages stay dirty to CRIU, so every round would carry them again): the report's
    /// stop_reason says so.
    #[arg(long, default_value_t = 4)]
    pub(crate) converge_mib: u64,
    /// Where the source keeps images while they are sent.
    #[arg(long, default_value = "/tmp/rdmig-migrate")]
    pub(crate) work_dir: PathBuf,
    /// Commands run with the migration's facts in RDMIG_* environment variables: before
    /// (failure refuses), after success, after failure.
    #[arg(long)]
    pub(crate) hook_pre: Option<String>,
    #[arg(long)]
    pub(crate) hook_post: Option<String>,
    #[arg(long)]
    pub(crate) hook_fail: Option<String>,
    /// Seconds a CRIU dump may take.
    #[arg(long, default_value_t = 600)]
    pub(crate) dump_timeout: u64,
    /// Seconds the whole migration may take, clean-up included: past it before the freeze,
    /// the migration is refused; after, the process is taken back (or, if only the destination
    /// can tell whether it runs there, left stopped: in doubt). Every wait on the network is
    /// bounded besides.
    #[arg(long, default_value_t = 900, value_name = "SECS", value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) deadline: u64,
    #[arg(long)]
    pub(crate) allow_kernel_mismatch: bool,
    /// This node's journal, where every step is recorded before it takes effect (read by
    /// `rdmig recover`, `rdmig events` and the agent of this node).
    #[arg(long, value_name = "FILE", env = "RDMIG_JOURNAL", default_value = rdmig::journal::DEFAULT_PATH)]
    pub(crate) journal: PathBuf,
    /// How memory images travel: rdma, tcp, or auto (measure both briefly, keep the faster);
    /// scp copies them over ssh instead (the MigrOS artifact's baseline; needs sshd at the
    /// destination, see --ssh-host and --ssh-config).
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) transport: rdmig::transport::TransportChoice,
    /// With --transport auto: use again a probe towards the same destination if it is at most
    /// this many seconds old (kept in the work directory's known/); the chosen path is still
    /// tried with a short probe, and a failed one is measured afresh next time. 0 probes
    /// every time.
    #[arg(long, value_name = "SECS", default_value_t = 3600)]
    pub(crate) probe_max_age: u64,
    /// With --transport scp: where scp copies to ([user@]host; default: the destination
    /// agent's address).
    #[arg(long, value_name = "[USER@]HOST")]
    pub(crate) ssh_host: Option<String>,
    /// With --transport scp: an ssh client configuration file (scp -F): key, known hosts, user.
    #[arg(long, value_name = "FILE", env = "RDMIG_SSH_CONFIG")]
    pub(crate) ssh_config: Option<PathBuf>,
    /// Stream CRIU's pages to the destination's page server while it dumps, instead of writing
    /// page images here and sending them after each dump. Needs no local room for the pages;
    /// measured slower in the emulated lab (see README), so not the default. scp never streams.
    #[arg(long)]
    pub(crate) page_stream: bool,
    /// Write the timeline (JSON) and its chart (PNG) next to this path: X.json, X.png.
    #[arg(long)]
    pub(crate) timeline: Option<PathBuf>,
    /// Print the report as JSON (the timeline included).
    #[arg(long)]
    pub(crate) json: bool,
    /// Checkpoint and restore the process's established TCP connections (CRIU's
    /// --tcp-established); their local addresses must exist at the destination (--move-addr).
    #[arg(long)]
    pub(crate) tcp_established: bool,
    /// An address of the source host that moves with the process (e.g. the overlay address
    /// its peers use): removed here once the process is frozen, added at the destination
    /// before the restore, taken back on rollback.
    #[arg(long, value_name = "IPV4")]
    pub(crate) move_addr: Option<std::net::Ipv4Addr>,
}

fn parse_container_name(s: &str) -> Result<rdmig_proto::msg::ContainerName, String> {
    rdmig_proto::msg::ContainerName::new(s).map_err(|e| e.to_string())
}

pub async fn run(a: MigrateArgs) -> Result<ExitCode> {
    use rdmig::migrate::{Hooks, MigrateOptions, Outcome, Strategy};
    if let (Some(c), true) = (&a.container, a.page_stream) {
        // Podman writes the container's pages into its archive: there is no page stream to use.
        anyhow::bail!("--page-stream: container {c}'s pages travel in Podman's checkpoint archive, not in a page stream (leave --page-stream out)");
    }
    let strategy = a.strategy.unwrap_or(if a.container.is_some() { Strategy::StopAndCopy } else { Strategy::Precopy });
    let o = MigrateOptions {
        pid: a.pid.unwrap_or(0),
        container: a.container.clone(),
        podman: a.podman.podman(),
        to: a.peer.addr()?,
        tls: a.peer.tls()?,
        strategy,
        max_rounds: a.max_rounds,
        converge_bytes: a.converge_mib << 20,
        work_dir: a.work_dir.clone(),
        hooks: Hooks { pre: a.hook_pre.clone(), post: a.hook_post.clone(), fail: a.hook_fail.clone() },
        dump_timeout: Duration::from_secs(a.dump_timeout),
        allow_kernel_mismatch: a.allow_kernel_mismatch,
        transport: a.transport,
        probe_max_age: Duration::from_secs(a.probe_max_age),
        rdma_addr: a.peer.rdma_addr,
        rdma_device: a.peer.rdma_device.clone(),
        rdma_qps: a.peer.rdma_qps,
        rdma_protection: a.peer.protection(),
        progress: !a.json,
        tcp_established: a.tcp_established,
        move_addr: a.move_addr,
        ssh_host: a.ssh_host.clone(),
        ssh_config: a.ssh_config.clone(),
        page_stream: a.page_stream,
        deadline: Duration::from_secs(a.deadline),
        lock_dir: PathBuf::from(rdmig::migrate::LOCK_DIR),
        journal: a.journal.clone(),
        started_ns: rdmig::timeline::process_start_ns(),
    };
    let r = rdmig::migrate::migrate(&o).await;
    if let Some(t) = &a.timeline {
        r.timeline.write_json(&t.with_extension("json"))?;
        if let Some(s) = &r.summary {
            if let Err(e) = rdmig::timeline::plot_png(&r.timeline, s, &t.with_extension("png")) {
                eprintln!("rdmig: chart not written: {e}");
            }
        }
    }
    if a.json {
        print_json(&r)?;
    } else {
        match &r.outcome {
            Outcome::Migrated { restored_pid } => match &r.container {
                Some(c) => println!("migrated container {c} to {} (its process is pid {restored_pid} there)", a.peer.to),
                None => println!("migrated pid {} to {} (pid {restored_pid} there)", r.pid, a.peer.to),
            },
            Outcome::Refused { reason } => println!("REFUSED, nothing was touched: {reason}"),
            Outcome::RolledBack { reason } => match &r.container {
                Some(c) => println!("ROLLED BACK, container {c} runs here again: {reason}"),
                None => println!("ROLLED BACK, pid {} runs here again: {reason}", r.pid),
            },
            Outcome::InDoubt { reason } => println!("IN DOUBT: {reason}"),
        }
        if let Some(s) = &r.summary {
            print!("{}", s.render_text());
        }
        if let Some(why) = &r.summary_error {
            println!("downtime not known: {why}");
        }
    }
    Ok(ExitCode::from(match r.outcome {
        Outcome::Migrated { .. } => 0,
        Outcome::Refused { .. } => 2,
        Outcome::RolledBack { .. } => 3,
        Outcome::InDoubt { .. } => 4,
    }))
}
