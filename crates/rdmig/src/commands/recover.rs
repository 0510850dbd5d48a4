//! `rdmig recover`: bring every source migration of this node's journal that no `rdmig migrate`
//! runs any more to a final state (resume the process here, or finish its move).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::print_json;
use rdmig::migrate::{RecoverOptions, RecoveryOutcome};

#[derive(Args)]
pub struct RecoverArgs {
    /// This node's journal.
    #[arg(long, value_name = "FILE", env = "RDMIG_JOURNAL", default_value = rdmig::journal::DEFAULT_PATH)]
    journal: PathBuf,
    /// This node's TLS directory (`rdmig ca issue` makes it), to ask the destinations.
    #[arg(long, env = "RDMIG_TLS_DIR", default_value = "/etc/rdmig/tls")]
    tls_dir: PathBuf,
    /// The destinations' --orphan-after, in seconds: an unreachable destination has dropped an
    /// uncommitted copy once this (and a margin) has passed since the migration's last step.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    orphan_after: u64,
    /// Do not wait for an unreachable destination's orphan window: report it and exit 5.
    #[arg(long)]
    no_wait: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

/// Exit codes: 0 every migration final (or none to recover), 4 some in doubt (left stopped:
/// only their destination can tell), 5 some not yet (a run still going, a destination still
/// restoring or within its orphan window).
pub async fn run(a: RecoverArgs) -> Result<ExitCode> {
    let tls = super::tls_client(&a.tls_dir, None)?;
    let journal = rdmig::journal::NodeJournal::open(&a.journal).with_context(|| format!("journal {}", a.journal.display()))?;
    let o = RecoverOptions {
        tls,
        lock_dir: PathBuf::from(rdmig::migrate::LOCK_DIR),
        orphan_after: Duration::from_secs(a.orphan_after),
        wait: !a.no_wait,
        ask: rdmig::migrate::RECOVER_ASK,
    };
    let done = rdmig::migrate::recover(&journal, &o).await?;
    if a.json {
        print_json(&done)?;
    } else if done.is_empty() {
        println!("nothing to recover: every migration in {} is final", a.journal.display());
    } else {
        for r in &done {
            let pid = r.pid.map(|p| format!("pid {p}")).unwrap_or_default();
            println!("{} {pid}: {} ({})", r.id, serde_json::to_value(r.outcome)?.as_str().unwrap_or("?"), r.detail);
        }
    }
    let code = if done.iter().any(|r| r.outcome == RecoveryOutcome::InDoubt) {
        4
    } else if done.iter().any(|r| !r.outcome.is_final()) {
        5
    } else {
        0
    };
    Ok(ExitCode::from(code))
}
