//! rdmig's CRIU plugin (issue 5) for Debian's stock CRIU 3.17.1: plugin ABI 0.2, 10 hook slots.
//!
//! Built as `librdmig_criu.so`; CRIU loads every `*.so` of its plugin directory (`criu -L DIR`,
//! `CRIU_LIBS_DIR`, or `/usr/lib/criu/`) and looks up the data symbol `CR_PLUGIN_DESC`.
//!
//! What it claims, and nothing else (everything else gets `-ENOTSUP`, so CRIU behaves as without
//! the plugin):
//! - mappings of `/dev/infiniband/uverbs*` (char major 231): the rxe queue rings;
//! - uverbs files (char major 231) and `anon_inode:[infinibandevent]` files;
//! - rdma_cm files (`/dev/infiniband/rdma_cm`, librdmacm's event channel: char major 10 and the
//!   minor `/sys/class/misc/rdma_cm/dev` gives), with their CM IDs (see [`cm`]).
//!
//! Hooks:
//! - `HANDLE_DEVICE_VMA` (dump, pre-dump; criu master): accepts uverbs mappings, so CRIU records
//!   them as shared file mappings instead of refusing the process.
//! - `DUMP_EXT_FILE` (dump; criu master): saves the verbs context of a uverbs file (see [`dump`])
//!   or an event file into `rdmig-rxe-<id>.img` (format in [`image`]), and the CM IDs of an
//!   rdma_cm file into `rdmig-ucma-<id>.img` ([`image::ucma`]; idle, bound and listening IDs
//!   only, for now); refuses, naming the object and the reason, what cannot be saved. CRIU then
//!   fails the dump and thaws the process.
//! - `RESTORE_EXT_FILE` (restore; inside the restored task): rebuilds the saved context on a new
//!   uverbs file (completion channels, PDs, CQs, MRs, SRQs, QPs with their old handles, numbers and
//!   keys; QPs loaded with the driver's image and left stopped) and puts the files at their old
//!   descriptor numbers (see [`restore`]); recreates the CM IDs of an rdma_cm file on a new one
//!   with their numbers, options, addresses and backlogs, and returns it for CRIU to place (see
//!   [`cm::restore`]).
//! - `UPDATE_VMA_MAP` (restore; inside the restored task): maps the rings at their old addresses
//!   from the new file.
//! - `RESUME_DEVICES_LATE` (restore; once memory is final): re-pins MRs on the restored pages,
//!   copies rings no QP image carries, binds MWs again, resumes QPs.
//! - `exit` (the descriptor's exit function): after a failed dump (or with `--leave-running`),
//!   resumes the QPs the dump stopped.
//!
//! Every hook catches panics; none unwinds into CRIU.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

// The hooks below call into `dump` and `restore`, which only order the work; each kind of verbs
// object saves and restores itself in `objects`. `common` is what both sides share, `procfs`
// the dump's look at the owning process, `handles` the restore's plan for the old handles;
// `cmd`, `uverbs` and `fdinfo` speak the kernel's interfaces; `device` opens the devices.
// `cm` is the rdma_cm file, on both sides (its own fdinfo lines, commands and image).
pub mod cm;
pub mod cmd;
pub mod common;
pub mod device;
pub mod dump;
pub mod fdinfo;
pub mod handles;
mod log;
pub mod objects;
pub mod presetup;
pub mod procfs;
pub mod restore;
pub mod uverbs;

pub use rdmig_image as image;
use rdmig_rxe as rxe;

use log::{debug, error, info};

/// CRIU_PLUGIN_VERSION 0.2.0 and CR_PLUGIN_HOOK__MAX of CRIU 3.17 (criu-plugin.h).
pub const CRIU_PLUGIN_VERSION: u32 = 0x200;
pub const CR_PLUGIN_HOOK_MAX: usize = 10;

