//! `rdmig ca`: the cluster's certificate authority (`init`) and a certificate per node
//! (`issue`), for the mutual TLS between `rdmig migrate` and the agents.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct CaArgs {
    #[command(subcommand)]
    cmd: CaCmd,
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the cluster CA in DIR: ca.pem (give it to every node) and ca.key (mode 0600;
    /// keep it off the nodes). An existing CA is never replaced.
    Init {
        dir: PathBuf,
        /// A name for the cluster, in the CA's name.
        #[arg(long, default_value = "rdmig")]
        cluster: String,
    },
    /// Issue NODE's certificate from the CA in --dir: writes --out (default DIR/NODE) with
    /// ca.pem, node.pem and node.key (mode 0600), to copy to the node as its --tls-dir
    /// (/etc/rdmig/tls by default).
    Issue {
        /// The node's name (one DNS label: [a-z0-9-]); agents' --allow-peer lists name it.
        node: String,
        /// The CA's directory.
        #[arg(long)]
        dir: PathBuf,
        /// Addresses the node's agent listens on, put in the certificate: a source that is not
        /// told the node's name (--to-name) checks the address it dials against these.
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(a: CaArgs) -> Result<ExitCode> {
    match a.cmd {
        CaCmd::Init { dir, cluster } => {
            let cert = rdmig_proto::ca::init(&dir, &cluster)?;
            println!("{}", cert.display());
        }
        CaCmd::Issue { node, dir, ips, out } => {
            let out = out.unwrap_or_else(|| dir.join(&node));
            rdmig_proto::ca::issue(&dir, &node, &ips, &out)?;
            println!("{}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
