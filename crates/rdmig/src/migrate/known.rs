//! What the checks learn that holds beyond one migration, kept in the work directory's `known/`
//! (root-only, like the rest of it) so that the next migration skips the slow part:
//! - this node's CPU as CRIU describes it (`criu cpuinfo dump`): the same until the next boot or
//!   another CRIU, so it is kept under the boot id and CRIU's version;
//! - the transport probe's result towards a destination: a throughput that changes slowly, kept
//!   for `--probe-max-age`; the path itself is still tried by every migration (a short probe).
//!
//! Nothing here decides anything on its own: a missing, unreadable or stale entry only means
//! measuring again, and a write that fails is logged and forgotten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::criu::{self, CriuError};

/// The directory under the work directory (not a migration id: those start with `m-`).
pub const DIR: &str = "known";
const PROBES: &str = "probes.json";

fn dir(work_dir: &Path) -> PathBuf {
    work_dir.join(DIR)
}

/// Reads a kept file only if nobody else could have written it: it and `known/` are ours and
/// writable by us alone (the work directory may be under /tmp), and it is a plain file.
fn read_ours(path: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let ours = |m: &std::fs::Metadata| m.uid() == me && m.mode() & 0o022 == 0;
    let d = std::fs::symlink_metadata(path.parent()?).ok()?;
    let f = std::fs::symlink_metadata(path).ok()?;
    (d.is_dir() && ours(&d) && f.is_file() && ours(&f)).then(|| std::fs::read(path).ok()).flatten()
}

/// Writes `bytes` to `path` whole or not at all (a reader never sees half a file).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent)?;
    crate::atomic_file::replace(path, bytes)
}

/// A file name part from free text (a boot id, a version): letters, digits, `.` and `-` only.
fn name_part(s: &str) -> String {
    s.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

/// This node's cpuinfo image: kept from an earlier migration of this boot with this CRIU, else
/// dumped by CRIU into `scratch` (made here, in the migration's directory) and kept. Whether it
/// came from the cache is returned beside it.
pub async fn cpuinfo(work_dir: &Path, criu_version: &str, scratch: &Path) -> Result<(Vec<u8>, bool), CriuError> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let kept = (!boot.trim().is_empty()).then(|| dir(work_dir).join(format!("cpuinfo-{}-{}.img", name_part(&boot), name_part(criu_version))));
    if let Some(p) = &kept {
        // CRIU's images are never empty: an empty file is not an image.
        if let Some(b) = read_ours(p).filter(|b| !b.is_empty()) {
            debug!(path = %p.display(), "cpuinfo image kept from an earlier migration");
            return Ok((b, true));
        }
    }
    std::fs::create_dir_all(scratch).map_err(|e| CriuError::Io { action: format!("cpuinfo dump: {}", scratch.display()), source: e })?;
    let image = criu::cpuinfo_dump(scratch).await?;
    if let Some(p) = kept {
        // Another boot's or CRIU's images are of no further use.
        if let Ok(rd) = std::fs::read_dir(dir(work_dir)) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("cpuinfo-") && e.path() != p {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Err(e) = write_atomic(&p, &image) {
            warn!("cpuinfo image not kept at {}: {e}", p.display());
        }
    }
    Ok((image, false))
}

/// Where a probe went, as precisely as its result depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeKey {
    pub to: std::net::SocketAddr,
    pub rdma_device: String,
    pub rdma_addr: Option<std::net::Ipv4Addr>,
    pub rdma_qps: usize,
    /// RDMA chunks encrypted or only authenticated: the rates differ.
    pub rdma_protection: rdmig_proto::msg::ChunkProtection,
}

impl ProbeKey {
    fn text(&self) -> String {
        let addr = self.rdma_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        format!("{} {} {} {} {}", self.to, self.rdma_device, addr, self.rdma_qps, self.rdma_protection.name())
    }
}

/// A probe's result: both throughputs, and when they were measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probed {
    pub tcp_mb_s: f64,
    pub rdma_mb_s: f64,
    /// Seconds since the Unix epoch.
    pub at: u64,
}

impl Probed {
    pub fn now(tcp_mb_s: f64, rdma_mb_s: f64) -> Self {
        Self { tcp_mb_s, rdma_mb_s, at: unix_now() }
    }

    /// How long ago it was measured (zero if the clock went back).
    pub fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.at))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn read_probes(work_dir: &Path) -> BTreeMap<String, Probed> {
    read_ours(&dir(work_dir).join(PROBES)).and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
}

/// The probe towards `key` if one was measured within `max_age` (and not in the future).
pub fn probe(work_dir: &Path, key: &ProbeKey, max_age: Duration) -> Option<Probed> {
    let p = *read_probes(work_dir).get(&key.text())?;
    let fresh = p.at <= unix_now() && p.age() <= max_age && p.tcp_mb_s.is_finite() && p.rdma_mb_s.is_finite();
    fresh.then_some(p)
}

