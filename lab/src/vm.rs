//! The lab's virtual machines: qemu command lines, start, discovery and stop.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::host::open_netns;
use super::plan::NodePlan;
use super::LabError;

pub const QEMU: &str = "qemu-system-x86_64";

/// How a node caches the host's root file system (9p), which it mounts read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RootCache {
    /// Dentries, attributes and pages are kept: lookups and reads stay in the guest. A host file
    /// that changes while the lab is up may be seen stale until the lab is restarted.
    #[default]
    Loose,
    /// Every lookup and read goes to the host (slower: `criu check` about 2x, `podman` about 3x).
    None,
}

impl RootCache {
    /// The 9p `cache=` mount option.
    fn mount_option(self) -> &'static str {
        match self {
            RootCache::Loose => "loose",
            RootCache::None => "none",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Use KVM only where it is known to work, else TCG.
    Auto,
    /// Software emulation: slow but works everywhere (the default on this project's machines).
    Tcg,
    Kvm,
}

impl Accel {
    /// Resolves `Auto`. On the project's machines /dev/kvm is provided by `kvm_pvm`, under which a
    /// stock Debian guest hangs right after "Booting from ROM", so that case means TCG.
    pub fn resolve(self) -> (Accel, &'static str) {
        match self {
            Accel::Tcg => (Accel::Tcg, "asked for"),
            Accel::Kvm => (Accel::Kvm, "asked for"),
            Accel::Auto => {
                if Path::new("/sys/module/kvm_pvm").exists() {
                    (Accel::Tcg, "KVM here is kvm_pvm, under which Debian guests hang")
                } else if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_ok() {
                    (Accel::Kvm, "/dev/kvm is usable")
                } else {
                    (Accel::Tcg, "no usable /dev/kvm")
                }
            }
        }
    }

    /// `tcg_cpu` is the CPU model under TCG (KVM passes the host's through).
    fn qemu_args(self, tcg_cpu: &str) -> Vec<&str> {
        match self {
            Accel::Kvm => vec!["-accel", "kvm", "-cpu", "host"],
            _ => vec!["-accel", "tcg,thread=multi", "-cpu", tcg_cpu],
        }
    }
}

/// The CPU the nodes see under TCG: QEMU's `max` without ERMS ("enhanced REP MOVSB/STOSB").
///
/// With ERMS the guest kernel copies and clears memory with `rep movsb`/`rep stosb`, and TCG
/// emulates a string instruction one element at a time: one byte per step, where `rep movsq`
/// (the kernel's choice without ERMS) moves eight. Every copy to and from user space, every
/// zeroed page, every packet rxe builds pays for it. Measured side by side in one session on
/// this 2-core machine (2026-12-06): a pipe of 200 MB through `md5sum` in a node took 4.36 s
/// with `max` and 1.61 s without ERMS, and 20000 `ib_send_bw` messages of 4 KiB between two
/// nodes 7.2 s and 4.5-5.0 s (both ways: 9.3 s and 6.5-7.5 s). With an Intel vendor string it
/// was as slow as `max` (why was not looked into); `qemu64` with SSE4.2, PCLMUL and AES-NI was a
/// little faster still, but leaves out features (XSAVE, RDTSCP) that CRIU and applications see.
/// `experiments/lab-cpu-model.sh` measures models side by side.
pub const TCG_CPU: &str = "max,-erms";

/// Everything needed to start one node.
pub struct VmSpec<'a> {
    pub lab: &'a str,
    pub node: &'a NodePlan,
    pub dir: &'a Path,
    pub share: &'a Path,
    pub lab_share: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// The guest agent (`rdmig-lab`) as the node sees it.
    pub lab_bin: &'a Path,
    pub memory_mb: u32,
    pub cpus: u32,
    pub accel: Accel,
    pub tcg_cpu: &'a str,
    pub root_cache: RootCache,
}

