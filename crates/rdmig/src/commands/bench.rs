//! `rdmig bench transfer`: data to an agent over TCP and over RDMA, in MB/s.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{print_json, PeerArgs};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    cmd: BenchCmd,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Send SIZE MiB to a destination agent over each transport and report MB/s.
    Transfer {
        #[command(flatten)]
        peer: PeerArgs,
        #[arg(long, default_value_t = 256)]
        size_mib: u64,
        /// Transports to measure, in order (default both).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "tcp,rdma")]
        transports: Vec<rdmig::transport::TransportChoice>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(a: BenchArgs) -> Result<ExitCode> {
    let BenchCmd::Transfer { peer, size_mib, transports, json } = a.cmd;
    let (to, tls) = (peer.addr()?, peer.tls()?);
    let rdma = rdmig::migrate::RdmaSide { addr: peer.rdma_addr, device: &peer.rdma_device, qps: peer.rdma_qps, protection: peer.protection() };
    let r = rdmig::migrate::bench_transfer(to, &tls, rdma, size_mib << 20, &transports).await?;
    if json {
        print_json(&r)?;
    } else {
        for row in &r {
            let qps = match (row.rdma_qps, row.rdma_protection) {
                (Some(n), Some(p)) => format!(", {n} QP(s), chunks {}", p.name()),
                _ => String::new(),
            };
            println!("{:5} {:>8.1} MB/s  ({} MiB in {:.2} s{qps})", row.transport, row.mb_s, row.bytes >> 20, row.secs);
        }
    }
    Ok(ExitCode::SUCCESS)
}
