//! `rdmig-presetup DIR [--hold SECS]`: makes the verbs objects of the context images in DIR
//! ahead of their restore and hands them off there (see `rdmig_criu::presetup`). Prints
//! `ready N` once the N contexts' hand-offs are written, then holds the objects until the
//! restore takes them (it then ends this process), SIGTERM, or SECS (default 600) pass; ending
//! destroys whatever was not taken.

use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: rdmig-presetup DIR [--hold SECS]

Makes the verbs objects (PDs, CQs, MRs, QPs with their handles, numbers and keys) of the
rdmig-rxe-<id>.img context images in CRIU images directory DIR before `criu restore` runs,
writes rdmig-presetup-<id>.json beside each, and holds the objects for rdmig's CRIU plugin to
take over during the restore. Prints \"ready N\" when done; exits when the restore took them,
on SIGTERM, or after SECS seconds (default 600), destroying what was not taken.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut dir = None;
    let mut hold = Duration::from_secs(600);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--hold" => match it.next().and_then(|s| s.parse::<u64>().ok()) {
                Some(s) => hold = Duration::from_secs(s),
                None => {
                    eprintln!("rdmig-presetup: --hold needs a number of seconds\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            d if dir.is_none() && !d.starts_with('-') => dir = Some(std::path::PathBuf::from(d)),
            other => {
                eprintln!("rdmig-presetup: unexpected argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let built = match rdmig_criu::presetup::build(&dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("rdmig-presetup: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ready {}", built.len());
    // The restore ends this process once it took the files; until then they are held here.
    std::thread::sleep(hold);
    eprintln!("rdmig-presetup: nobody took the objects within {} s; destroying them", hold.as_secs());
    drop(built);
    ExitCode::SUCCESS
}
