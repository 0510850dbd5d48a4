//! `rdmig lab`: a lab of SoftRoCE nodes in qemu virtual machines, for users without RDMA hardware.
//!
//! Each node boots Debian's 6.1 kernel with the host's root file system read-only (so it runs the
//! host's own rdmig, perftest and CRIU), a writable share directory, and `rdma_rxe` bound to a
//! VXLAN overlay (10.0.1.0/24) that runs over a private underlay: a bridge in a network namespace
//! of the lab's own. Nothing the lab sends leaves this machine.
//!
//! Layout of a lab directory (default `/run/rdmig/<name>`):
//! ```text
//! state.json           what `up` created: plan, pids, token (root-only)
//! initrd.cpio          the guests' initramfs (see initramfs.rs)
//! <node>/console.log   the serial console
//! <node>/qemu.pid, qmp.sock
//! ca/                  the lab cluster's CA (ca.pem, ca.key; the key never enters a node)
//! <node>/share/        the node's /mnt/node: node.json, status.json, agent.log, tls/ (its
//!                      certificate of the lab CA, what its agent and `rdmig migrate` use)
//! shared/              every node's /mnt/lab (same path everywhere, like a cluster file system)
//! ```

pub mod client;
mod error;
pub mod guest;
pub mod host;
pub mod initramfs;
pub mod perftest;
pub mod plan;
pub mod proto;
pub mod ssh;
pub mod unit;
pub mod vm;

use std::collections::BTreeMap;
use std::fs;
use std::io::{IsTerminal, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

pub use client::{ExecOutcome, NodeClient, Output};
pub use error::LabError;
use guest::{GuestConfig, AGENT_TLS_DIR, MIGRATION_PORT, STATUS_FILE};
use plan::{LabPlan, OVERLAY_DEV, OVERLAY_PREFIX_LEN};
use proto::{ExecSpec, NodeStatus, SpawnSpec};
pub use vm::{Accel, RootCache, TCG_CPU};

pub const DEFAULT_BASE: &str = "/run/rdmig";
/// Where every node mounts the lab-wide share.
pub const LAB_SHARE_IN_NODE: &str = "/mnt/lab";
const STATE_VERSION: u32 = 1;
/// Port of the guest agents, on the underlay only.
pub const AGENT_PORT: u16 = 7700;

/// What of rdmig a lab's nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Product {
    /// The rdmig package installed on this host (see [`find_installed`]), as a site runs it: its
    /// binary, its CRIU plugin from CRIU's own directory, and its agent as the systemd unit
    /// starts it.
    #[default]
    Installed,
    /// A developer's shortcut (`up --from-build`): the rdmig built beside rdmig-lab, copied into
    /// the lab share, its plugin given to CRIU with `-L`, its agent started with the lab's flags.
    Build,
}

/// Options of `rdmig lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub nodes: usize,
    pub memory_mb: u32,
    /// Nodes that get other memory than `memory_mb` (name, MiB): an experiment's large source
    /// and destination beside a small peer.
    pub memory_of: Vec<(String, u32)>,
    pub cpus: u32,
    pub accel: Accel,
    /// QEMU's `-cpu` under TCG ([`vm::TCG_CPU`] unless an experiment compares others).
    pub tcg_cpu: String,
    /// Kernel release such as `6.1.0-56-amd64`; None picks the newest installed 6.1.
    pub kernel: Option<String>,
    pub boot_timeout: Duration,
    pub keep_on_failure: bool,
    /// Which rdma_rxe the nodes load.
    pub rxe: RxeChoice,
    /// Draw progress bars (a terminal) or print a line per step (logs, CI).
    pub progress: bool,
    /// What of rdmig the nodes run.
    pub product: Product,
    /// How the nodes cache the host's root.
    pub root_cache: RootCache,
}

impl UpOptions {
    /// The memory of node `name`, MiB.
    pub fn memory_mb_of(&self, name: &str) -> u32 {
        self.memory_of.iter().rev().find(|(n, _)| n == name).map_or(self.memory_mb, |(_, m)| *m)
    }
}

/// Which rdma_rxe the lab's nodes load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RxeChoice {
    /// Debian's own module.
    Stock,
    /// Ours: softroce/ patches, built by scripts/build-softroce.sh for the lab's kernel: our
    /// ib_cm.ko and rdma_cm.ko (on the stock ib_core and iw_cm), ib_uverbs.ko, rdma_rxe.ko and
    /// rdma_ucm.ko.
    Rdmig,
    /// These module files, in load order.
    Modules(Vec<PathBuf>),
}

/// Our modules for `kver` in load order, `ib_cm.ko`, `rdma_cm.ko`, `ib_uverbs.ko`, `rdma_rxe.ko`
/// and `rdma_ucm.ko`, found next to the rdmig binary's checkout (or under $RDMIG_SOFTROCE_DIR) in
/// `softroce/build/out/<kver>/`.
pub fn find_rdmig_rxe(kver: &str) -> Result<Vec<PathBuf>, LabError> {
    let rel = PathBuf::from("build/out").join(kver);
    let mut candidates = vec![];
    if let Some(d) = std::env::var_os("RDMIG_SOFTROCE_DIR") {
        candidates.push(PathBuf::from(d).join(&rel));
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            candidates.push(dir.join("softroce").join(&rel));
        }
    }
    let files = ["ib_cm.ko", "rdma_cm.ko", "ib_uverbs.ko", "rdma_rxe.ko", "rdma_ucm.ko"];
    let dir = candidates.iter().find(|d| files.iter().all(|f| d.join(f).is_file())).ok_or_else(|| LabError::Missing {
        what: format!("rdmig's ib_cm.ko, rdma_cm.ko, ib_uverbs.ko, rdma_rxe.ko and rdma_ucm.ko for {kver}"),
        fix: "run scripts/build-softroce.sh (or start the lab with --rxe stock)".into(),
    })?;
    Ok(files.iter().map(|f| dir.join(f)).collect())
}

