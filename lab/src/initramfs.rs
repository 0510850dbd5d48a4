//! A small initramfs of our own for the lab's guests.
//!
//! Debian's initramfs cannot mount a 9p root (the modules are not in it), and changing the host's
//! initramfs configuration would touch the host. Ours holds busybox, the few modules a 9p root over
//! virtio needs (taken from the kernel's own module tree, in dependency order), and two scripts:
//! `/init`, which mounts the host's root read-only and switches to it, and the node's PID 1.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::LabError;

/// The initramfs' /init: load modules, mount the host root, hand over to the node's PID 1.
const INIT: &str = include_str!("../guest/initramfs-init.sh");
/// The node's PID 1 after switch_root (mounts, then the guest agent).
pub const GUEST_INIT: &str = include_str!("../guest/guest-init.sh");

/// Modules a guest needs before its root exists: virtio PCI transport, virtio-net (so the NIC
/// exists early), and the 9p file system over virtio.
const EARLY_MODULES: &[&str] = &["virtio_pci", "virtio_net", "9p", "9pnet_virtio"];

/// Candidate locations of a statically linked busybox (package busybox-static, or busybox).
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Writes `newc` cpio archives, the format the kernel unpacks as an initramfs.
pub struct CpioWriter<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out, ino: 1, written: 0 }
    }

    pub fn dir(&mut self, name: &str) -> std::io::Result<()> {
        self.entry(name, 0o040755, &[])
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.entry(name, 0o100000 | (mode & 0o7777), data)
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> std::io::Result<()> {
        self.entry(name, 0o120777, target.as_bytes())
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so identical inputs give identical archives
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0, // check
        ];
        self.ino += 1;
        let mut hdr = String::with_capacity(110);
        hdr.push_str("070701");
        for f in fields {
            hdr.push_str(&format!("{f:08x}"));
        }
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    /// Ends the archive and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> std::io::Result<()> {
        let rem = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..rem])
    }
}

/// The module files (absolute paths) to load for `modules`, dependencies first, each once.
pub fn module_closure(kver: &str, modules: &[&str]) -> Result<Vec<PathBuf>, LabError> {
    let mut out: Vec<PathBuf> = Vec::new();
    for m in modules {
        let o = Command::new("modprobe")
            .args(["-S", kver, "--show-depends", m])
            .output()
            .map_err(|e| LabError::Missing { what: "modprobe".into(), fix: format!("apt-get install kmod ({e})") })?;
        if !o.status.success() {
            return Err(LabError::Missing {
                what: format!("kernel module {m} for {kver}"),
                fix: format!("install linux-image-{kver} (modprobe said: {})", String::from_utf8_lossy(&o.stderr).trim()),
            });
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            // "insmod /lib/modules/.../x.ko [params]"; "builtin x" needs nothing.
            let mut w = line.split_whitespace();
            if w.next() == Some("insmod") {
                if let Some(p) = w.next() {
                    let p = PathBuf::from(p);
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
            }
        }
    }
    Ok(out)
}

pub fn find_busybox() -> Result<PathBuf, LabError> {
    BUSYBOX
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| LabError::Missing { what: "busybox".into(), fix: "apt-get install busybox-static (or run scripts/setup.sh)".into() })
}

/// Builds the lab's initramfs for kernel `kver` at `dest`.
pub fn build(kver: &str, dest: &Path) -> Result<(), LabError> {
    let busybox = find_busybox()?;
    let modules = module_closure(kver, EARLY_MODULES)?;
    let io = |what: &str, e: std::io::Error| LabError::io(format!("initramfs: {what}"), e);

    let tmp = dest.with_extension("tmp");
    let f = fs::File::create(&tmp).map_err(|e| io("create", e))?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(f));
    (|| -> std::io::Result<()> {
        for d in ["bin", "dev", "proc", "sys", "newroot", "mods"] {
            w.dir(d)?;
        }
        w.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
        w.symlink("bin/sh", "busybox")?;
        w.file("init", 0o755, INIT.as_bytes())?;
        w.file("guest-init.sh", 0o755, GUEST_INIT.as_bytes())?;
        let mut list = String::new();
        for m in &modules {
            let name = m.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            w.file(&format!("mods/{name}"), 0o644, &fs::read(m)?)?;
            list.push_str(name);
            list.push('\n');
        }
        w.file("mods/list", 0o644, list.as_bytes())?;
        Ok(())
    })()
    .map_err(|e| io("write", e))?;
    w.finish().map_err(|e| io("finish", e))?;
    fs::rename(&tmp, dest).map_err(|e| io("rename", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a newc archive back into (name, mode, data), enough to check our writer.
    fn parse(mut b: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = vec![];
        let mut off = 0usize;
        loop {
            assert_eq!(&b[..6], b"070701", "magic at offset {off}");
            let field = |i: usize| u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16).unwrap();
            let (mode, size, namesz) = (field(1), field(6) as usize, field(11) as usize);
            let name = String::from_utf8(b[110..110 + namesz - 1].to_vec()).unwrap();
            let data_off = (110 + namesz + 3) & !3;
            let data = b[data_off..data_off + size].to_vec();
            let next = (data_off + size + 3) & !3;
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, data));
            off += next;
            b = &b[next..];
        }
    }

    #[test]
    fn cpio_round_trips_with_alignment() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin").unwrap();
        w.file("bin/x", 0o755, b"abcde").unwrap();
        w.symlink("bin/sh", "x").unwrap();
        w.file("odd-name-len", 0o644, b"").unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        let e = parse(&buf);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].0, "bin");
        assert_eq!(e[0].1 & 0o170000, 0o040000);
        assert_eq!((e[1].0.as_str(), e[1].1, e[1].2.as_slice()), ("bin/x", 0o100755, &b"abcde"[..]));
        assert_eq!((e[2].1, e[2].2.as_slice()), (0o120777, &b"x"[..]));
        assert!(e[3].2.is_empty());
    }

    #[test]
    fn scripts_are_embedded() {
        assert!(INIT.starts_with("#!"));
        assert!(GUEST_INIT.starts_with("#!"));
        assert!(INIT.contains("switch_root"));
    }
}
