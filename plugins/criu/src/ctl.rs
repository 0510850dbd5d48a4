//! What the dump reads from rdmig's rdma_rxe control device: the text status, which lists every
//! user QP, MR, MW and AH with its number and creating process (softroce/README.md). The plugin
//! cannot use the main crate's client (the main crate depends on this one), so this is a small
//! reader of its own.

use std::collections::BTreeMap;

pub const CTL_DEV: &str = "/dev/rxe_ctl";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

impl Record {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    pub fn num(&self, k: &str) -> Option<u64> {
        let v = self.get(k)?;
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    }
}

/// Parses the status; unknown record types and keys are kept (the ABI says to ignore them).
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let kind = w.next()?.to_string();
            let fields = w.filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Some(Record { kind, fields })
        })
        .collect()
}

/// The status, or None when the control device is missing (stock rdma_rxe).
pub fn read() -> std::io::Result<Option<Vec<Record>>> {
    match std::fs::read_to_string(CTL_DEV) {
        Ok(t) => Ok(Some(parse(&t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records of `kind` created by `pid` on device `dev`, in index order.
/// A GID as the kernel prints it with %pI6 (and sysfs shows it): eight groups of four hex digits.
pub fn parse_gid(text: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = text.split(':').collect();
    if groups.len() != 8 {
        return None;
    }
    let mut g = [0u8; 16];
    for (i, w) in groups.iter().enumerate() {
        let v = u16::from_str_radix(w, 16).ok()?;
        g[2 * i..2 * i + 2].copy_from_slice(&v.to_be_bytes());
    }
    Some(g)
}

pub fn owned<'a>(recs: &'a [Record], kind: &str, pid: i32, dev: &str) -> Vec<&'a Record> {
    let mut v: Vec<&Record> = recs
        .iter()
        .filter(|r| r.kind == kind && r.num("pid") == Some(pid as u64) && r.get("dev") == Some(dev))
        .collect();
    v.sort_by_key(|r| r.num("index").unwrap_or(0));
    v
}

/// `_IOWR(0xB8, nr, size)`.
const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    ((3u32 << 30) | ((size as u32) << 16) | (0xB8 << 8) | nr) as libc::c_ulong
}

pub const OBJ_QP: u32 = 1;
pub const OBJ_MR: u32 = 2;
pub const OBJ_MW: u32 = 3;
pub const OBJ_AH: u32 = 4;
const F_KEY: u32 = 2;
/// QP_RESTORE: restore the QP's CQ rings too.
pub const QP_F_CQ: u32 = 1;
/// QP_RESTORE: restore the ring of the QP's SRQ too.
pub const QP_F_SRQ: u32 = 2;

#[repr(C)]
struct Expect {
    obj: u32,
    flags: u32,
    pid: i32,
    index: u32,
    key: u32,
    id: u32,
    ibdev: [u8; 64],
}

#[repr(C)]
struct QpCtl {
    ibdev: [u8; 64],
    qpn: u32,
    flags: u32,
    buf: u64,
    len: u64,
    state: u32,
    qp_state: u32,
    counters: [u32; 5],
    reserved: u32,
}

/// `struct rxe_ctl_mw_bind` (softroce patch 0013).
#[repr(C)]
struct MwBind {
    ibdev: [u8; 64],
    index: u32,
    rkey: u32,
    mr_index: u32,
    qpn: u32,
    addr: u64,
    length: u64,
    access: u32,
    flags: u32,
}

const _: () = assert!(std::mem::size_of::<MwBind>() == 104);

#[repr(C)]
struct MrRepin {
    ibdev: [u8; 64],
    index: u32,
    pid: i32,
    va: u64,
    flags: u32,
    reserved: u32,
    npages: u64,
}

#[repr(C)]
struct Dirty {
    ibdev: [u8; 64],
    index: u32,
    flags: u32,
    first_page: u64,
    npages: u64,
    bitmap: u64,
    ndirty: u64,
    mr_pages: u64,
    va: u64,
    iova: u64,
    lkey: u32,
    page_shift: u32,
}

const _: () = assert!(std::mem::size_of::<Dirty>() == 136);
const _: () = assert!(std::mem::size_of::<Expect>() == 88);
const _: () = assert!(std::mem::size_of::<QpCtl>() == 120);
const _: () = assert!(std::mem::size_of::<MrRepin>() == 96);

const IOC_EXPECT: libc::c_ulong = iowr(0x02, std::mem::size_of::<Expect>());
const IOC_DIRTY: libc::c_ulong = iowr(0x04, std::mem::size_of::<Dirty>());
const IOC_QP_STOP: libc::c_ulong = iowr(0x05, std::mem::size_of::<QpCtl>());
const IOC_QP_DUMP: libc::c_ulong = iowr(0x06, std::mem::size_of::<QpCtl>());
const IOC_QP_RESTORE: libc::c_ulong = iowr(0x07, std::mem::size_of::<QpCtl>());
const IOC_QP_RESUME: libc::c_ulong = iowr(0x08, std::mem::size_of::<QpCtl>());
const IOC_MR_REPIN: libc::c_ulong = iowr(0x0a, std::mem::size_of::<MrRepin>());
/// `_IOW(0xB8, 0x0b, struct rxe_ctl_mw_bind)`.
const IOC_MW_BIND: libc::c_ulong = ((1u32 << 30) | ((std::mem::size_of::<MwBind>() as u32) << 16) | (0xB8 << 8) | 0x0b) as libc::c_ulong;

fn devname(dev: &str) -> std::io::Result<[u8; 64]> {
    let mut b = [0u8; 64];
    if dev.len() >= 64 || dev.as_bytes().contains(&0) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad rxe device name {dev:?}")));
    }
    b[..dev.len()].copy_from_slice(dev.as_bytes());
    Ok(b)
}

/// An open `/dev/rxe_ctl`. Expectations made through it are dropped when it is closed.
pub struct Ctl {
    file: std::fs::File,
}

impl Ctl {
    pub fn open() -> std::io::Result<Ctl> {
        Ok(Ctl { file: std::fs::OpenOptions::new().read(true).write(true).open(CTL_DEV)? })
    }

    fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
        // SAFETY: `arg` is the #[repr(C)] struct whose size is encoded in `req` (asserted above);
        // pointers inside it describe buffers the caller keeps alive for the call.
        let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&self.file), req as _, arg as *mut T) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The next QP (MR) the calling process creates on `dev` gets number `index` (and key byte).
    pub fn expect(&self, dev: &str, obj: u32, index: u32, key: Option<u8>) -> std::io::Result<()> {
        let mut e = Expect {
            obj,
            flags: if key.is_some() { F_KEY } else { 0 },
            pid: 0,
            index,
            key: key.unwrap_or(0) as u32,
            id: 0,
            ibdev: devname(dev)?,
        };
        self.ioctl(IOC_EXPECT, &mut e)
    }

    fn qp(&self, req: libc::c_ulong, dev: &str, qpn: u32, flags: u32, buf: &mut [u8]) -> std::io::Result<u64> {
        let mut q = QpCtl {
            ibdev: devname(dev)?,
            qpn,
            flags,
            buf: if buf.is_empty() { 0 } else { buf.as_mut_ptr() as u64 },
            len: buf.len() as u64,
            state: 0,
            qp_state: 0,
            counters: [0; 5],
            reserved: 0,
        };
        self.ioctl(req, &mut q)?;
        Ok(q.len)
    }

    pub fn qp_stop(&self, dev: &str, qpn: u32) -> std::io::Result<()> {
        self.qp(IOC_QP_STOP, dev, qpn, 0, &mut []).map(|_| ())
    }

    /// The state image of a stopped QP.
    pub fn qp_dump(&self, dev: &str, qpn: u32) -> std::io::Result<Vec<u8>> {
        loop {
            let n = self.qp(IOC_QP_DUMP, dev, qpn, 0, &mut [])?;
            let mut buf = vec![0u8; n as usize];
            match self.qp(IOC_QP_DUMP, dev, qpn, 0, &mut buf) {
                Ok(len) => {
                    buf.truncate(len as usize);
                    return Ok(buf);
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn qp_restore(&self, dev: &str, qpn: u32, image: &[u8], flags: u32) -> std::io::Result<()> {
        let mut copy = image.to_vec();
        self.qp(IOC_QP_RESTORE, dev, qpn, flags, &mut copy).map(|_| ())
    }

    /// Lets a stopped or restored QP send again; it tells its peer with RESUME.
    pub fn qp_resume(&self, dev: &str, qpn: u32) -> std::io::Result<()> {
        self.qp(IOC_QP_RESUME, dev, qpn, 0, &mut []).map(|_| ())
    }

    /// Reads and clears the driver's log of the pages of MR `index` it wrote into: (user address
    /// of page 0, page size, dirty page numbers).
    pub fn take_dirty(&self, dev: &str, index: u32) -> std::io::Result<(u64, u64, Vec<u64>)> {
        let (mut first, mut total, mut va, mut psize, mut pages) = (0u64, u64::MAX, 0u64, 4096u64, vec![]);
        while first < total {
            let want = if total == u64::MAX { 1 << 22 } else { (total - first).min(1 << 22) };
            let mut bitmap = vec![0u64; want.div_ceil(64) as usize];
            let mut d = Dirty {
                ibdev: devname(dev)?,
                index,
                flags: 1, // RXE_CTL_DIRTY_F_CLEAR
                first_page: first,
                npages: want,
                bitmap: bitmap.as_mut_ptr() as u64,
                ndirty: 0,
                mr_pages: 0,
                va: 0,
                iova: 0,
                lkey: 0,
                page_shift: 0,
            };
            self.ioctl(IOC_DIRTY, &mut d)?;
            total = d.mr_pages;
            va = d.va;
            psize = 1u64 << d.page_shift;
            for (w, word) in bitmap.iter().enumerate() {
                let mut x = *word;
                while x != 0 {
                    let p = first + w as u64 * 64 + x.trailing_zeros() as u64;
                    if p < first + d.npages {
                        pages.push(p);
                    }
                    x &= x - 1;
                }
            }
            if d.npages == 0 {
                break;
            }
            first += d.npages;
        }
        Ok((va, psize, pages))
    }

    /// Re-pins MR `index` on the pages now at `va` in process `pid`; returns the pages pinned.
    pub fn mr_repin(&self, dev: &str, index: u32, pid: i32, va: u64) -> std::io::Result<u64> {
        let mut m = MrRepin { ibdev: devname(dev)?, index, pid, va, flags: 0, reserved: 0, npages: 0 };
        self.ioctl(IOC_MR_REPIN, &mut m)?;
        Ok(m.npages)
    }

    /// Binds the unbound MW `rkey` to MR `mr_index` (and a type 2 MW to QP `qpn`) without a
    /// work request (RXE_CTL_IOC_MW_BIND).
    #[allow(clippy::too_many_arguments)]
    pub fn mw_bind(&self, dev: &str, rkey: u32, mr_index: u32, qpn: u32, addr: u64, length: u64, access: u32) -> std::io::Result<()> {
        let mut m = MwBind { ibdev: devname(dev)?, index: rkey >> 8, rkey, mr_index, qpn, addr, length, access, flags: 0 };
        self.ioctl(IOC_MW_BIND, &mut m)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ioctl_numbers_match_the_abi() {
        assert_eq!(IOC_EXPECT, 0xc058b802);
        assert_eq!(IOC_DIRTY, 0xc088b804);
        assert_eq!(IOC_QP_STOP, 0xc078b805);
        assert_eq!(IOC_QP_RESUME, 0xc078b808);
        assert_eq!(IOC_MR_REPIN, 0xc060b80a);
        assert_eq!(IOC_MW_BIND, 0x4068b80b);
    }

    use super::*;

    #[test]
    fn parses_and_filters() {
        let t = "rxe_ctl abi=1 dirty_log=1 page_shift=12\n\
                 dev name=rxe0 netdev=eth0\n\
                 qp dev=rxe0 index=16 qpn=1 type=gsi state=rts pid=0\n\
                 qp dev=rxe0 index=18 qpn=18 type=rc state=init pid=42\n\
                 qp dev=rxe0 index=17 qpn=17 type=rc state=init pid=42\n\
                 mr dev=rxe0 index=5 lkey=0x0000050a rkey=0x0000050a type=user access=0xf iova=0x7f00 length=4096 pid=42 pages=1 dirty=0\n";
        let r = parse(t);
        let qps = owned(&r, "qp", 42, "rxe0");
        assert_eq!(qps.iter().map(|q| q.num("qpn").unwrap()).collect::<Vec<_>>(), vec![17, 18]);
        let mr = owned(&r, "mr", 42, "rxe0");
        assert_eq!(mr[0].num("lkey"), Some(0x50a));
        assert!(owned(&r, "qp", 42, "rxe1").is_empty());
    }

    #[test]
    fn ah_records_and_gids() {
        let t = "ah dev=rxe0 index=3 pid=42 handle=5 port=1 sgid_index=1 dgid=0000:0000:0000:0000:0000:ffff:0a00:010b flow_label=0x0 hop_limit=64 tclass=0\n";
        let r = parse(t);
        let a = owned(&r, "ah", 42, "rxe0");
        assert_eq!((a[0].num("handle"), a[0].num("index"), a[0].num("hop_limit")), (Some(5), Some(3), Some(64)));
        let g = parse_gid(a[0].get("dgid").unwrap()).unwrap();
        assert_eq!(&g[10..], &[0xff, 0xff, 10, 0, 1, 11]);
        assert_eq!(parse_gid("fe80:0000:0000:0000:5054:00ff:fe12:3401").unwrap()[0..2], [0xfe, 0x80]);
        assert!(parse_gid("fe80::1").is_none());
        assert!(parse_gid("0000:0000:0000:0000:0000:ffff:0a00:zzzz").is_none());
    }
}