/// The rdmig package installed on this host, which the nodes see (they boot with its root).
#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    /// `dpkg-query` of package `rdmig`, e.g. "0.1.0-1".
    pub version: String,
    /// The agent's unit file.
    pub unit: PathBuf,
    /// The program its ExecStart runs.
    pub rdmig: PathBuf,
    /// The settings file the unit reads (each node gets its own copy mounted over it).
    pub env_file: PathBuf,
    /// The CRIU plugin, in CRIU's own plugin directory.
    pub plugin: PathBuf,
}

/// Where Debian puts a package's systemd units (/lib is /usr/lib on a merged-/usr system).
const UNIT_DIRS: [&str; 2] = ["/usr/lib/systemd/system", "/lib/systemd/system"];
pub const AGENT_UNIT: &str = "rdmig-agent.service";

/// The installed rdmig package: its version, the agent unit (parsed, so a unit the lab cannot
/// start is refused here), the program and settings file the unit names, and the plugin.
pub fn find_installed() -> Result<Installed, LabError> {
    let fix = || {
        "build and install it: packaging/build-deb.sh --install (scripts/test.sh and scripts/demo.sh install their own build's); \
         or run the build's snapshot instead: rdmig-lab up --from-build"
            .to_string()
    };
    let out = std::process::Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev} ${Version}", "rdmig"]).output();
    let version = match out {
        Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("ii ") => String::from_utf8_lossy(&o.stdout)[3..].trim().to_string(),
        _ => return Err(LabError::Missing { what: "the rdmig package on this host (dpkg-query -W rdmig)".into(), fix: fix() }),
    };
    let unit = UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(AGENT_UNIT))
        .find(|p| p.is_file())
        .ok_or_else(|| LabError::Missing { what: format!("{AGENT_UNIT} of the rdmig package {version}"), fix: fix() })?;
    let svc = unit::Service::load(&unit)?;
    let rdmig = svc.program().to_path_buf();
    if !rdmig.is_file() {
        return Err(LabError::Missing { what: format!("{} (ExecStart of {})", rdmig.display(), unit.display()), fix: fix() });
    }
    let env_file = svc
        .environment_files
        .iter()
        .find(|(_, optional)| !optional)
        .map(|(p, _)| p.clone())
        .ok_or_else(|| LabError::Invalid(format!("{} has no EnvironmentFile= for a node's settings", unit.display())))?;
    if !env_file.is_file() {
        return Err(LabError::Missing { what: format!("{} (EnvironmentFile of {})", env_file.display(), unit.display()), fix: fix() });
    }
    let plugin = Path::new(rdmig::criu::CRIU_PLUGIN_DIR).join(rdmig::criu::PLUGIN_SO);
    if !plugin.is_file() {
        return Err(LabError::Missing { what: format!("rdmig's CRIU plugin {}", plugin.display()), fix: fix() });
    }
    Ok(Installed { version, unit, rdmig, env_file, plugin })
}

/// A node's copy of the installed settings file, with the node's own values.
fn node_agent_env(installed: &Installed, node: &plan::NodePlan, nodes: usize, peers: &[String]) -> Result<String, LabError> {
    let text = fs::read_to_string(&installed.env_file).map_err(|e| LabError::io(format!("read {}", installed.env_file.display()), e))?;
    let header = format!("# {} for {} (written by rdmig-lab up)\n", installed.env_file.display(), node.name);
    Ok(header
        + &unit::set_in_environment_file(
            &text,
            &[
                ("RDMIG_LISTEN", format!("{}:{MIGRATION_PORT}", node.underlay_ip)),
                ("RDMIG_RDMA_ADDR", node.overlay_ip.to_string()),
                ("RDMIG_NUMBER_RANGE", format!("{}/{nodes}", node.index)),
                ("RDMIG_TLS_DIR", Lab::NODE_TLS_DIR.to_string()),
                ("RDMIG_ALLOW_PEERS", peers.join(",")),
                ("RDMIG_ALLOW_MOVE_ADDR", guest::MOVE_ADDR_RULE.to_string()),
                // The node's root is the host's, read-only: the work directory is on its tmpfs.
                ("RDMIG_WORK_DIR", guest::MIGRATION_WORK_DIR.to_string()),
                // Likewise the journal (the agent reads RDMIG_JOURNAL), where `rdmig-lab on` points.
                ("RDMIG_JOURNAL", guest::NODE_JOURNAL.to_string()),
            ],
        ))
}

/// What `up` created, persisted so every later command (and `down` after a crash) finds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub name: String,
    pub netns: String,
    pub kernel: String,
    pub accel: Accel,
    pub memory_mb: u32,
    pub cpus: u32,
    pub agent_port: u16,
    pub token: String,
    /// The rdmig binary as the nodes see it (a snapshot in the lab share, or the installed one).
    pub rdmig_bin: PathBuf,
    /// The version of the installed rdmig package the nodes run (None: `up --from-build`).
    #[serde(default)]
    pub installed: Option<String>,
    pub plan: LabPlan,
    pub pids: BTreeMap<String, u32>,
    pub created_unix: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeUp {
    pub node: String,
    pub underlay_ip: Ipv4Addr,
    pub overlay_ip: Ipv4Addr,
    /// From starting qemu to the agent answering with SoftRoCE active.
    pub boot_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub lab: String,
    pub dir: PathBuf,
    pub kernel: String,
    pub accel: Accel,
    pub accel_reason: String,
    pub rxe: Vec<PathBuf>,
    /// The installed package the nodes run, or None: the build's snapshot (`--from-build`).
    pub installed: Option<Installed>,
    /// The rdmig the nodes run.
    pub rdmig: PathBuf,
    pub cleaned_stale: bool,
    pub nodes: Vec<NodeUp>,
    pub total_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DownReport {
    pub stopped_pids: Vec<u32>,
    pub netns_deleted: bool,
    pub dir_removed: bool,
}

/// Anything a lab can leave on the host; all empty after a clean `down`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Leftovers {
    pub qemu_pids: Vec<u32>,
    pub netns: Option<String>,
    pub dir: Option<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.qemu_pids.is_empty() && self.netns.is_none() && self.dir.is_none()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    pub node: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub underlay_ip: Ipv4Addr,
    pub overlay_ip: Ipv4Addr,
    /// From the node's share directory (no network needed).
    pub status: Option<NodeStatus>,
    /// Whether the agent answered over the underlay just now.
    pub reachable: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub lab: String,
    pub dir: PathBuf,
    pub kernel: String,
    pub accel: Accel,
    pub nodes: Vec<NodeReport>,
}

