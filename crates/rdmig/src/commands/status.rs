//! `rdmig status`: the migrations in flight, and what each node holds.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use super::{print_json, AgentsArgs};

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    agents: AgentsArgs,
    /// Print JSON: one object per node (node, work_dir, migrations, and from agents qps: the QPs
    /// stopped, resuming or paused by a peer now, or whose pause ended at rxe's bound), or
    /// {agent, error}.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: StatusArgs) -> Result<ExitCode> {
    let mut nodes = vec![];
    if a.agents.agents.is_empty() {
        // Only this node's journal: its source migrations that are not final.
        let j = rdmig::journal::NodeJournal::open(&a.agents.journal).with_context(|| format!("journal {}", a.agents.journal.display()))?;
        let open = j.with(|j| j.migrations_not_final())?;
        let migrations: Vec<serde_json::Value> = open
            .iter()
            .map(|m| serde_json::json!({ "id": m.migration().to_string(), "role": m.role(), "state": format!("{} {}", m.last.phase, m.last.outcome.as_str()) }))
            .collect();
        nodes.push(serde_json::json!({ "node": j.with(|j| j.node().to_string()), "migrations": migrations }));
    } else {
        let tls = a.agents.tls()?;
        for agent in &a.agents.agents {
            match rdmig::cluster::inventory_of(*agent, &tls).await {
                Ok(mut v) => {
                    v["agent"] = serde_json::json!(agent.to_string());
                    nodes.push(v);
                }
                Err(e) => nodes.push(serde_json::json!({ "agent": agent.to_string(), "error": e })),
            }
        }
    }
    if a.json {
        print_json(&nodes)?;
        return Ok(ExitCode::SUCCESS);
    }
    for n in &nodes {
        let name = n["node"].as_str().or(n["agent"].as_str()).unwrap_or("?");
        if let Some(e) = n["error"].as_str() {
            println!("{name}: cannot ask: {e}");
            continue;
        }
        let ms = n["migrations"].as_array().cloned().unwrap_or_default();
        if ms.is_empty() {
            println!("{name}: no migration in flight");
        }
        for m in ms {
            let pid = m["pid"].as_i64().map(|p| format!(" pid {p}")).unwrap_or_default();
            let src = m["source"].as_str().map(|s| format!(" from {s}")).unwrap_or_default();
            println!("{name}: {} {}{pid}{src}: {}", m["id"].as_str().unwrap_or("?"), m["role"].as_str().unwrap_or("?"), m["state"].as_str().unwrap_or("?"));
        }
        for q in n["qps"].as_array().cloned().unwrap_or_default() {
            let q: rdmig::agent::paused::QpNow = serde_json::from_value(q).context("a QP in the agent's answer")?;
            let now = [(q.stopped, "stopped"), (q.resuming, "resuming"), (q.paused, "paused by its peer")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, w)| *w)
                .collect::<Vec<_>>()
                .join(", ");
            let pid = q.pid.map(|p| format!(" of pid {p}")).unwrap_or_default();
            let expired = match q.pauses_expired {
                0 => String::new(),
                n => format!(" ({n} pause(s) ended with no RESUME)"),
            };
            println!("{name}: QP {} on {}{pid}: {}{expired}", q.qpn, q.dev, if now.is_empty() { "running" } else { &now });
        }
    }
    Ok(ExitCode::SUCCESS)
}