impl VmSpec<'_> {
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |s: &str| a.push(s.into());
        push("-name");
        push(&format!("rdmig-{}-{},process=rdmig-{}-{}", self.lab, self.node.name, self.lab, self.node.name));
        push("-nodefaults");
        push("-no-user-config");
        for s in self.accel.qemu_args(self.tcg_cpu) {
            push(s);
        }
        push("-m");
        push(&self.memory_mb.to_string());
        push("-smp");
        push(&self.cpus.to_string());
        push("-display");
        push("none");
        push("-serial");
        push(&format!("file:{}", self.console().display()));
        push("-kernel");
        push(&self.kernel.display().to_string());
        push("-initrd");
        push(&self.initrd.display().to_string());
        push("-append");
        push(&format!(
            "console=ttyS0 panic=-1 quiet loglevel=4 rdmig.node={} rdmig.lab={} rdmig.rootcache={}",
            self.node.name,
            self.lab_bin.display(),
            self.root_cache.mount_option()
        ));
        // The host root, read-only: the guest runs the host's own binaries and kernel modules.
        push("-fsdev");
        push("local,id=root,path=/,security_model=none,readonly=on,multidevs=remap");
        push("-device");
        push("virtio-9p-pci,fsdev=root,mount_tag=rootfs");
        // The node's writable share: its configuration, status, logs and results.
        push("-fsdev");
        push(&format!("local,id=share,path={},security_model=none,multidevs=remap", self.share.display()));
        push("-device");
        push("virtio-9p-pci,fsdev=share,mount_tag=nodeshare");
        // The lab-wide share, at the same path on every node (like a cluster's shared file
        // system): where migrated applications keep files that must exist wherever they run.
        push("-fsdev");
        push(&format!("local,id=lab,path={},security_model=none,multidevs=remap", self.lab_share.display()));
        push("-device");
        push("virtio-9p-pci,fsdev=lab,mount_tag=labshare");
        push("-netdev");
        push(&format!("tap,id=u0,ifname={},script=no,downscript=no", self.node.tap));
        push("-device");
        // event_idx=off: with it, a kick the device misses is never repeated. Seen once in the
        // suite: node1's TX ring stood still for good (the guest's avail index 238 ahead of the
        // device's, whose avail_event asked for a kick at an index the guest had passed; the
        // kernel logged "NETDEV WATCHDOG: transmit queue 0 timed out" every 5 s) and the node was
        // unreachable. Without it the guest kicks whenever the device has not turned
        // notifications off, so the next packet (a TCP retransmission) restarts the ring.
        push(&format!("virtio-net-pci,netdev=u0,mac={},event_idx=off", self.node.mac));
        push("-qmp");
        push(&format!("unix:{},server=on,wait=off", self.dir.join("qmp.sock").display()));
        push("-no-reboot");
        push("-pidfile");
        push(&self.pidfile().display().to_string());
        push("-daemonize");
        a
    }

    /// Starts the VM inside the lab's network namespace (where its tap device is) and returns
    /// qemu's pid. qemu daemonizes, so the VM outlives this process.
    pub fn start(&self, netns: &str) -> Result<u32, LabError> {
        let ns = open_netns(netns)?;
        let mut cmd = Command::new(QEMU);
        cmd.args(self.args());
        // SAFETY: only setns(2) runs between fork and exec; it is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
        }
        let out = cmd.output().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LabError::Missing { what: QEMU.into(), fix: "apt-get install qemu-system-x86 (or run scripts/setup.sh)".into() }
            } else {
                LabError::io(format!("start {QEMU}"), e)
            }
        })?;
        if !out.status.success() {
            return Err(LabError::Boot {
                node: self.node.name.clone(),
                reason: format!("{QEMU} failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
                console: self.console().display().to_string(),
                tail: String::new(),
            });
        }
        read_pid(&self.pidfile()).ok_or_else(|| LabError::Boot {
            node: self.node.name.clone(),
            reason: format!("{QEMU} started but wrote no pid file"),
            console: self.console().display().to_string(),
            tail: String::new(),
        })
    }
}

pub fn read_pid(pidfile: &Path) -> Option<u32> {
    fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live process: a zombie (dead, not yet reaped by whoever adopted the
/// daemonized qemu) counts as gone.
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain ')'.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Every qemu process whose command line mentions `lab_dir`: found by scanning /proc rather than
/// trusting pid files, so a lab whose state was lost (a crash, a deleted directory) is still found.
pub fn find_lab_qemus(lab_dir: &Path) -> Vec<u32> {
    let needle = lab_dir.display().to_string();
    let mut pids = vec![];
    let Ok(rd) = fs::read_dir("/proc") else { return pids };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_qemu = args.first().map(|a| a.ends_with(QEMU.as_bytes())).unwrap_or(false);
        if is_qemu && args.iter().any(|a| String::from_utf8_lossy(a).contains(&needle)) {
            pids.push(pid);
        }
    }
    pids
}

/// Stops the given qemu processes: SIGTERM, then SIGKILL for any still there after `grace`.
pub fn stop(pids: &[u32], grace: Duration) {
    for &p in pids {
        let _ = kill(Pid::from_raw(p as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in pids {
        if alive(p) {
            let _ = kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
    }
    // qemu daemonized, so it is not our child and init reaps it; wait until it is really gone,
    // because its tap device stays busy until then.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(b) = fs::read(path) else {
        return format!("({} is not readable)", path.display());
    };
    let s = String::from_utf8_lossy(&b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