// Hook slots (enum in criu-plugin.h).
const HOOK_DUMP_EXT_FILE: usize = 2;
const HOOK_RESTORE_EXT_FILE: usize = 3;
const HOOK_HANDLE_DEVICE_VMA: usize = 7;
const HOOK_UPDATE_VMA_MAP: usize = 8;
const HOOK_RESUME_DEVICES_LATE: usize = 9;

// Stages (criu-plugin.h).
const STAGE_DUMP: c_int = 0;
const STAGE_PRE_DUMP: c_int = 1;
const STAGE_RESTORE: c_int = 2;

/// `cr_plugin_desc_t`.
#[repr(C)]
pub struct CrPluginDesc {
    pub name: *const c_char,
    pub init: Option<unsafe extern "C" fn(c_int) -> c_int>,
    pub exit: Option<unsafe extern "C" fn(c_int, c_int)>,
    pub version: u32,
    pub max_hooks: u32,
    pub hooks: [*const c_void; CR_PLUGIN_HOOK_MAX],
}

// SAFETY: the descriptor is immutable after load; its pointers are to static code and a static
// string, which any thread may read.
unsafe impl Sync for CrPluginDesc {}

const fn hooks() -> [*const c_void; CR_PLUGIN_HOOK_MAX] {
    let mut h = [std::ptr::null(); CR_PLUGIN_HOOK_MAX];
    h[HOOK_DUMP_EXT_FILE] = dump_ext_file as *const c_void;
    h[HOOK_RESTORE_EXT_FILE] = restore_ext_file as *const c_void;
    h[HOOK_HANDLE_DEVICE_VMA] = handle_device_vma as *const c_void;
    h[HOOK_UPDATE_VMA_MAP] = update_vma_map as *const c_void;
    h[HOOK_RESUME_DEVICES_LATE] = resume_devices_late as *const c_void;
    h
}

/// The descriptor CRIU looks up with `dlsym(h, "CR_PLUGIN_DESC")`.
#[no_mangle]
pub static CR_PLUGIN_DESC: CrPluginDesc = CrPluginDesc {
    name: c"rdmig_rxe".as_ptr(),
    init: Some(plugin_init),
    exit: Some(plugin_exit),
    version: CRIU_PLUGIN_VERSION,
    max_hooks: CR_PLUGIN_HOOK_MAX as u32,
    hooks: hooks(),
};

/// Runs a hook body, turning a panic into `on_panic` (and a log line).
fn guard<T>(hook: &str, on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
            error!("{hook}: internal error (panic: {msg})");
            on_panic
        }
    }
}

fn stage_name(stage: c_int) -> &'static str {
    match stage {
        STAGE_DUMP => "dump",
        STAGE_PRE_DUMP => "pre-dump",
        STAGE_RESTORE => "restore",
        _ => "unknown stage",
    }
}

unsafe extern "C" fn plugin_init(stage: c_int) -> c_int {
    guard("init", -1, || {
        if !log::resolve() {
            // Not inside criu (or a criu without the exported helpers): refuse to load.
            log::log(log::Level::Error, "criu's print_on_level/criu_get_image_dir not found; not loading");
            return -1;
        }
        dump::reset();
        if stage == STAGE_RESTORE {
            restore::preload();
        }
        info!(
            "loaded for {} (image formats: verbs {}, rdma_cm {}; claims uverbs files, infinibandevent files, uverbs mappings and rdma_cm files)",
            stage_name(stage),
            image::FORMAT_VERSION,
            image::ucma::FORMAT_VERSION
        );
        0
    })
}

