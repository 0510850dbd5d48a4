//! What the dump side, the restore side and the object modules share: the errors each side
//! reports, a few constants of the device, and the GID table as sysfs shows it.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Mutex;

use crate::image;

/// Char major of `/dev/infiniband/uverbs*`.
pub const UVERBS_MAJOR: u32 = 231;
/// What `/proc/PID/fd/N` links to for an infiniband event file (async event file or
/// completion channel).
pub const EVENT_LINK: &str = "anon_inode:[infinibandevent]";
/// rxe's ring page size (ring offsets in mappings and in `/dev/rxe_ctl` are in bytes).
pub const PAGE: u64 = 4096;

/// Why a file CRIU handed to DUMP_EXT_FILE cannot be saved.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{what}: {source}")]
    Sys { what: String, source: std::io::Error },
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Image(#[from] image::ImageError),
}

impl DumpError {
    /// For `map_err`: a failed call, described by `what`.
    pub fn sys<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> DumpError {
        let what = what.into();
        move |source| DumpError::Sys { what, source: source.into() }
    }
}

/// Why a saved context cannot be rebuilt (or finished) on restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{what}: {source}")]
    Sys { what: String, source: std::io::Error },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Image(#[from] image::ImageError),
}

impl RestoreError {
    /// For `map_err`: a failed call, described by `what`.
    pub fn sys<E: Into<std::io::Error>>(what: impl Into<String>) -> impl FnOnce(E) -> RestoreError {
        let what = what.into();
        move |source| RestoreError::Sys { what, source: source.into() }
    }

    /// The error with `who` (the context being rebuilt) in front of its description.
    pub fn within(self, who: &str) -> RestoreError {
        match self {
            RestoreError::Sys { what, source } => RestoreError::Sys { what: format!("{who}: {what}"), source },
            RestoreError::Refused(m) => RestoreError::Refused(format!("{who}: {m}")),
            other => other,
        }
    }
}

/// The GID at `index` of `port` of `ibdev`, and its type, as sysfs shows them.
pub fn gid(ibdev: &str, port: u8, index: u8) -> std::io::Result<(String, String)> {
    let base = format!("/sys/class/infiniband/{ibdev}/ports/{port}");
    let g = fs::read_to_string(format!("{base}/gids/{index}"))?.trim().to_string();
    let t = fs::read_to_string(format!("{base}/gid_attrs/types/{index}")).map(|s| s.trim().to_string()).unwrap_or_default();
    Ok((g, t))
}

/// Where [`gid_index`] found a GID: (device, port, GID, type) -> index.
static FOUND_GIDS: Mutex<BTreeMap<(String, u8, String, String), u8>> = Mutex::new(BTreeMap::new());

/// The GID index on this node of the GID an object used (text and type as [`gid`] gave them at
/// the dump). An address that was just added reaches the GID table a little later (ib_core
/// updates it from a work queue), so a missing GID is waited for, briefly.
///
/// Where a GID was found is remembered and read first the next time (the one entry is read again,
/// so a table that changed is scanned again): every QP of a process looks up the same GID, and
/// the scan reads two sysfs files per index below it.
pub fn gid_index(ibdev: &str, port: u8, gid_text: &str, typ: &str) -> Result<u8, RestoreError> {
    let matches = |(g, t): &(String, String)| g == gid_text && (typ.is_empty() || t == typ);
    let key = (ibdev.to_string(), port, gid_text.to_string(), typ.to_string());
    let remembered = FOUND_GIDS.lock().unwrap_or_else(|e| e.into_inner()).get(&key).copied();
    if let Some(i) = remembered {
        if gid(ibdev, port, i).is_ok_and(|e| matches(&e)) {
            return Ok(i);
        }
    }
    let found = |i: u8| {
        FOUND_GIDS.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), i);
        Ok(i)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        for i in 0..=255u8 {
            match gid(ibdev, port, i) {
                Ok(e) if matches(&e) => return found(i),
                Ok(_) => {}
                Err(_) if i > 0 => break,
                Err(e) => return Err(RestoreError::sys(format!("read the GID table of {ibdev} port {port}"))(e)),
            }
        }
        if std::time::Instant::now() >= deadline {
            return Err(RestoreError::Refused(format!(
                "{ibdev} port {port} has no GID {gid_text} ({typ}) here: the QP's address must move with the process before the restore"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
