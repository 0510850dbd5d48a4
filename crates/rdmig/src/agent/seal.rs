//! What arrived is what CRIU restores from: every image file is sealed as it lands in the
//! migration's directory, and before a restore every file of every round is checked against its
//! seal.
//!
//! Transit has its own checks (TLS records, the RDMA chunks' AEAD, `DataSum` end to end); this
//! covers the disk between arrival and restore, which can be minutes with pre-copy: a file
//! written to, truncated, replaced or added by anyone but the transfer. CRIU's images carry no
//! checksum of their own, and a damaged page image restores silently into wrong memory.
//!
//! A seal is the file's identity as the filesystem keeps it (device, inode, length, mtime and
//! ctime, which every write changes and no user can set back), plus, for a file the agent wrote
//! itself, the CRC-32 of its bytes, computed as they streamed by. The check in the blackout is
//! one `stat` per file: reading every round back there cost 30 % of a pre-copy downtime in the
//! lab (191 MiB in 1.3 s of 4.2 s). Only a file whose identity changed is read: with a CRC, the
//! same bytes pass (touched, not changed); without one (written by CRIU's page server or scp),
//! any change refuses. Not seen: a write within the filesystem's timestamp tick of the seal that
//! keeps the length, and damage below the page cache (neither would a re-read from the cache
//! see it).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use rdmig_confine::{Confined, Kind};

/// A file's identity on its filesystem: what any write, truncation or replacement changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Stamp { dev: m.dev(), ino: m.ino(), len: m.len(), mtime_ns: ns(m.mtime(), m.mtime_nsec()), ctime_ns: ns(m.ctime(), m.ctime_nsec()) }
    }
}

/// A file as it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    stamp: Stamp,
    /// The CRC-32 of its bytes, where the agent saw them go by.
    crc: Option<u32>,
}

/// The CRC-32 of what `read` yields to its end.
fn crc_of(mut read: impl Read) -> std::io::Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match read.read(&mut buf) {
            Ok(0) => return Ok(h.finalize()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A seal computed as the data streams by (`PutFile` writes and seals in one pass).
#[derive(Default)]
pub struct Sealing {
    h: crc32fast::Hasher,
    len: u64,
}

impl Sealing {
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
        self.len += data.len() as u64;
    }

    /// The seal of `file`, all of whose bytes went through `update`; an error if the file
    /// holds other than what went by (a length that differs).
    pub fn finish(self, file: &std::fs::File) -> std::io::Result<Seal> {
        let stamp = Stamp::of(&file.metadata()?);
        if stamp.len != self.len {
            return Err(std::io::Error::other(format!("{} bytes on disk, {} written", stamp.len, self.len)));
        }
        Ok(Seal { stamp, crc: Some(self.h.finalize()) })
    }
}

/// Files CRIU writes beside the images as it works (its logs, a restore's pid file and
/// statistics): not read by a restore, so not sealed; a restore that failed once leaves them, and
/// a second attempt must not trip on them.
fn is_log(name: &str) -> bool {
    name.ends_with(".log") || name == "restored.pid" || name == "stats-restore"
}

/// The seals of one migration's files, by path relative to its directory.
#[derive(Debug, Default, Clone)]
pub struct Seals(BTreeMap<String, Seal>);

/// How a check of the directory against its seals went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub files: usize,
    pub bytes: u64,
    /// Files read (their identity had changed, their CRC was known and matched).
    pub read: usize,
}

impl Seals {
    pub fn add(&mut self, rel: &str, seal: Seal) {
        self.0.insert(rel.to_string(), seal);
    }

    /// Takes `other`'s seals for files that have none here.
    pub fn merge(&mut self, other: Seals) {
        for (k, v) in other.0 {
            self.0.entry(k).or_insert(v);
        }
    }

    /// Seals the files of directory `rel` that have none yet (what a tool wrote there by path:
    /// CRIU's page server, scp): their identity only, nothing is read.
    pub fn seal_dir(&mut self, dir: &Confined, rel: &str) -> std::io::Result<usize> {
        let mut n = 0;
        for (name, kind) in dir.list(rel)? {
            let path = join(rel, &name);
            if kind != Kind::File || is_log(&name) || self.0.contains_key(&path) {
                continue;
            }
            let stamp = Stamp::of(&dir.open_read(&path)?.metadata()?);
            self.0.insert(path, Seal { stamp, crc: None });
            n += 1;
        }
        Ok(n)
    }

