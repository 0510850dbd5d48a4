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
//!
//! Where the time went inside a kind is told by step lines, `<kind>.<step> <microseconds>\n`
//! ([`step_line`]): the restore's opening of the device, creation of each kind of object, the
//! QPs' driver state, the re-pinning of MRs and so on. They do not count in the kind's total
//! (their time is already inside it); rdmig logs them ([`read_steps`]), so that a researcher can
//! see which part of RestoreRDMA grows with the number of QPs or the size of the MRs.

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

/// The line for one step of a hook's work (see the module's documentation). `step` is one of
/// the plugin's own names: letters, digits and `_`.
pub fn step_line(kind: Kind, step: &str, took: Duration) -> String {
    format!("{}.{step} {}\n", kind.name(), took.as_micros())
}

/// The steps of `kind` in `text`, each step's lines summed, in the order each step first
/// appears. Lines that do not parse are skipped, as in [`total`].
pub fn steps(text: &str, kind: Kind) -> Vec<(String, Duration)> {
    let mut out: Vec<(String, u64)> = vec![];
    for l in text.lines() {
        let Some((k, us)) = l.split_once(' ') else { continue };
        let Some(step) = k.strip_prefix(kind.name()).and_then(|r| r.strip_prefix('.')) else { continue };
        if step.is_empty() || !step.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        let Ok(us) = us.parse::<u64>() else { continue };
        match out.iter_mut().find(|(s, _)| s == step) {
            Some((_, sum)) => *sum = sum.saturating_add(us),
            None => out.push((step.to_string(), us)),
        }
    }
    out.into_iter().map(|(s, us)| (s, Duration::from_micros(us))).collect()
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
    total(&read_text(dir)?, kind)
}

/// [`steps`] of `dir`'s times file; empty when it has none, or as [`read_total`] would give
/// None.
pub fn read_steps(dir: &Path, kind: Kind) -> Vec<(String, Duration)> {
    read_text(dir).map(|t| steps(&t, kind)).unwrap_or_default()
}

/// At most [`MAX_READ`] bytes of `dir`'s times file, if it is a regular file (a link is not
/// followed).
fn read_text(dir: &Path) -> Option<String> {
    let path = dir.join(FILE);
    if !std::fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(&path).ok()?.take(MAX_READ).read_to_string(&mut text).ok()?;
    Some(text)
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
    fn steps_are_summed_per_step_and_left_out_of_the_total() {
        let text = [
            line(Kind::RestoreRdma, Duration::from_micros(900)),
            step_line(Kind::RestoreRdma, "open", Duration::from_micros(100)),
            step_line(Kind::RestoreRdma, "create_qp", Duration::from_micros(300)),
            step_line(Kind::DumpRdma, "create_qp", Duration::from_micros(7)),
            step_line(Kind::RestoreRdma, "create_qp", Duration::from_micros(200)),
            "restore_rdma.bad-name 5\nrestore_rdma. 5\nrestore_rdma.x\nrestore_rdma.y z\nrestore_rdmax.open 3\n".to_string(),
        ]
        .concat();
        assert_eq!(
            steps(&text, Kind::RestoreRdma),
            vec![("open".to_string(), Duration::from_micros(100)), ("create_qp".to_string(), Duration::from_micros(500))]
        );
        assert_eq!(steps(&text, Kind::DumpRdma), vec![("create_qp".to_string(), Duration::from_micros(7))]);
        assert_eq!(total(&text, Kind::RestoreRdma), Some(Duration::from_micros(900)), "steps are inside the total, not added to it");
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
        assert!(read_steps(other.path(), Kind::DumpRdma).is_empty(), "a link is not followed");
    }
}
