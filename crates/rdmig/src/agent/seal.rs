//! What arrived is what CRIU restores from: every image file is sealed (its length and CRC-32)
//! as it lands in the migration's directory, and before a restore the whole directory, every
//! round of the chain, is checked against its seals.
//!
//! Transit has its own checks (TLS records, the RDMA chunks' AEAD, `DataSum` end to end); this
//! covers the disk between arrival and restore, which can be seconds to minutes with pre-copy: a
//! flipped bit, a truncated file, a program writing where it should not. CRIU's images carry no
//! checksum of their own, and a damaged page image restores silently into wrong memory. A CRC
//! is enough for that (nobody forges a disk error; a writer with root here is not what this
//! guards against), and it runs at memory speed, which matters: the check falls in the blackout.

use std::collections::BTreeMap;
use std::io::Read;

use super::confine::{Confined, Kind};

/// A file's length and CRC-32 when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub len: u64,
    pub crc: u32,
}

impl Seal {
    /// Computes the seal of what `read` yields to its end.
    pub fn of(mut read: impl Read) -> std::io::Result<Seal> {
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            match read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    len += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Seal { len, crc: h.finalize() })
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

    pub fn finish(self) -> Seal {
        Seal { len: self.len, crc: self.h.finalize() }
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
    /// CRIU's page server, scp), reading each back once.
    pub fn seal_dir(&mut self, dir: &Confined, rel: &str) -> std::io::Result<usize> {
        let mut n = 0;
        for (name, kind) in dir.list(rel)? {
            let path = join(rel, &name);
            if kind != Kind::File || is_log(&name) || self.0.contains_key(&path) {
                continue;
            }
            let seal = Seal::of(dir.open_read(&path)?)?;
            self.0.insert(path, seal);
            n += 1;
        }
        Ok(n)
    }

    /// Checks the whole directory against the seals: every sealed file is there as it arrived,
    /// and nothing unsealed that CRIU would read is there (a directory's `parent` link is
    /// CRIU's; other links, sockets and the like are refused, not followed).
    pub fn check(&self, dir: &Confined) -> Result<Checked, String> {
        let mut seen = Checked { files: 0, bytes: 0 };
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
                    let got = dir.open_read(&path).and_then(Seal::of).map_err(|e| format!("{path}: {e}"))?;
                    if got.len != want.len {
                        return Err(format!("{path}: {} bytes now, {} arrived", got.len, want.len));
                    }
                    if got.crc != want.crc {
                        return Err(format!("{path}: its bytes changed since they arrived (CRC-32 {:08x}, was {:08x})", got.crc, want.crc));
                    }
                    seen.files += 1;
                    seen.bytes += got.len;
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

    fn setup() -> (tempfile::TempDir, Confined, Seals) {
        let d = tempfile::tempdir().unwrap();
        let c = Confined::open(d.path()).unwrap();
        let mut seals = Seals::default();
        // A pre-copy round written by a page server, a final round written file by file.
        std::fs::create_dir(d.path().join("pre-1")).unwrap();
        std::fs::write(d.path().join("pre-1/pages-1.img"), vec![7u8; 3 * 4096]).unwrap();
        std::fs::write(d.path().join("pre-1/pagemap-1.img"), b"map").unwrap();
        assert_eq!(seals.seal_dir(&c, "pre-1").unwrap(), 2);
        std::fs::create_dir(d.path().join("final")).unwrap();
        std::os::unix::fs::symlink("../pre-1", d.path().join("final/parent")).unwrap();
        let core = b"core image".to_vec();
        let mut s = Sealing::default();
        s.update(&core[..4]);
        s.update(&core[4..]);
        seals.add("final/core-1.img", s.finish());
        std::fs::write(d.path().join("final/core-1.img"), &core).unwrap();
        (d, c, seals)
    }

    #[test]
    fn an_untouched_chain_checks_out() {
        let (d, c, seals) = setup();
        assert_eq!(seals.check(&c).unwrap(), Checked { files: 3, bytes: 3 * 4096 + 3 + 10 });
        // Sealing again seals nothing new; CRIU's log of a failed attempt is not in the way.
        let mut again = seals.clone();
        assert_eq!(again.seal_dir(&c, "pre-1").unwrap(), 0);
        std::fs::write(d.path().join("final/restore.log"), b"a log").unwrap();
        assert!(seals.check(&c).is_ok());
    }

    #[test]
    fn one_flipped_bit_is_found() {
        let (d, c, seals) = setup();
        let p = d.path().join("pre-1/pages-1.img");
        let mut b = std::fs::read(&p).unwrap();
        b[4096 + 17] ^= 0x10;
        std::fs::write(&p, b).unwrap();
        let e = seals.check(&c).unwrap_err();
        assert!(e.contains("pre-1/pages-1.img: its bytes changed since they arrived"), "{e}");
    }

    #[test]
    fn a_shorter_missing_or_foreign_file_is_refused() {
        let (d, c, seals) = setup();
        std::fs::write(d.path().join("final/core-1.img"), b"core").unwrap();
        assert!(seals.check(&c).unwrap_err().contains("final/core-1.img: 4 bytes now, 10 arrived"));

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
