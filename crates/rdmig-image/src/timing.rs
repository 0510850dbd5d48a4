//! How long the plugin's verbs work took inside CRIU's dump and restore: the phases MigrRDMA
//! (SIGCOMM 2025) calls DumpRDMA and RestoreRDMA, which rdmig's own spans cannot separate from
//! the rest of CRIU's work.
//!
//! CRIU writes a plugin's info messages to its log only at `-v3` and above, which rdmig does not
//! run (the log would grow by a line per page range), so the plugin appends one line per hook
//! call that did verbs work to [`FILE`] in the images directory: `<kind> <microseconds>\n`, one
//! `write` each (`O_APPEND`: lines from the restored tasks and from CRIU's master do not mix).
//! The name ends in `.log` so the file stays on its node, as CRIU's logs do: rdmig sends no
//! `*.log` file. After CRIU ends, rdmig sums a kind's lines ([`read_total`]).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// The times file in an images directory.
pub const FILE: &str = "rdmig-plugin-times.log";

/// At most this much of the file is read: a dump or restore writes a line per verbs file and
/// one for the late resume, some tens of bytes each.
pub const MAX_READ: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Saving a verbs file's objects (QPs stopped, their state read) in `DUMP_EXT_FILE`.
    DumpRdma,
    /// Rebuilding them in `RESTORE_EXT_FILE`, and re-pinning MRs and resuming QPs in
    /// `RESUME_DEVICES_LATE`.
    RestoreRdma,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::DumpRdma => "dump_rdma",
            Kind::RestoreRdma => "restore_rdma",
        }
    }
}

/// The line the plugin appends for one hook call.
pub fn line(kind: Kind, took: Duration) -> String {
    format!("{} {}\n", kind.name(), took.as_micros())
}

/// The sum of `kind`'s lines in `text`; None if it has none. Other kinds and lines that do not
/// parse (a line cut short by a crash) are skipped.
pub fn total(text: &str, kind: Kind) -> Option<Duration> {
    let mut sum: Option<u64> = None;
    for l in text.lines() {
        let Some((k, us)) = l.split_once(' ') else { continue };
        if k != kind.name() {
            continue;
        }
        if let Ok(us) = us.parse::<u64>() {
            sum = Some(sum.unwrap_or(0).saturating_add(us));
        }
    }
    sum.map(Duration::from_micros)
}

/// The sum of `kind`'s lines in `dir`'s times file; None when it has none, or the file is
/// missing, unreadable or not a regular file (a link is not followed).
pub fn read_total(dir: &Path, kind: Kind) -> Option<Duration> {
    let path = dir.join(FILE);
    if !std::fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(&path).ok()?.take(MAX_READ).read_to_string(&mut text).ok()?;
    total(&text, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kinds_lines_are_summed_and_nothing_else() {
        let text = [
            line(Kind::DumpRdma, Duration::from_micros(1500)),
            line(Kind::RestoreRdma, Duration::from_millis(7)),
            line(Kind::DumpRdma, Duration::from_micros(500)),
        ]
        .concat();
        assert_eq!(total(&text, Kind::DumpRdma), Some(Duration::from_micros(2000)));
        assert_eq!(total(&text, Kind::RestoreRdma), Some(Duration::from_millis(7)));
        assert_eq!(total("", Kind::DumpRdma), None);
        // A line cut short, another kind, junk: skipped.
        assert_eq!(total("dump_rdma 12\ndump_rdma\ndump_rdma 1x\nrestore_rdma 5\nnoise\ndump_rdma 3", Kind::DumpRdma), Some(Duration::from_micros(15)));
        assert_eq!(total("restore_rdma 18446744073709551615\nrestore_rdma 9\n", Kind::RestoreRdma), Some(Duration::from_micros(u64::MAX)));
    }

    #[test]
    fn the_file_is_read_only_when_it_is_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_total(d.path(), Kind::DumpRdma), None, "no file");
        std::fs::write(d.path().join(FILE), line(Kind::DumpRdma, Duration::from_micros(42))).unwrap();
        assert_eq!(read_total(d.path(), Kind::DumpRdma), Some(Duration::from_micros(42)));
        assert_eq!(read_total(d.path(), Kind::RestoreRdma), None);
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(d.path().join(FILE), other.path().join(FILE)).unwrap();
        assert_eq!(read_total(other.path(), Kind::DumpRdma), None, "a link is not followed");
    }
}