    /// Checks the whole directory against the seals: every sealed file is there as it arrived,
    /// and nothing unsealed that CRIU would read is there (a directory's `parent` link is
    /// CRIU's; other links, sockets and the like are refused, not followed).
    pub fn check(&self, dir: &Confined) -> Result<Checked, String> {
        let mut seen = Checked { files: 0, bytes: 0, read: 0 };
        self.check_dir(dir, "", 0, &mut seen)?;
        if seen.files != self.0.len() {
            // Some sealed file was not met on the walk.
            let missing: Vec<&str> = self.0.keys().filter(|k| dir.open_read(k).is_err()).map(String::as_str).take(3).collect();
            return Err(format!("image files gone since they arrived: {}", missing.join(", ")));
        }
        Ok(seen)
    }

    fn check_dir(&self, dir: &Confined, rel: &str, depth: usize, seen: &mut Checked) -> Result<(), String> {
        // Rounds are one level below the migration's directory; nothing is deeper.
        const MAX_DEPTH: usize = 2;
        let entries = dir.list(rel).map_err(|e| format!("reading {}: {e}", shown(rel)))?;
        for (name, kind) in entries {
            let path = join(rel, &name);
            match kind {
                Kind::Dir if depth < MAX_DEPTH => self.check_dir(dir, &path, depth + 1, seen)?,
                Kind::File if is_log(&name) && !self.0.contains_key(&path) => {}
                Kind::File => {
                    let want = self.0.get(&path).ok_or_else(|| format!("{path}: did not arrive through this migration (no seal)"))?;
                    let f = dir.open_read(&path).map_err(|e| format!("{path}: {e}"))?;
                    let now = Stamp::of(&f.metadata().map_err(|e| format!("{path}: {e}"))?);
                    if now != want.stamp {
                        if now.len != want.stamp.len {
                            return Err(format!("{path}: {} bytes now, {} arrived", now.len, want.stamp.len));
                        }
                        // Written to, or replaced: the same bytes may pass where they are known.
                        match want.crc {
                            Some(crc) => {
                                let got = crc_of(f).map_err(|e| format!("{path}: {e}"))?;
                                if got != crc {
                                    return Err(format!("{path}: its bytes changed since they arrived (CRC-32 {got:08x}, was {crc:08x})"));
                                }
                                seen.read += 1;
                            }
                            None => return Err(format!("{path}: written to or replaced since it arrived (its inode, times or length changed)")),
                        }
                    }
                    seen.files += 1;
                    seen.bytes += now.len;
                }
                Kind::Other if name == "parent" && !rel.is_empty() => {}
                _ => return Err(format!("{path}: not an image file or round directory")),
            }
        }
        Ok(())
    }
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

fn shown(rel: &str) -> &str {
    if rel.is_empty() {
        "the migration directory"
    } else {
        rel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps move in ticks of the kernel's coarse clock: a change made in the same tick as
    /// the seal keeps them (see the module's comment), so the tests change files a tick later.
    fn next_tick() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    /// A pre-copy round written by a page server (sealed by identity), a final round written
    /// file by file by the agent (sealed with its CRC).
    fn setup() -> (tempfile::TempDir, Confined, Seals) {
        let d = tempfile::tempdir().unwrap();
        let c = Confined::open(d.path()).unwrap();
        let mut seals = Seals::default();
        std::fs::create_dir(d.path().join("pre-1")).unwrap();
        std::fs::write(d.path().join("pre-1/pages-1.img"), vec![7u8; 3 * 4096]).unwrap();
        std::fs::write(d.path().join("pre-1/pagemap-1.img"), b"map").unwrap();
        assert_eq!(seals.seal_dir(&c, "pre-1").unwrap(), 2);
        std::fs::create_dir(d.path().join("final")).unwrap();
        std::os::unix::fs::symlink("../pre-1", d.path().join("final/parent")).unwrap();
        let core = b"core image".to_vec();
        let mut f = c.create_new("final/core-1.img").unwrap();
        let mut s = Sealing::default();
        for part in [&core[..4], &core[4..]] {
            std::io::Write::write_all(&mut f, part).unwrap();
            s.update(part);
        }
        seals.add("final/core-1.img", s.finish(&f).unwrap());
        next_tick();
        (d, c, seals)
    }

    #[test]
    fn an_untouched_chain_checks_out_without_reading_it() {
        let (d, c, seals) = setup();
        assert_eq!(seals.check(&c).unwrap(), Checked { files: 3, bytes: 3 * 4096 + 3 + 10, read: 0 });
        // Sealing again seals nothing new; CRIU's log of a failed attempt is not in the way.
        let mut again = seals.clone();
        assert_eq!(again.seal_dir(&c, "pre-1").unwrap(), 0);
        std::fs::write(d.path().join("final/restore.log"), b"a log").unwrap();
        assert!(seals.check(&c).is_ok());
    }

    #[test]
    fn a_seal_must_cover_what_was_written() {
        let d = tempfile::tempdir().unwrap();
        let c = Confined::open(d.path()).unwrap();
        let mut f = c.create_new("x.img").unwrap();
        std::io::Write::write_all(&mut f, b"12345").unwrap();
        let mut s = Sealing::default();
        s.update(b"1234");
        assert!(s.finish(&f).unwrap_err().to_string().contains("5 bytes on disk, 4 written"));
    }

    #[test]
    fn one_flipped_bit_is_found() {
        // In a file the agent wrote: by its CRC.
        let (d, c, seals) = setup();
        let p = d.path().join("final/core-1.img");
        let mut b = std::fs::read(&p).unwrap();
        b[3] ^= 0x10;
        std::fs::write(&p, b).unwrap();
        let e = seals.check(&c).unwrap_err();
        assert!(e.contains("final/core-1.img: its bytes changed since they arrived (CRC-32"), "{e}");
        // In a page server's file: by its identity.
        let (d, c, seals) = setup();
        let p = d.path().join("pre-1/pages-1.img");
        let mut b = std::fs::read(&p).unwrap();
        b[4096 + 17] ^= 0x10;
        std::fs::write(&p, b).unwrap();
        let e = seals.check(&c).unwrap_err();
        assert!(e.contains("pre-1/pages-1.img: written to or replaced since it arrived"), "{e}");
    }

    #[test]
    fn the_same_bytes_written_again_pass_where_their_crc_is_known() {
        let (d, c, seals) = setup();
        std::fs::write(d.path().join("final/core-1.img"), b"core image").unwrap();
        assert_eq!(seals.check(&c).unwrap().read, 1);
    }

    #[test]
    fn a_shorter_replaced_missing_or_foreign_file_is_refused() {
        let (d, c, seals) = setup();
        std::fs::write(d.path().join("final/core-1.img"), b"core").unwrap();
        assert!(seals.check(&c).unwrap_err().contains("final/core-1.img: 4 bytes now, 10 arrived"));

        let (d, c, seals) = setup();
        std::fs::write(d.path().join("pre-1/new"), b"map").unwrap();
        std::fs::rename(d.path().join("pre-1/new"), d.path().join("pre-1/pagemap-1.img")).unwrap();
        assert!(seals.check(&c).unwrap_err().contains("pre-1/pagemap-1.img: written to or replaced"));

        let (d, c, seals) = setup();
        std::fs::remove_file(d.path().join("pre-1/pagemap-1.img")).unwrap();
        assert!(seals.check(&c).unwrap_err().contains("gone since they arrived: pre-1/pagemap-1.img"));

        let (d, c, seals) = setup();
        std::fs::write(d.path().join("final/inventory.img"), b"x").unwrap();
        assert!(seals.check(&c).unwrap_err().contains("final/inventory.img: did not arrive through this migration"));

        // A link other than a round's parent is not followed but refused.
        let (d, c, seals) = setup();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("final/pages-2.img")).unwrap();
        assert!(seals.check(&c).unwrap_err().contains("final/pages-2.img: not an image file"));
    }
}
