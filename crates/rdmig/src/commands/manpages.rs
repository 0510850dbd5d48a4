//! `rdmig manpages DIR` (hidden): writes a man page per command from the same definitions that
//! `--help` prints, so the two cannot drift: `rdmig.1`, `rdmig-migrate.1`, and one for every
//! subcommand below (`rdmig-ca-issue.1`). packaging/build-deb.sh runs it and installs the pages
//! in /usr/share/man/man1.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use clap::Args;

#[derive(Args)]
pub struct ManpagesArgs {
    /// Directory to write the pages into (made if missing; existing pages are replaced).
    pub dir: PathBuf,
}

pub fn run(cmd: clap::Command, a: ManpagesArgs) -> Result<std::process::ExitCode> {
    let written = write_all(cmd, &a.dir)?;
    for p in &written {
        println!("{}", p.display());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes the page of `cmd` and of each of its visible subcommands, depth first; returns the
/// files written.
pub fn write_all(mut cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // Builds the whole tree first: subcommands get their full names ("rdmig-ca-issue") and the
    // global options (--log) show on every page.
    cmd.build();
    let mut out = Vec::new();
    page(&cmd, cmd.get_name(), dir, &mut out)?;
    ensure!(out.len() > 1, "no subcommands: nothing but {} written", out[0].display());
    Ok(out)
}

fn page(cmd: &clap::Command, name: &str, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    // The page's title is its file's name, so `man rdmig-migrate` shows "RDMIG-MIGRATE(1)".
    let cmd = cmd.clone().display_name(name.to_string());
    let path = dir.join(format!("{name}.1"));
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut buf).with_context(|| format!("render the page of {name}"))?;
    fs::write(&path, buf).with_context(|| format!("write {}", path.display()))?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        page(sub, &format!("{name}-{}", sub.get_name()), dir, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, Subcommand};

    #[derive(Parser)]
    #[command(name = "tool", about = "A tool")]
    struct Cli {
        /// Log filter.
        #[arg(long, global = true)]
        log: Option<String>,
        #[command(subcommand)]
        cmd: Cmd,
    }

    #[derive(Subcommand)]
    enum Cmd {
        /// Move something: exit codes 0 moved, 3 rolled back.
        Move {
            /// Where to.
            #[arg(long)]
            to: String,
        },
        /// Keys.
        Ca {
            #[command(subcommand)]
            cmd: CaCmd,
        },
        #[command(hide = true)]
        Secret,
    }

    #[derive(Subcommand)]
    enum CaCmd {
        /// Issue a node's certificate.
        Issue { node: String },
    }

    #[test]
    fn a_page_per_visible_command_with_its_options_and_help_text() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(<Cli as clap::CommandFactory>::command(), dir.path()).unwrap();
        let mut names: Vec<String> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        names.sort();
        assert_eq!(names, ["tool-ca-issue.1", "tool-ca.1", "tool-move.1", "tool.1"]);
        let mv = fs::read_to_string(dir.path().join("tool-move.1")).unwrap();
        assert!(mv.contains(".TH tool-move 1"), "{mv}");
        assert!(mv.contains("exit codes 0 moved, 3 rolled back"), "{mv}");
        assert!(mv.contains("\\-\\-to"), "{mv}");
        // The global option is on the subcommand's page too.
        assert!(mv.contains("\\-\\-log"), "{mv}");
        let issue = fs::read_to_string(dir.path().join("tool-ca-issue.1")).unwrap();
        assert!(issue.contains("Issue a node"), "{issue}");
    }

    #[test]
    fn a_directory_that_cannot_be_made_fails_with_its_name() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let err = write_all(<Cli as clap::CommandFactory>::command(), &f.path().join("sub")).unwrap_err();
        assert!(format!("{err:#}").contains("create"), "{err:#}");
    }
}
