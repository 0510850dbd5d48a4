//! The `rdmig` command line: parses, sets up logging, and hands each command to its file in
//! `commands/`.

mod commands;

use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rdmig",
    version,
    about = "Live migration of unmodified RDMA (SoftRoCE) applications between hosts",
    long_about = "rdmig moves a running RDMA application from one host to another while its peers \
                  keep running. Each host runs `rdmig agent`; `rdmig migrate PID --to HOST:PORT` moves \
                  a process. No RDMA hardware? `rdmig-lab` (a separate tool) gives you SoftRoCE hosts \
                  to try it on: virtual machines on this machine."
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive such as rdmig=debug).
    #[arg(long, global = true, env = "RDMIG_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive migrations on this node: the per-node daemon (root). It binds only where it is
    /// told, speaks only mutual TLS with nodes of the cluster CA, and lets in only the nodes
    /// its --allow-peer names.
    Agent(commands::agent::AgentArgs),
    /// Move a running process to another node: checks, pre-copy, freeze, transfer, restore,
    /// resume; or roll back so it keeps running here. Exit codes: 0 migrated, 2 refused before
    /// anything was touched, 3 rolled back (runs here again), 4 in doubt (left stopped here).
    Migrate(commands::migrate::MigrateArgs),
    /// After a crash: bring every migration this node's journal left unfinished to a final
    /// state (the process runs here again, or its move is finished). Exit codes: 0 all final,
    /// 4 some in doubt (left stopped), 5 some not yet (try again).
    Recover(commands::recover::RecoverArgs),
    /// The cluster's migration events in order (every node's journal, merged by time and
    /// sequence; missing events reported as gaps). `--follow` to watch, `--json` for scripts.
    Events(commands::events::EventsArgs),
    /// Migrations in flight and what each node holds.
    Status(commands::status::StatusArgs),
    /// Inspect checkpoint images: `image show DIR` lists the verbs objects rdmig's CRIU plugin
    /// saved there (like CRIU's crit does for its own images).
    Image(commands::image::ImageArgs),
    /// Measure things: `bench transfer` moves data to an agent over TCP and over RDMA.
    Bench(commands::bench::BenchArgs),
    /// rdmig's rdma_rxe: number control, reservations, dirty pages (needs our module; root).
    Softroce(commands::softroce::SoftroceArgs),
    /// SoftRoCE facts on this host (or inside a lab node).
    Rxe(commands::rxe::RxeArgs),
    /// The cluster's certificate authority: `ca init DIR`, then `ca issue NODE --dir DIR` for
    /// each node (its certificate for the mutual TLS between agents).
    Ca(commands::ca::CaArgs),
    /// Charts: `plot throughput` draws a peer's receive and send rates around a migration.
    Plot(commands::plot::PlotArgs),
    /// Write a man page per command into DIR (packaging/build-deb.sh installs them).
    #[command(hide = true)]
    Manpages(commands::manpages::ManpagesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(&cli.cmd, Cmd::Agent(_));
    let filter = if daemon { "info".to_string() } else { cli.log.clone() };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Agent(a) => commands::agent::run(a).await,
        Cmd::Migrate(a) => commands::migrate::run(a).await,
        Cmd::Recover(a) => commands::recover::run(a).await,
        Cmd::Events(a) => commands::events::run(a).await,
        Cmd::Status(a) => commands::status::run(a).await,
        Cmd::Image(a) => commands::image::run(a),
        Cmd::Bench(a) => commands::bench::run(a).await,
        Cmd::Softroce(a) => commands::softroce::run(a),
        Cmd::Rxe(a) => commands::rxe::run(a),
        Cmd::Ca(a) => commands::ca::run(a),
        Cmd::Plot(a) => commands::plot::run(a),
        Cmd::Manpages(a) => commands::manpages::run(Cli::command(), a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The pages the package installs: one per visible command, with what `--help` says.
    #[test]
    fn man_pages_for_every_command() {
        let dir = tempfile::tempdir().unwrap();
        commands::manpages::write_all(Cli::command(), dir.path()).unwrap();
        for sub in Cli::command().get_subcommands().filter(|s| s.get_name() != "manpages") {
            let page = dir.path().join(format!("rdmig-{}.1", sub.get_name()));
            assert!(page.is_file(), "no page {}", page.display());
        }
        assert!(!dir.path().join("rdmig-manpages.1").exists(), "the hidden command got a page");
        let migrate = std::fs::read_to_string(dir.path().join("rdmig-migrate.1")).unwrap();
        assert!(migrate.contains("4 in doubt"), "the exit codes are missing:\n{migrate}");
        assert!(migrate.contains("\\-\\-to"), "--to is missing:\n{migrate}");
        assert!(dir.path().join("rdmig-ca-issue.1").is_file());
    }
}