unsafe extern "C" fn plugin_exit(stage: c_int, ret: c_int) {
    guard("exit", (), || {
        debug!("{} finished with {ret}", stage_name(stage));
        if stage == STAGE_DUMP {
            let stopped = dump::take_stopped();
            let why = if ret != 0 {
                Some("the dump failed")
            } else if leave_running() {
                Some("the process keeps running (--leave-running)")
            } else {
                None
            };
            match why {
                Some(why) if !stopped.is_empty() => resume_stopped(&stopped, why),
                _ if !stopped.is_empty() => info!(
                    "{} QP(s) stay stopped for the restore: {:?} (their peers are paused until the restored QPs resume)",
                    stopped.len(),
                    stopped.iter().map(|s| s.1).collect::<Vec<_>>()
                ),
                _ => {}
            }
        }
        dump::reset();
    })
}

/// Whether this criu run leaves the process running after the dump (`--leave-running`/`-R` on
/// its command line; CRIU does not tell plugins otherwise).
fn leave_running() -> bool {
    std::fs::read("/proc/self/cmdline").map(|c| c.split(|b| *b == 0).any(|a| a == b"--leave-running" || a == b"-R")).unwrap_or(false)
}

/// Lets QPs stopped by a dump run again; their peers are told (RESUME) and continue.
fn resume_stopped(stopped: &[(String, u32)], why: &str) {
    let ctl = match device::open_ctl(None) {
        Ok(c) => c,
        Err(e) => {
            error!("{why}, but the stopped QPs {stopped:?} cannot be resumed: {e}");
            return;
        }
    };
    for (dev, qpn) in stopped {
        match ctl.qp_resume(dev, *qpn, 0) {
            Ok(_) => info!("{why}: QP {qpn} on {dev} resumed"),
            Err(e) => error!("{why}, but QP {qpn} on {dev} could not be resumed: {e}"),
        }
    }
}