/// Keeps a probe's result (replacing the one towards the same place); entries older than a day
/// are dropped on the way.
pub fn keep_probe(work_dir: &Path, key: &ProbeKey, p: Probed) {
    let mut all = read_probes(work_dir);
    all.retain(|_, v| v.age() < Duration::from_secs(86_400));
    all.insert(key.text(), p);
    write_probes(work_dir, &all);
}

/// Forgets the probe towards `key` (its path failed: the next migration measures again).
pub fn forget_probe(work_dir: &Path, key: &ProbeKey) {
    let mut all = read_probes(work_dir);
    if all.remove(&key.text()).is_some() {
        write_probes(work_dir, &all);
    }
}

fn write_probes(work_dir: &Path, all: &BTreeMap<String, Probed>) {
    let path = dir(work_dir).join(PROBES);
    let written = serde_json::to_vec_pretty(all).map_err(std::io::Error::other).and_then(|b| write_atomic(&path, &b));
    if let Err(e) = written {
        warn!("probe results not kept at {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> ProbeKey {
        ProbeKey {
            to: format!("10.0.0.2:{port}").parse().unwrap(),
            rdma_device: "rxe0".into(),
            rdma_addr: Some("10.0.1.1".parse().unwrap()),
            rdma_qps: 2,
            rdma_protection: rdmig_proto::msg::ChunkProtection::Authenticated,
        }
    }

    #[test]
    fn a_probe_is_found_again_only_for_its_destination_and_while_fresh() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(probe(d.path(), &key(1), Duration::from_secs(600)), None);
        keep_probe(d.path(), &key(1), Probed::now(10.0, 20.0));
        let p = probe(d.path(), &key(1), Duration::from_secs(600)).expect("kept");
        assert_eq!((p.tcp_mb_s, p.rdma_mb_s), (10.0, 20.0));
        assert_eq!(probe(d.path(), &key(2), Duration::from_secs(600)), None, "another destination");
        assert_eq!(probe(d.path(), &ProbeKey { rdma_qps: 3, ..key(1) }, Duration::from_secs(600)), None, "another lane count");
        // Keys and reports spell a protection as its JSON does.
        for p in [rdmig_proto::msg::ChunkProtection::Authenticated, rdmig_proto::msg::ChunkProtection::Encrypted] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.name());
        }
        let encrypted = ProbeKey { rdma_protection: rdmig_proto::msg::ChunkProtection::Encrypted, ..key(1) };
        assert_eq!(probe(d.path(), &encrypted, Duration::from_secs(600)), None, "encrypted chunks");
        // Measured an hour ago: too old for 10 minutes, fresh enough for two hours.
        keep_probe(d.path(), &key(1), Probed { at: unix_now() - 3600, ..p });
        assert_eq!(probe(d.path(), &key(1), Duration::from_secs(600)), None);
        assert!(probe(d.path(), &key(1), Duration::from_secs(7200)).is_some());
        // A time in the future (a clock set back since) is not trusted.
        keep_probe(d.path(), &key(1), Probed { at: unix_now() + 3600, ..p });
        assert_eq!(probe(d.path(), &key(1), Duration::from_secs(7200)), None);
        forget_probe(d.path(), &key(1));
        assert!(!read_probes(d.path()).contains_key(&key(1).text()));
    }

    #[test]
    fn a_damaged_probe_file_means_measuring_again() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join(DIR)).unwrap();
        std::fs::write(d.path().join(DIR).join(PROBES), b"{not json").unwrap();
        assert_eq!(probe(d.path(), &key(1), Duration::from_secs(600)), None);
        keep_probe(d.path(), &key(1), Probed::now(1.0, 2.0));
        assert!(probe(d.path(), &key(1), Duration::from_secs(600)).is_some(), "a new result replaces the damaged file");
    }

    #[test]
    fn a_file_others_could_write_is_not_read() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        keep_probe(d.path(), &key(1), Probed::now(1.0, 2.0));
        let f = d.path().join(DIR).join(PROBES);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(probe(d.path(), &key(1), Duration::from_secs(600)), None, "a world-writable file");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(d.path().join(DIR), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(probe(d.path(), &key(1), Duration::from_secs(600)), None, "in a world-writable directory");
        std::fs::set_permissions(d.path().join(DIR), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(probe(d.path(), &key(1), Duration::from_secs(600)).is_some());
    }

    #[test]
    fn names_from_free_text_stay_one_component() {
        assert_eq!(name_part("3.17.1 / ../x\n"), "3.17.1___.._x");
        assert!(!name_part("a/b").contains('/'));
    }
}
