//! `rdmig events`: the cluster's migration events in one order, merged across the nodes'
//! journals by time (each node's clock offset applied) and sequence number, with the events a
//! node's sequence lacks reported as gaps.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::AgentsArgs;
use rdmig::cluster::{self, NodeEvents};
use rdmig_journal::{merge, Merged, MergedEvent, NodeName};

#[derive(Args)]
pub struct EventsArgs {
    #[command(flatten)]
    agents: AgentsArgs,
    /// Keep asking, and print new events as they come (Ctrl-C ends).
    #[arg(long, short)]
    follow: bool,
    /// Only this migration's events.
    #[arg(long, value_name = "ID")]
    migration: Option<String>,
    /// One JSON object per line: events as the journal records them plus `at_ns` (the time on
    /// this host's clock), and `{"gap": ...}` lines for missing events.
    #[arg(long)]
    json: bool,
    /// With --follow: milliseconds between two polls.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    interval_ms: u64,
}

pub async fn run(a: EventsArgs) -> Result<ExitCode> {
    let tls = if a.agents.agents.is_empty() { None } else { Some(a.agents.tls()?) };
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut first = true;
    loop {
        let mut nodes: Vec<NodeEvents> = vec![];
        let mut failed = vec![];
        if let Some(tls) = &tls {
            for agent in &a.agents.agents {
                let after = last.get(&agent.to_string()).copied().unwrap_or(0);
                match cluster::events_of(*agent, tls, after).await {
                    Ok(n) => {
                        last.insert(agent.to_string(), n.stream.last_seq().max(after));
                        nodes.push(n);
                    }
                    Err(e) => failed.push(e),
                }
            }
        } else {
            let after = last.get("local").copied().unwrap_or(0);
            let n = cluster::local_events(&a.agents.journal, after).map_err(anyhow::Error::msg)?;
            last.insert("local".into(), n.stream.last_seq().max(after));
            nodes.push(n);
        }
        for e in &failed {
            eprintln!("rdmig events: {e}");
        }
        if first && nodes.is_empty() {
            bail!("no agent answered");
        }
        let offsets = cluster::offsets(&nodes);
        let merged = merge(nodes.into_iter().map(|n| n.stream), &offsets);
        print(&merged, a.migration.as_deref(), a.json, &offsets)?;
        first = false;
        if !a.follow {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
    }
}

fn print(m: &Merged, only: Option<&str>, json: bool, offsets: &BTreeMap<NodeName, i64>) -> Result<()> {
    for e in m.events.iter().filter(|e| only.is_none_or(|id| e.event.migration.as_str() == id)) {
        if json {
            println!("{}", serde_json::to_string(e)?);
        } else {
            println!("{}", line(e));
        }
    }
    for g in &m.gaps {
        if json {
            println!("{}", serde_json::json!({ "gap": g }));
        } else {
            eprintln!("gap: {g}");
        }
    }
    if !json && offsets.values().any(|o| o.abs() > 1_000_000_000) {
        eprintln!("note: clock offsets over 1 s were applied: {offsets:?}");
    }
    Ok(())
}

/// `2026-12-04T21:30:00.123Z node1 #7 m-… source freeze started`, then the reason or details.
fn line(e: &MergedEvent) -> String {
    let ev = &e.event;
    let secs = e.at_ns.div_euclid(1_000_000_000);
    let ms = e.at_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let days = secs / 86_400;
    let (y, mo, d) = civil(days);
    let mut l = format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z {} #{} {} {} {} {}",
        ev.node,
        ev.seq,
        ev.migration,
        serde_json::to_value(ev.role).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
        ev.phase,
        ev.outcome.as_str()
    );
    if let Some(r) = ev.outcome.reason() {
        l.push_str(&format!(": {r}"));
    }
    if let Some(d) = &ev.details {
        l.push_str(&format!(" {d}"));
    }
    l
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// well-known civil-from-days algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::civil;

    #[test]
    fn dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_791), (2026, 12, 4));
        assert_eq!(civil(11_016), (2000, 2, 29));
    }
}