pub struct Lab {
    pub name: String,
    pub base: PathBuf,
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn random_token() -> Result<String, LabError> {
    let mut b = [0u8; 32];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map_err(|e| LabError::io("read /dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), LabError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| LabError::io(format!("write {}", tmp.display()), e))?;
    f.write_all(data).map_err(|e| LabError::io(format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

fn mkdir_private(path: &Path) -> Result<(), LabError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path).map_err(|e| LabError::io(format!("create {}", path.display()), e))
}

/// The newest installed Debian 6.1 kernel with its modules, or the one asked for.
pub fn find_kernel(asked: Option<&str>) -> Result<String, LabError> {
    let usable = |k: &str| Path::new(&format!("/boot/vmlinuz-{k}")).is_file() && Path::new(&format!("/lib/modules/{k}/modules.dep")).is_file();
    if let Some(k) = asked {
        return if usable(k) {
            Ok(k.to_string())
        } else {
            Err(LabError::Missing { what: format!("kernel {k} (/boot/vmlinuz-{k} and /lib/modules/{k})"), fix: format!("apt-get install linux-image-{k}") })
        };
    }
    let mut found: Vec<String> = fs::read_dir("/boot")
        .map_err(|e| LabError::io("read /boot", e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("vmlinuz-").map(str::to_string))
        .filter(|k| k.starts_with("6.1.") && usable(k))
        .collect();
    // "6.1.0-56-amd64": order by the ABI number, numerically.
    found.sort_by_key(|k| k.split(['.', '-']).filter_map(|p| p.parse::<u32>().ok()).collect::<Vec<_>>());
    found.pop().ok_or_else(|| LabError::Missing {
        what: "Debian's 6.1 kernel (linux-image-6.1.*-amd64 in /boot)".into(),
        fix: "run scripts/setup.sh, or apt-get install linux-image-amd64".into(),
    })
}

fn check_qemu(accel: Accel) -> Result<(), LabError> {
    let out = host::run(vm::QEMU, &["-accel", "help"]).map_err(|e| match e {
        LabError::Missing { .. } => LabError::Missing { what: vm::QEMU.into(), fix: "apt-get install qemu-system-x86 (or run scripts/setup.sh)".into() },
        e => e,
    })?;
    let want = if accel == Accel::Kvm { "kvm" } else { "tcg" };
    if !out.lines().any(|l| l.trim() == want) {
        return Err(LabError::Missing {
            what: format!("the {want} accelerator in {}", vm::QEMU),
            fix: format!("{} -accel help lists: {}", vm::QEMU, out.split_whitespace().collect::<Vec<_>>().join(" ")),
        });
    }
    Ok(())
}

fn mem_available_mb() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

impl Lab {
    pub fn new(base: impl Into<PathBuf>, name: &str) -> Result<Self, LabError> {
        let ok = !name.is_empty() && name.len() <= 8 && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            return Err(LabError::Invalid(format!("lab name {name:?}: use 1 to 8 lowercase letters or digits")));
        }
        Ok(Self { name: name.to_string(), base: base.into() })
    }

    pub fn dir(&self) -> PathBuf {
        self.base.join(&self.name)
    }
    fn state_path(&self) -> PathBuf {
        self.dir().join("state.json")
    }
    pub fn netns(&self) -> String {
        format!("rdmig-{}", self.name)
    }
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.dir().join(node)
    }
    pub fn share_dir(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("share")
    }

    /// Serialises `up` and `down` of one lab.
    fn lock(&self) -> Result<Flock<fs::File>, LabError> {
        fs::create_dir_all(&self.base).map_err(|e| LabError::io(format!("create {}", self.base.display()), e))?;
        let path = self.base.join(format!("{}.lock", self.name));
        let f = fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| LabError::io(format!("open {}", path.display()), e))?;
        Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|_| LabError::InUse(format!("another `rdmig lab up/down` is running for lab {}", self.name)))
    }

    pub fn load(&self) -> Result<LabState, LabError> {
        let p = self.state_path();
        let b = fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LabError::NotUp { dir: self.dir() }
            } else {
                LabError::io(format!("read {}", p.display()), e)
            }
        })?;
        let st: LabState = serde_json::from_slice(&b).map_err(|e| LabError::Invalid(format!("{} is corrupt ({e}); run `rdmig lab down`", p.display())))?;
        if st.version != STATE_VERSION {
            return Err(LabError::Invalid(format!("{} was written by another rdmig version; run `rdmig lab down` and `up` again", p.display())));
        }
        Ok(st)
    }

    pub fn leftovers(&self) -> Leftovers {
        let ns = self.netns();
        Leftovers { qemu_pids: vm::find_lab_qemus(&self.dir()), netns: host::netns_exists(&ns).then_some(ns), dir: self.dir().exists().then(|| self.dir()) }
    }

    /// Stops everything the lab started and removes its namespace and directory. Idempotent, and
    /// independent of state.json, so it also cleans up after a crash.
    pub fn down(&self) -> Result<DownReport, LabError> {
        let _lock = self.lock()?;
        self.teardown()
    }

    fn teardown(&self) -> Result<DownReport, LabError> {
        let mut pids: Vec<u32> = self.load().map(|s| s.pids.values().copied().collect()).unwrap_or_default();
        for p in vm::find_lab_qemus(&self.dir()) {
            if !pids.contains(&p) {
                pids.push(p);
            }
        }
        pids.retain(|&p| vm::alive(p));
        vm::stop(&pids, Duration::from_secs(3));
        let ns = self.netns();
        let netns_deleted = host::netns_exists(&ns);
        host::delete_netns(&ns)?;
        let dir_removed = self.dir().exists();
        if dir_removed {
            fs::remove_dir_all(self.dir()).map_err(|e| LabError::io(format!("remove {}", self.dir().display()), e))?;
        }
        let left = self.leftovers();
        if !left.is_empty() {
            return Err(LabError::InUse(format!("lab {} could not be removed completely: {left:?}", self.name)));
        }
        Ok(DownReport { stopped_pids: pids, netns_deleted, dir_removed })
    }

    /// A namespace of this name that `up` did not record is ours only if it has our bridge.
    fn netns_is_ours(&self) -> bool {
        host::netns_links(&self.netns()).map(|l| l.iter().any(|n| n == "rdmbr0")).unwrap_or(false)
    }

    pub async fn up(&self, o: &UpOptions) -> Result<UpReport, LabError> {
        let t0 = Instant::now();
        if !nix::unistd::geteuid().is_root() {
            return Err(LabError::NotRoot);
        }
        let plan = LabPlan::new(o.nodes)?;
        let (accel, accel_reason) = o.accel.resolve();
        check_qemu(accel)?;
        host::run("ip", &["-V"])?;
        initramfs::find_busybox()?;
        let kernel = find_kernel(o.kernel.as_deref())?;
        let rxe_modules = match &o.rxe {
            RxeChoice::Stock => vec![],
            RxeChoice::Rdmig => find_rdmig_rxe(&kernel)?,
            RxeChoice::Modules(m) => m.clone(),
        };
        for m in &rxe_modules {
            if !m.is_absolute() || !m.is_file() {
                return Err(LabError::Invalid(format!("rxe module {} is not an existing absolute path", m.display())));
            }
        }
        if o.product == Product::Installed && o.rxe == RxeChoice::Stock {
            return Err(LabError::Invalid(
                "the installed agent runs with a number range, which needs rdmig's rdma_rxe: stock rdma_rxe only with --from-build".into(),
            ));
        }
        let installed = match o.product {
            Product::Installed => Some(find_installed()?),
            Product::Build => None,
        };
        // This lab binary and the product it runs in the nodes are built side by side.
        let lab_bin = std::env::current_exe().map_err(|e| LabError::io("locate the rdmig-lab binary", e))?;
        let rdmig_bin = lab_bin.with_file_name("rdmig");
        if installed.is_none() && !rdmig_bin.is_file() {
            return Err(LabError::Invalid(format!(
                "{} is missing: the nodes run the rdmig built beside rdmig-lab (cargo build --workspace)",
                rdmig_bin.display()
            )));
        }
        if rdmig_bin.to_string_lossy().chars().any(char::is_whitespace) {
            return Err(LabError::Invalid(format!("the rdmig binary's path {} contains white space; the guests cannot be told it", rdmig_bin.display())));
        }
        for (name, _) in &o.memory_of {
            plan.node(name)?;
        }
        let memory: Vec<u32> = plan.nodes.iter().map(|n| o.memory_mb_of(&n.name)).collect();
        let need: u64 = memory.iter().map(|&m| m as u64 + 128).sum();
        if let Some(avail) = mem_available_mb() {
            if avail < need {
                let each: Vec<String> = memory.iter().map(u32::to_string).collect();
                return Err(LabError::Invalid(format!(
                    "{} nodes of {} MiB need about {need} MiB but only {avail} MiB are available; use fewer nodes, --memory or --node-memory",
                    o.nodes,
                    each.join("+")
                )));
            }
        }

        let _lock = self.lock()?;
        let stale = self.state_path().exists() || !vm::find_lab_qemus(&self.dir()).is_empty() || (host::netns_exists(&self.netns()) && self.netns_is_ours());
        if stale {
            warn!(lab = %self.name, "cleaning up a stale lab");
            self.teardown()?;
        }
        // A namespace of our name that is not ours: refuse rather than delete someone's.
        if host::netns_exists(&self.netns()) {
            return Err(LabError::InUse(format!("network namespace {} exists and was not made by rdmig; remove it or use --name", self.netns())));
        }
        let dir = self.dir();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| LabError::io(format!("remove {}", dir.display()), e))?;
        }
        mkdir_private(&dir)?;

        // The guests run rdmig (and its sibling tools) from a copy in the lab directory: a
        // rebuild on the host rewrites target/debug/rdmig in place, and a guest executing it
        // over 9p would then read torn pages (the host cannot refuse with ETXTBSY for them).
        // The copy lives in the lab-wide share, which every node mounts at /mnt/lab (the host's
        // /run, where the lab directory is, is not visible in the nodes).
        // Likewise the rxe modules: the nodes mount tmpfs over /tmp, /run and /root, so a
        // checkout there is invisible to them; the share is visible wherever the repo lives.
        // Running the installed package (the default), the snapshot holds only the lab's own
        // programs: rdmig and its plugin come from the package (dpkg replaces files by
        // renaming, so nothing is torn there).
        let staged = snapshot_binaries(&rdmig_bin, &dir.join("shared").join("bin"), installed.is_none())
            .and_then(|_| stage_files(&rxe_modules, &dir.join("shared").join("modules"), "modules"));
        let snapshot = PathBuf::from(LAB_SHARE_IN_NODE).join("bin");
        let (rdmig_bin, rxe_modules) = match staged {
            Ok(mods) => (installed.as_ref().map(|i| i.rdmig.clone()).unwrap_or_else(|| snapshot.join("rdmig")), mods),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let nodes_bins = NodeBinaries { lab: snapshot.join("rdmig-lab"), rdmig: rdmig_bin.clone(), installed: installed.clone() };
        let result = self.boot(o, &plan, accel, &kernel, &nodes_bins, &rxe_modules, t0).await;
        match result {
            Ok(nodes) => Ok(UpReport {
                lab: self.name.clone(),
                dir,
                kernel,
                accel,
                accel_reason: accel_reason.to_string(),
                rxe: rxe_modules.clone(),
                installed,
                rdmig: rdmig_bin,
                cleaned_stale: stale,
                nodes,
                total_ms: t0.elapsed().as_millis() as u64,
            }),
            Err(e) => {
                if !o.keep_on_failure {
                    if let Err(e2) = self.teardown() {
                        warn!("cleaning up after the failed start: {e2}");
                    }
                }
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site, each argument a distinct fact of `up`
    async fn boot(
        &self,
        o: &UpOptions,
        plan: &LabPlan,
        accel: Accel,
        kernel: &str,
        bins: &NodeBinaries,
        rxe_modules: &[PathBuf],
        t0: Instant,
    ) -> Result<Vec<NodeUp>, LabError> {
        let dir = self.dir();
        let initrd = dir.join("initrd.cpio");
        initramfs::build(kernel, &initrd)?;
        info!(ms = t0.elapsed().as_millis() as u64, "initramfs built");
        let token = random_token()?;
        let mut state = LabState {
            version: STATE_VERSION,
            name: self.name.clone(),
            netns: self.netns(),
            kernel: kernel.to_string(),
            accel,
            memory_mb: o.memory_mb,
            cpus: o.cpus,
            agent_port: AGENT_PORT,
            token: token.clone(),
            rdmig_bin: bins.rdmig.clone(),
            installed: bins.installed.as_ref().map(|i| i.version.clone()),
            plan: plan.clone(),
            pids: BTreeMap::new(),
            created_unix: now_unix(),
        };
        // Saved before anything is started, so a crash from here on is cleaned up by `down`.
        self.save(&state)?;
        host::create_netns(&state.netns, plan)?;

        let kernel_img = PathBuf::from(format!("/boot/vmlinuz-{kernel}"));
        let lab_share = dir.join("shared");
        fs::create_dir_all(&lab_share).map_err(|e| LabError::io(format!("create {}", lab_share.display()), e))?;
        // The lab cluster's CA (its key stays on the host), and a certificate per node below.
        let ca_dir = self.ca_dir();
        let _ = fs::remove_dir_all(&ca_dir);
        rdmig_proto::ca::init(&ca_dir, &self.name).map_err(|e| LabError::Invalid(format!("the lab's CA: {e}")))?;
        // sshd in the nodes serves the scp baseline; without it the lab works, that baseline not.
        let ssh = ssh::available();
        if ssh {
            ssh::prepare(&lab_share)?;
        } else {
            warn!("{} or ssh-keygen is missing: the nodes run no sshd (`--transport scp` will not work; install openssh-server)", ssh::SSHD);
        }
        let mut started = BTreeMap::new();
        for node in &plan.nodes {
            let ndir = self.node_dir(&node.name);
            let share = self.share_dir(&node.name);
            mkdir_private(&share)?;
            let cfg = GuestConfig {
                node: node.clone(),
                peers: plan.nodes.iter().filter(|n| n.name != node.name).map(|n| n.underlay_ip).collect(),
                token: token.clone(),
                agent_port: AGENT_PORT,
                rxe_modules: rxe_modules.to_vec(),
                ssh,
                agent_unit: bins.installed.as_ref().map(|i| i.unit.clone()),
                allow_peers: plan.nodes.iter().map(|n| n.name.clone()).collect(),
            };
            if let Some(i) = &bins.installed {
                write_private(&share.join(guest::AGENT_ENV_FILE), node_agent_env(i, node, plan.nodes.len(), &cfg.allow_peers)?.as_bytes())?;
            }
            write_private(&share.join("node.json"), &serde_json::to_vec_pretty(&cfg).expect("serializes"))?;
            self.issue_cert(&node.name, &[node.underlay_ip.into()], &share.join(AGENT_TLS_DIR))?;
            let spec = vm::VmSpec {
                lab: &self.name,
                node,
                dir: &ndir,
                share: &share,
                lab_share: &lab_share,
                kernel: &kernel_img,
                initrd: &initrd,
                lab_bin: &bins.lab,
                memory_mb: o.memory_mb_of(&node.name),
                cpus: o.cpus,
                accel,
                tcg_cpu: &o.tcg_cpu,
                root_cache: o.root_cache,
            };
            let pid = spec.start(&state.netns)?;
            started.insert(node.name.clone(), Instant::now());
            state.pids.insert(node.name.clone(), pid);
            self.save(&state)?;
            info!(node = %node.name, pid, "qemu started");
        }
        self.wait_ready(&state, &started, o).await
    }

    fn save(&self, st: &LabState) -> Result<(), LabError> {
        write_private(&self.state_path(), &serde_json::to_vec_pretty(st).expect("serializes"))
    }

    fn read_status(&self, node: &str) -> Option<NodeStatus> {
        let b = fs::read(self.share_dir(node).join(STATUS_FILE)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn boot_error(&self, node: &str, reason: String) -> LabError {
        let console = self.node_dir(node).join("console.log");
        let mut tail = vm::tail(&console, 25);
        let agent_log = self.share_dir(node).join("agent.log");
        if agent_log.exists() {
            tail.push_str(&format!("\n--- last lines of {} ---\n{}", agent_log.display(), vm::tail(&agent_log, 15)));
        }
        LabError::Boot { node: node.to_string(), reason, console: console.display().to_string(), tail }
    }

    /// Waits until every node reports SoftRoCE active and its agent answers on the underlay.
    async fn wait_ready(&self, st: &LabState, started: &BTreeMap<String, Instant>, o: &UpOptions) -> Result<Vec<NodeUp>, LabError> {
        let tty = o.progress && std::io::stderr().is_terminal();
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{spinner} {prefix:6} {elapsed:>4} {msg}").expect("valid template");
        let bars: BTreeMap<&str, ProgressBar> = st
            .plan
            .nodes
            .iter()
            .map(|n| {
                let pb = if tty { multi.add(ProgressBar::new_spinner()) } else { ProgressBar::hidden() };
                pb.set_style(style.clone());
                pb.set_prefix(n.name.clone());
                pb.set_message("booting");
                pb.enable_steady_tick(Duration::from_millis(120));
                (n.name.as_str(), pb)
            })
            .collect();
        let say = |node: &str, msg: &str| {
            if tty {
                bars[node].set_message(msg.to_string());
            } else if o.progress {
                eprintln!("{node}: {msg}");
            }
        };

        let deadline = Instant::now() + o.boot_timeout;
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut done: BTreeMap<String, NodeUp> = BTreeMap::new();
        while done.len() < st.plan.nodes.len() {
            for n in &st.plan.nodes {
                if done.contains_key(&n.name) {
                    continue;
                }
                let pid = st.pids[&n.name];
                if !vm::alive(pid) {
                    return Err(self.boot_error(&n.name, format!("qemu (pid {pid}) exited")));
                }
                let init_error = self.share_dir(&n.name).join("init-error");
                if let Ok(msg) = fs::read_to_string(&init_error) {
                    return Err(self.boot_error(&n.name, format!("the node's init failed: {}", msg.trim())));
                }
                let step = match self.read_status(&n.name) {
                    None => "booting".to_string(),
                    Some(NodeStatus::SettingUp { step }) => step,
                    Some(NodeStatus::Failed { step, error }) => {
                        return Err(self.boot_error(&n.name, format!("set-up step {step:?} failed: {error}")));
                    }
                    Some(NodeStatus::Ready { .. }) => match self.client(st, &n.name)?.ping(Duration::from_secs(3)).await {
                        Ok(NodeStatus::Ready { .. }) => {
                            let ms = started[&n.name].elapsed().as_millis() as u64;
                            let msg = format!("ready in {:.1} s", ms as f64 / 1000.0);
                            bars[n.name.as_str()].finish_with_message(msg.clone());
                            if !tty && o.progress {
                                eprintln!("{}: {msg}", n.name);
                            }
                            done.insert(n.name.clone(), NodeUp { node: n.name.clone(), underlay_ip: n.underlay_ip, overlay_ip: n.overlay_ip, boot_ms: ms });
                            continue;
                        }
                        _ => "reaching the agent".to_string(),
                    },
                };
                if last.get(&n.name) != Some(&step) {
                    say(&n.name, &step);
                    last.insert(n.name.clone(), step);
                }
            }
            if done.len() == st.plan.nodes.len() {
                break;
            }
            if Instant::now() > deadline {
                let waiting = st.plan.nodes.iter().find(|n| !done.contains_key(&n.name)).expect("one is waiting");
                let step = last.get(&waiting.name).cloned().unwrap_or_default();
                return Err(self.boot_error(&waiting.name, format!("not ready after {} s (last step: {step})", o.boot_timeout.as_secs())));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(st.plan.nodes.iter().map(|n| done[&n.name].clone()).collect())
    }

    pub fn client(&self, st: &LabState, node: &str) -> Result<NodeClient, LabError> {
        let n = st.plan.node(node)?;
        Ok(NodeClient { node: n.name.clone(), netns: st.netns.clone(), addr: SocketAddr::from((n.underlay_ip, st.agent_port)), token: st.token.clone() })
    }

    pub async fn exec(&self, node: &str, spec: ExecSpec, output: Output) -> Result<ExecOutcome, LabError> {
        let st = self.load()?;
        self.client(&st, node)?.exec(spec, output).await
    }

    /// Starts a detached process on `node` (see `SpawnSpec`); returns its pid there.
    pub async fn spawn(&self, node: &str, spec: SpawnSpec) -> Result<u32, LabError> {
        let st = self.load()?;
        self.client(&st, node)?.spawn(spec).await
    }

    /// Where `node`'s migration agent listens (on the underlay).
    pub fn agent_addr(&self, st: &LabState, node: &str) -> Result<SocketAddr, LabError> {
        Ok(SocketAddr::from((st.plan.node(node)?.underlay_ip, MIGRATION_PORT)))
    }

    /// Every node's TLS directory (its certificate of the lab CA), inside the node.
    pub const NODE_TLS_DIR: &'static str = "/mnt/node/tls";

    /// The lab cluster's CA directory (on the host).
    pub fn ca_dir(&self) -> PathBuf {
        self.dir().join("ca")
    }

    /// A certificate of the lab CA for node name `name` (and `ips`) in directory `out` (replaced
    /// if it exists): what `rdmig ca issue` writes. Tests use it for names that are not nodes.
    pub fn issue_cert(&self, name: &str, ips: &[std::net::IpAddr], out: &Path) -> Result<(), LabError> {
        let _ = fs::remove_dir_all(out);
        rdmig_proto::ca::issue(&self.ca_dir(), name, ips, out).map_err(|e| LabError::Invalid(format!("certificate for {name}: {e}")))
    }

    /// Runs `argv` on `node`, capturing output; an error if it does not exit 0.
    pub async fn run_ok(&self, node: &str, argv: &[&str]) -> Result<String, LabError> {
        let spec = ExecSpec { argv: argv.iter().map(|s| s.to_string()).collect(), timeout_ms: Some(60_000), ..Default::default() };
        let out = self.exec(node, spec, Output::Capture).await?;
        if !out.success() {
            return Err(LabError::Command {
                cmd: format!("{node}: {}", argv.join(" ")),
                status: format!("exit {}", out.shell_code()),
                stderr: out.stderr_str().trim().to_string(),
            });
        }
        Ok(out.stdout_str())
    }

    pub async fn status(&self) -> Result<StatusReport, LabError> {
        let st = self.load()?;
        let mut nodes = vec![];
        for n in &st.plan.nodes {
            let pid = st.pids.get(&n.name).copied();
            let running = pid.is_some_and(vm::alive);
            let (reachable, error) = if running {
                match self.client(&st, &n.name)?.ping(Duration::from_secs(3)).await {
                    Ok(_) => (true, None),
                    Err(e) => (false, Some(e.to_string())),
                }
            } else {
                (false, Some("qemu is not running".into()))
            };
            nodes.push(NodeReport {
                node: n.name.clone(),
                pid,
                running,
                underlay_ip: n.underlay_ip,
                overlay_ip: n.overlay_ip,
                status: self.read_status(&n.name),
                reachable,
                error,
            });
        }
        Ok(StatusReport { lab: self.name.clone(), dir: self.dir(), kernel: st.kernel, accel: st.accel, nodes })
    }

    /// The node's console and agent logs, last `lines` lines of each.
    pub fn logs(&self, node: &str, lines: usize) -> Result<String, LabError> {
        let st = self.load()?;
        st.plan.node(node)?;
        let console = self.node_dir(node).join("console.log");
        let agent = self.share_dir(node).join("agent.log");
        // The migration agent's own log says why it refused or dropped a connection.
        let migration = self.share_dir(node).join("migration-agent.log");
        Ok(format!(
            "=== {node} console ({}) ===\n{}\n=== {node} guest agent ({}) ===\n{}\n=== {node} migration agent ({}) ===\n{}\n",
            console.display(),
            vm::tail(&console, lines),
            agent.display(),
            vm::tail(&agent, lines),
            migration.display(),
            vm::tail(&migration, lines)
        ))
    }

    /// The extra overlay addresses each node holds (its own address left out).
    pub async fn overlay_addrs(&self) -> Result<BTreeMap<String, Vec<Ipv4Addr>>, LabError> {
        let st = self.load()?;
        let mut out = BTreeMap::new();
        for n in &st.plan.nodes {
            let text = self.run_ok(&n.name, &["ip", "-o", "-4", "addr", "show", "dev", OVERLAY_DEV]).await?;
            let addrs = parse_ip_addr_show(&text).into_iter().filter(|a| *a != n.overlay_ip).collect();
            out.insert(n.name.clone(), addrs);
        }
        Ok(out)
    }

    /// Adds an extra overlay address on `node` and announces it with gratuitous ARP, so peers'
    /// neighbour caches and the VXLAN forwarding tables point at its new home at once.
    pub async fn addr_add(&self, node: &str, addr: Ipv4Addr) -> Result<(), LabError> {
        let st = self.load()?;
        st.plan.node(node)?;
        plan::check_extra_overlay_addr(&st.plan, addr)?;
        if let Some((holder, _)) = self.overlay_addrs().await?.into_iter().find(|(_, a)| a.contains(&addr)) {
            return Err(LabError::InUse(format!("{addr} is already on {holder}; use `rdmig lab addr move`")));
        }
        let cidr = format!("{addr}/{OVERLAY_PREFIX_LEN}");
        self.run_ok(node, &["ip", "addr", "add", &cidr, "dev", OVERLAY_DEV]).await?;
        let a = addr.to_string();
        self.run_ok(node, &["arping", "-q", "-U", "-c", "2", "-w", "2", "-I", OVERLAY_DEV, &a]).await.or_else(|e| {
            // arping -U exits 1 when nobody answers, which is normal for unsolicited ARP.
            match &e {
                LabError::Command { status, .. } if status == "exit 1" => Ok(String::new()),
                _ => Err(e),
            }
        })?;
        Ok(())
    }

    pub async fn addr_del(&self, node: &str, addr: Ipv4Addr) -> Result<(), LabError> {
        let st = self.load()?;
        st.plan.node(node)?;
        plan::check_extra_overlay_addr(&st.plan, addr)?;
        let cidr = format!("{addr}/{OVERLAY_PREFIX_LEN}");
        self.run_ok(node, &["ip", "addr", "del", &cidr, "dev", OVERLAY_DEV]).await.map(|_| ())
    }

    /// Moves an extra overlay address to `to`; returns the node it came from.
    pub async fn addr_move(&self, addr: Ipv4Addr, to: &str) -> Result<String, LabError> {
        let st = self.load()?;
        st.plan.node(to)?;
        plan::check_extra_overlay_addr(&st.plan, addr)?;
        let holder = self
            .overlay_addrs()
            .await?
            .into_iter()
            .find(|(_, a)| a.contains(&addr))
            .map(|(n, _)| n)
            .ok_or_else(|| LabError::Invalid(format!("no node holds {addr}; add it with `rdmig lab addr add`")))?;
        if holder == to {
            return Err(LabError::Invalid(format!("{addr} is already on {to}")));
        }
        self.addr_del(&holder, addr).await?;
        if let Err(e) = self.addr_add(to, addr).await {
            // Put it back so the address is not lost.
            let _ = self.addr_add(&holder, addr).await;
            return Err(e);
        }
        Ok(holder)
    }
}

/// What the nodes run, as they see it.
struct NodeBinaries {
    /// The guest agent (`rdmig-lab` of the snapshot).
    lab: PathBuf,
    /// rdmig: the snapshot's, or the installed one.
    rdmig: PathBuf,
    installed: Option<Installed>,
}

/// Copies the `rdmig-*` tools beside `rdmig` into `dest`, and with `product` `rdmig` and rdmig's
/// CRIU plugin too; returns the path `rdmig` has (or would have) there.
fn snapshot_binaries(rdmig: &Path, dest: &Path, product: bool) -> Result<PathBuf, LabError> {
    fs::create_dir_all(dest).map_err(|e| LabError::io(format!("create {}", dest.display()), e))?;
    let dir = rdmig.parent().unwrap_or(Path::new("."));
    let rd = fs::read_dir(dir).map_err(|e| LabError::io(format!("read {}", dir.display()), e))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let n = name.to_string_lossy();
        let is_product = n == "rdmig" || n == rdmig::criu::PLUGIN_SO;
        let is_tool = (product && is_product) || (n.starts_with("rdmig-") && !n.contains('.'));
        if is_tool && e.file_type().map(|t| t.is_file()).unwrap_or(false) {
            fs::copy(e.path(), dest.join(&name)).map_err(|err| LabError::io(format!("copy {}", e.path().display()), err))?;
        }
    }
    Ok(dest.join("rdmig"))
}

/// Copies `files` into `dest` (a directory of the lab share, `sub` inside it); returns their
/// paths as the nodes see them, in the same order.
fn stage_files(files: &[PathBuf], dest: &Path, sub: &str) -> Result<Vec<PathBuf>, LabError> {
    if files.is_empty() {
        return Ok(vec![]);
    }
    fs::create_dir_all(dest).map_err(|e| LabError::io(format!("create {}", dest.display()), e))?;
    files
        .iter()
        .map(|f| {
            let name = f.file_name().ok_or_else(|| LabError::Invalid(format!("{} has no file name", f.display())))?;
            fs::copy(f, dest.join(name)).map_err(|e| LabError::io(format!("copy {}", f.display()), e))?;
            Ok(PathBuf::from(LAB_SHARE_IN_NODE).join(sub).join(name))
        })
        .collect()
}

/// IPv4 addresses from `ip -o -4 addr show` output.
fn parse_ip_addr_show(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.position(|x| x == "inet")?;
            w.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_gets_its_own_memory_or_the_lab_s() {
        let o = UpOptions {
            nodes: 3,
            memory_mb: 4096,
            memory_of: vec![("node2".into(), 1024), ("node3".into(), 512), ("node3".into(), 2048)],
            cpus: 1,
            accel: Accel::Tcg,
            tcg_cpu: TCG_CPU.into(),
            kernel: None,
            boot_timeout: Duration::from_secs(1),
            keep_on_failure: false,
            rxe: RxeChoice::Rdmig,
            progress: false,
            product: Product::Build,
            root_cache: RootCache::Loose,
        };
        assert_eq!(o.memory_mb_of("node1"), 4096);
        assert_eq!(o.memory_mb_of("node2"), 1024);
        // the last one given wins, as for any repeated option
        assert_eq!(o.memory_mb_of("node3"), 2048);
    }

    /// What `find_installed` looks for is where the rdmig package's file list puts it: the unit in
    /// a systemd unit directory, its ExecStart program, its EnvironmentFile as a conffile, and the
    /// plugin in CRIU's directory.
    #[test]
    fn the_package_file_list_installs_what_the_lab_looks_for() {
        let list = include_str!("../../packaging/rdmig/files");
        let entries: Vec<(&str, &str, Vec<&str>)> = list
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[0], f[1], f[3..].to_vec())
            })
            .collect();
        let dest = |d: &str| entries.iter().find(|e| e.1 == d).unwrap_or_else(|| panic!("packaging/rdmig/files installs no {d}"));
        let unit_src = UNIT_DIRS.iter().map(|d| format!("{d}/{AGENT_UNIT}")).find_map(|d| entries.iter().find(|e| e.1 == d)).expect("the unit").0;
        assert_eq!(unit_src, "packaging/rdmig/rdmig-agent.service");
        let svc = unit::Service::parse(Path::new(AGENT_UNIT), include_str!("../../packaging/rdmig/rdmig-agent.service")).unwrap();
        dest(&svc.program().display().to_string());
        for (env, _) in &svc.environment_files {
            assert!(dest(&env.display().to_string()).2.contains(&"conffile"), "{} is not a conffile", env.display());
        }
        dest(&format!("{}/{}", rdmig::criu::CRIU_PLUGIN_DIR, rdmig::criu::PLUGIN_SO));
    }

    #[test]
    fn lab_names_are_validated() {
        assert!(Lab::new("/tmp", "lab").is_ok());
        assert!(Lab::new("/tmp", "a1").is_ok());
        for bad in ["", "Lab", "../x", "toolongname", "a b", "a-b"] {
            assert!(Lab::new("/tmp", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parses_ip_addr_output() {
        let t = "5: vxlan0    inet 10.0.1.11/24 scope global vxlan0\\       valid_lft forever preferred_lft forever\n\
                 5: vxlan0    inet 10.0.1.7/24 scope global secondary vxlan0\\       valid_lft forever\n";
        assert_eq!(parse_ip_addr_show(t), vec![Ipv4Addr::new(10, 0, 1, 11), Ipv4Addr::new(10, 0, 1, 7)]);
        assert!(parse_ip_addr_show("").is_empty());
    }

    #[test]
    fn state_outside_a_lab_is_not_up() {
        let d = tempfile::tempdir().unwrap();
        let lab = Lab::new(d.path(), "t").unwrap();
        assert!(matches!(lab.load(), Err(LabError::NotUp { .. })));
        assert!(lab.leftovers().dir.is_none());
    }
}