/// HANDLE_DEVICE_VMA(fd, stat): 0 for uverbs mappings, -ENOTSUP otherwise.
unsafe extern "C" fn handle_device_vma(_fd: c_int, st: *const libc::stat) -> c_int {
    guard("handle_device_vma", -libc::ENOTSUP, || {
        if st.is_null() {
            return -libc::ENOTSUP;
        }
        // SAFETY: CRIU passes a valid `struct stat` of the mapping's file for the call.
        let st = unsafe { &*st };
        if (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && libc::major(st.st_rdev) == common::UVERBS_MAJOR {
            debug!("claiming a uverbs mapping (chr {}:{})", libc::major(st.st_rdev), libc::minor(st.st_rdev));
            0
        } else {
            -libc::ENOTSUP
        }
    })
}

/// DUMP_EXT_FILE(fd, id): CRIU calls it for every file it cannot dump itself; 0 when saved,
/// -ENOTSUP when not ours, -1 (and the reason in the log) when ours but refused.
unsafe extern "C" fn dump_ext_file(fd: c_int, id: c_int) -> c_int {
    guard("dump_ext_file", -1, || {
        let Some(claim) = dump::classify(fd) else {
            return -libc::ENOTSUP;
        };
        let what = if claim == dump::Claim::RdmaCm { "rdma_cm state" } else { "verbs state" };
        let Some(dir) = log::image_dir_fd() else {
            error!("file id {id}: criu_get_image_dir() gave no directory");
            return -1;
        };
        let t = std::time::Instant::now();
        match dump::dump_file(claim, fd, id as u32, dir) {
            Ok(()) => {
                log::times(image::timing::Kind::DumpRdma, t.elapsed());
                0
            }
            Err(e) => {
                error!("cannot dump {what}: {e}");
                -1
            }
        }
    })
}

/// RESTORE_EXT_FILE(id): runs inside the restored task; the new file's descriptor, which CRIU
/// moves to the process's fd number.
unsafe extern "C" fn restore_ext_file(id: c_int) -> c_int {
    let t = std::time::Instant::now();
    guard("restore_ext_file", -1, || match restore::restore_file(id as u32) {
        Ok(Some(fd)) => {
            log::times(image::timing::Kind::RestoreRdma, t.elapsed());
            fd
        }
        Ok(None) => -libc::ENOTSUP,
        Err(e) => {
            error!("cannot restore file id {id}: {e}; nothing is left on the device");
            -1
        }
    })
}

/// UPDATE_VMA_MAP(path, addr, old_pgoff, new_pgoff, plugin_fd): runs inside the restored task.
unsafe extern "C" fn update_vma_map(path: *const c_char, addr: u64, old_pgoff: u64, new: *mut u64, pfd: *mut c_int) -> c_int {
    guard("update_vma_map", -1, || {
        if path.is_null() {
            return -libc::ENOTSUP;
        }
        // SAFETY: CRIU passes the mapping's NUL-terminated path, valid for the call.
        let p = unsafe { CStr::from_ptr(path) }.to_string_lossy();
        if !p.trim_start_matches('/').starts_with("dev/infiniband/uverbs") {
            return -libc::ENOTSUP;
        }
        match restore::vma_map(addr, old_pgoff) {
            Some((new_pgoff, fd)) if !new.is_null() && !pfd.is_null() => {
                // SAFETY: CRIU passes valid out pointers for the call.
                unsafe {
                    *new = new_pgoff;
                    *pfd = fd;
                }
                debug!("ring at {addr:#x}: file offset {old_pgoff:#x} -> {new_pgoff:#x} on fd {fd}");
                1
            }
            _ => {
                error!("cannot restore the uverbs mapping at {addr:#x} (file offset {old_pgoff:#x}) of {p}: no restored verbs object has this ring");
                -1
            }
        }
    })
}

/// RESUME_DEVICES_LATE(pid): criu master, the task is stopped with its final memory layout.
unsafe extern "C" fn resume_devices_late(pid: c_int) -> c_int {
    let t = std::time::Instant::now();
    guard("resume_devices_late", -1, || match restore::resume_late(pid) {
        Ok(0) => -libc::ENOTSUP,
        Ok(_) => {
            log::times(image::timing::Kind::RestoreRdma, t.elapsed());
            0
        }
        Err(e) => {
            // CRIU only logs this hook's failure and would let the process run with stopped
            // QPs and MRs without the process's pages: kill it instead, so the failure is visible.
            error!("cannot finish the verbs restore of pid {pid}: {e}; killing it");
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            -1
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_matches_criu_3_17() {
        assert_eq!(std::mem::size_of::<CrPluginDesc>(), 8 + 8 + 8 + 4 + 4 + 8 * 10);
        assert_eq!(CR_PLUGIN_DESC.version, 0x200);
        assert_eq!(CR_PLUGIN_DESC.max_hooks, 10);
        // SAFETY: the name is a static NUL-terminated string.
        assert_eq!(unsafe { CStr::from_ptr(CR_PLUGIN_DESC.name) }.to_str().unwrap(), "rdmig_rxe");
        let set: Vec<usize> = (0..10).filter(|i| !CR_PLUGIN_DESC.hooks[*i].is_null()).collect();
        assert_eq!(set, vec![2, 3, 7, 8, 9]);
    }

    #[test]
    fn other_files_and_mappings_are_not_claimed() {
        let f = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: a valid fd and id; the hook only inspects the fd.
        assert_eq!(unsafe { dump_ext_file(std::os::fd::AsRawFd::as_raw_fd(&f), 1) }, -libc::ENOTSUP);
        // SAFETY: fstat into an owned buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::fstat(std::os::fd::AsRawFd::as_raw_fd(&f), &mut st) }, 0);
        // SAFETY: a valid stat pointer.
        assert_eq!(unsafe { handle_device_vma(0, &st) }, -libc::ENOTSUP);
        let mut fake = st;
        fake.st_rdev = libc::makedev(231, 192);
        // SAFETY: as above.
        assert_eq!(unsafe { handle_device_vma(0, &fake) }, 0);
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { update_vma_map(c"/usr/lib/libc.so".as_ptr(), 0, 0, std::ptr::null_mut(), std::ptr::null_mut()) }, -libc::ENOTSUP);
    }
}
