//! `rdmig image show`: the verbs objects rdmig's CRIU plugin saved in an image directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::print_json;

#[derive(Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    cmd: ImageCmd,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Print the verbs objects saved in a CRIU image directory.
    Show {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: ImageArgs) -> Result<ExitCode> {
    let ImageCmd::Show { dir, json } = a.cmd;
    if json {
        print_json(&rdmig_image::show::show_json(&dir)?)?;
    } else {
        print!("{}", rdmig_image::show::show(&dir)?);
    }
    Ok(ExitCode::SUCCESS)
}
