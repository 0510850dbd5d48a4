//! `rdmig softroce`: rdmig's rdma_rxe by hand (status, sysctls, reservations, expectations,
//! dirty logs, MR re-pinning).

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{parse_u64_auto, print_json};

#[derive(Args)]
pub struct SoftroceArgs {
    #[command(subcommand)]
    cmd: SoftroceCmd,
}

#[derive(Subcommand)]
enum SoftroceCmd {
    /// Control interface version, sysctls, reservations, pending requests and every QP, MR, MW
    /// and AH with its number and owning process.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Read or set the MigrOS-compatible sysctls (the next search starts at VALUE + minimum).
    Sysctl {
        #[arg(long)]
        last_qpn: Option<u32>,
        #[arg(long)]
        last_mrn: Option<u32>,
    },
    /// Reserve an index range so the normal allocator never hands it out (persistent until
    /// `drop`, since this command exits).
    Reserve {
        #[arg(value_enum)]
        obj: rdmig_rxe::Obj,
        first: u32,
        last: u32,
    },
    /// The next OBJ created by process PID gets exactly INDEX (and key byte KEY for MR/MW);
    /// that creation fails with EBUSY if the number is taken. Persistent until consumed or dropped.
    Expect {
        #[arg(value_enum)]
        obj: rdmig_rxe::Obj,
        index: u32,
        #[arg(long)]
        pid: i32,
        #[arg(long)]
        key: Option<u8>,
        #[arg(long, default_value = "")]
        device: String,
    },
    /// Drop a reservation or request by id, or --all of everybody's.
    Drop {
        id: Option<u32>,
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// The migration state of QP QPN: stopped, resuming, paused (its peer stopped), and its
    /// PAUSE and RESUME counters (JSON).
    QpState {
        qpn: u32,
        #[arg(long, default_value = "rxe0")]
        device: String,
    },
    /// Pages of MR INDEX (lkey >> 8) that rxe wrote since the last read; reading clears them
    /// unless --keep.
    Dirty {
        index: u32,
        #[arg(long, default_value = "rxe0")]
        device: String,
        #[arg(long)]
        keep: bool,
        #[arg(long)]
        json: bool,
    },
    /// Move user MR INDEX to the pages at VA in process PID (the one that registered it), e.g.
    /// after a restore registered it on placeholder pages; its QPs must be quiet (stopped).
    Repin {
        index: u32,
        #[arg(long)]
        pid: i32,
        /// New address of the MR's first byte (hex with 0x, or decimal).
        #[arg(long, value_parser = parse_u64_auto)]
        va: u64,
        #[arg(long, default_value = "rxe0")]
        device: String,
    },
}

pub fn run(a: SoftroceArgs) -> Result<ExitCode> {
    let cmd = a.cmd;
    use rdmig_rxe as sr;
    match cmd {
        SoftroceCmd::Status { json } => {
            let records = sr::status::read()?;
            if json {
                print_json(&records)?;
            } else {
                for r in records {
                    let f: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!("{:8} {}", r.kind, f.join(" "));
                }
            }
        }
        SoftroceCmd::Sysctl { last_qpn, last_mrn } => {
            if let Some(v) = last_qpn {
                sr::sysctl::set("last_qpn", v)?;
            }
            if let Some(v) = last_mrn {
                sr::sysctl::set("last_mrn", v)?;
            }
            println!("last_qpn={} last_mrn={}", sr::sysctl::get("last_qpn")?, sr::sysctl::get("last_mrn")?);
        }
        SoftroceCmd::Reserve { obj, first, last } => {
            let (id, busy) = sr::Ctl::open()?.reserve(obj, first, last, true)?;
            println!("reservation {id}: {obj:?} {first}-{last} ({busy} already in use)");
        }
        SoftroceCmd::Expect { obj, index, pid, key, device } => {
            let id = sr::Ctl::open()?.expect(obj, pid, index, key, &device, true)?;
            println!("request {id}: the next {obj:?} of pid {pid} gets {index}");
        }
        SoftroceCmd::Drop { id, all } => {
            let ctl = sr::Ctl::open()?;
            let n = match (id, all) {
                (Some(id), _) => ctl.drop_id(id)?,
                (None, true) => ctl.drop_all()?,
                (None, false) => anyhow::bail!("give an id or --all"),
            };
            println!("dropped {n}");
        }
        SoftroceCmd::Repin { index, pid, va, device } => {
            let n = sr::Ctl::open()?.mr_repin(&device, index, pid, va)?;
            println!("MR {index} on {device} now uses the {n} pages at {va:#x} of pid {pid}");
        }
        SoftroceCmd::QpState { qpn, device } => {
            let q = sr::Ctl::open()?.qp_query(&device, qpn)?;
            let bits = [
                (rdmig_rxe::QP_S_STOPPED, "stopped"),
                (rdmig_rxe::QP_S_RESUMING, "resuming"),
                (rdmig_rxe::QP_S_PAUSED, "paused"),
                (rdmig_rxe::QP_S_REQ_HELD, "req_held"),
            ];
            let flags: Vec<&str> = bits.iter().filter(|(b, _)| q.state & b != 0).map(|(_, n)| *n).collect();
            print_json(&serde_json::json!({ "qpn": qpn, "device": device, "flags": flags, "state": q }))?;
        }
        SoftroceCmd::Dirty { index, device, keep, json } => {
            let d = sr::Ctl::open()?.dirty(&device, index, !keep)?;
            if json {
                print_json(&d)?;
            } else {
                let p: Vec<String> = d.pages.iter().map(u64::to_string).collect();
                println!("MR {index} (lkey {:#x}, {} pages at {:#x}): {} dirty: {}", d.lkey, d.mr_pages, d.va, d.pages.len(), p.join(","));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
