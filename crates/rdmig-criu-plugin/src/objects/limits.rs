//! Restore side: the bounds every number of an image must be within before the restore uses it.
//! The image's CRC-32 finds damage, not intent: whoever can write into the image directory can
//! write any value, and the restore runs as root. So every count, handle, length, offset and
//! size that sizes a loop, an allocation or an index, and every value that picks a branch, is
//! checked here (context-wide) or in its object's `check_image` before anything is created;
//! a value out of range refuses the restore with an error naming the field.

use std::collections::BTreeSet;

use crate::common::PAGE;
use crate::device;
use crate::image::{Context, EventFile, FileImage};

/// Verbs objects of one context, all kinds together. The checks and the restore compare objects
/// with each other (quadratic at worst): this keeps that well under a second. rxe contexts of
/// real programs hold far fewer.
pub const MAX_OBJECTS: usize = 16 * 1024;
/// Largest uverbs handle: handles are given lowest-free, so a context of at most
/// [`MAX_OBJECTS`] live objects has handles below this unless it destroyed most of what it
/// made; every handle below the highest one that no object holds costs a filler PD.
pub const MAX_HANDLE: u32 = 1 << 16;
/// Completion channels of one context (each one is a file descriptor).
pub const MAX_CHANNELS: usize = 1024;
/// Events queued on one context's channels and async event file, together.
pub const MAX_PENDING_EVENTS: usize = 4096;
/// Ring mappings of one context (a CQ or SRQ has one, a QP two).
pub const MAX_QUEUES: usize = 2 * MAX_OBJECTS;
/// Largest file descriptor number (the kernel's `fs.nr_open` cannot exceed it).
pub const MAX_FD: i32 = 1 << 20;
/// rxe's largest queue (`DEFAULT_MAX_VALUE`): work requests of a QP or SRQ, entries of a CQ.
pub const MAX_WR: u32 = 1 << 20;
/// rxe's largest scatter/gather list (`RXE_MAX_SGE`).
pub const MAX_SGE: u32 = 32;
/// Inline data of a send queue entry (rxe: a few hundred bytes).
pub const MAX_INLINE: u32 = 64 * 1024;
/// One ring mapping, and one QP's driver state image.
pub const MAX_RING_BYTES: u64 = 1 << 30;
pub const MAX_QP_IMAGE_BYTES: u64 = 1 << 30;
/// End of user space (5-level paging); no mapping or MR reaches past it.
pub const USER_VA_END: u64 = 1 << 56;
/// QPNs, PSNs and AH numbers are 24-bit; flow labels 20-bit.
pub const MAX_24BIT: u32 = 0xff_ffff;
pub const MAX_FLOW_LABEL: u32 = 0xf_ffff;
/// Access flags the kernel knows (`IB_UVERBS_ACCESS_*`: bits 0-7 and the optional range 20-29).
pub const ACCESS_KNOWN: u32 = 0xff | 0x3ff0_0000;
/// The last `enum ib_event_type` (IB_EVENT_WQ_FATAL).
pub const MAX_EVENT_TYPE: u32 = 19;
/// Length of the kernel's names: IB device names (`IB_DEVICE_NAME_MAX`), and our tokens.
pub const MAX_NAME: usize = 63;
pub const MAX_TOKEN: usize = 64;

/// A file descriptor number of the process (`what` names the field).
pub fn fd(what: &str, n: i32) -> Result<(), String> {
    if !(0..MAX_FD).contains(&n) {
        return Err(format!("{what} is fd {n}, not a descriptor number (0..{MAX_FD})"));
    }
    Ok(())
}

/// A token of rdmig's ib_uverbs (a channel's or a uverbs file's): hexadecimal, short.
pub fn token(what: &str, t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > MAX_TOKEN || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} {:?} is not a token (1 to {MAX_TOKEN} hex digits)", t.chars().take(80).collect::<String>()));
    }
    Ok(())
}

/// A number within `lo..=hi` (`what` names the field).
pub fn range<T: PartialOrd + std::fmt::Display>(what: &str, v: T, lo: T, hi: T) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("{what} is {v}, out of range ({lo}..={hi})"));
    }
    Ok(())
}

/// Access flags the kernel knows.
pub fn access(what: &str, a: u32) -> Result<(), String> {
    if a & !ACCESS_KNOWN != 0 {
        return Err(format!("{what} {a:#x} has unknown bits {:#x}", a & !ACCESS_KNOWN));
    }
    Ok(())
}

/// A byte range `start..start+len` of user space that does not wrap.
pub fn user_range(what: &str, start: u64, len: u64) -> Result<(), String> {
    match start.checked_add(len) {
        Some(end) if end <= USER_VA_END => Ok(()),
        _ => Err(format!("{what} {start:#x} + {len:#x} bytes is beyond user space")),
    }
}

/// An IB device name as the kernel allows it (rxe: `rxe0`), which the restore puts in sysfs
/// paths and `/dev/rxe_ctl` requests.
pub fn ibdev(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') || name.starts_with('-') {
        return Err(format!("ibdev {:?} is not an IB device name", name.chars().take(80).collect::<String>()));
    }
    Ok(())
}

/// A GID type as sysfs shows it (`RoCE v2`, `IB/RoCE v1`); empty in images that lack it.
pub fn gid_type(what: &str, t: &str) -> Result<(), String> {
    if t.len() > 32 || !t.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(format!("{what} {:?} is not a GID type", t.chars().take(80).collect::<String>()));
    }
    Ok(())
}

/// The context-wide fields: device, fd, counts, handles, rings and the QP images' places in the
/// blob of `blob_len` bytes. The objects' own fields are their modules' `check_image`.
pub fn check_context(img: &FileImage, c: &Context, blob_len: u64) -> Result<(), String> {
    device::uverbs_index(&c.path)?;
    if c.rdev_major != crate::common::UVERBS_MAJOR || c.rdev_minor >= 1 << 20 {
        return Err(format!("rdev {}:{} is not a uverbs device number", c.rdev_major, c.rdev_minor));
    }
    ibdev(&c.ibdev)?;
    fd("the uverbs file's fd", img.fd)?;
    if let Some(t) = &c.file_token {
        token("file_token", t)?;
    }
    check_handles(c)?;
    if c.channels.len() > MAX_CHANNELS || c.comp_channels as usize > MAX_CHANNELS {
        return Err(format!("holds {} completion channels (comp_channels {}), more than {MAX_CHANNELS}", c.channels.len(), c.comp_channels));
    }
    let pending = c.channels.iter().map(|ch| ch.pending.len()).sum::<usize>() + c.async_pending.len();
    if pending > MAX_PENDING_EVENTS {
        return Err(format!("holds {pending} queued events, more than {MAX_PENDING_EVENTS}"));
    }
    check_queues(c, blob_len)
}

/// Handles: at most [`MAX_OBJECTS`] objects, each handle below [`MAX_HANDLE`] and held by one
/// object only (the restore makes each object at its handle, and fills the gaps below).
pub fn check_handles(c: &Context) -> Result<(), String> {
    let n = c.pds.len() + c.cqs.len() + c.srqs.len() + c.qps.len() + c.mrs.len() + c.mws.len() + c.ahs.len();
    if n > MAX_OBJECTS {
        return Err(format!("holds {n} verbs objects, more than {MAX_OBJECTS}"));
    }
    let all = c.pds.iter().map(|p| ("PD", p.handle)).chain(c.cqs.iter().map(|x| ("CQ", x.handle))).chain(c.srqs.iter().map(|x| ("SRQ", x.handle)));
    let all = all.chain(c.qps.iter().map(|x| ("QP", x.handle))).chain(c.mrs.iter().map(|x| ("MR", x.handle)));
    let all = all.chain(c.mws.iter().map(|x| ("MW", x.handle))).chain(c.ahs.iter().map(|x| ("AH", x.handle)));
    let mut seen = BTreeSet::new();
    for (kind, h) in all {
        if h >= MAX_HANDLE {
            return Err(format!("{kind} handle {h} is out of range (handles are below {MAX_HANDLE})"));
        }
        if !seen.insert(h) {
            return Err(format!("{kind} handle {h} is held by two objects"));
        }
    }
    Ok(())
}

/// The saved rings: page-aligned mappings of user space, whole pages, at most
/// [`MAX_RING_BYTES`] each, `len` = `end - start`, their contents in the blob, one per page
/// offset; and every ring the objects name is one of them.
pub fn check_queues(c: &Context, blob_len: u64) -> Result<(), String> {
    if c.queues.len() > MAX_QUEUES {
        return Err(format!("holds {} ring mappings, more than {MAX_QUEUES}", c.queues.len()));
    }
    let mut pgoffs = BTreeSet::new();
    for q in &c.queues {
        let what = format!("ring mapping {:#x}-{:#x} (page offset {:#x})", q.start, q.end, q.pgoff);
        if q.start % PAGE != 0 || q.end <= q.start || q.end > USER_VA_END || q.end - q.start != q.len || q.len % PAGE != 0 {
            return Err(format!("{what}: start, end and len ({:#x}) are not a page-aligned mapping of user space", q.len));
        }
        if q.len > MAX_RING_BYTES {
            return Err(format!("{what}: len {:#x} is more than {MAX_RING_BYTES:#x}", q.len));
        }
        if q.pgoff > u64::MAX / PAGE {
            return Err(format!("{what}: pgoff is out of range"));
        }
        if !q.in_blob() {
            if q.blob_offset != 0 {
                return Err(format!("{what}: saved without its contents, but with blob_offset {:#x}", q.blob_offset));
            }
        } else if q.blob_offset.checked_add(q.len).is_none_or(|e| e > blob_len) {
            return Err(format!("{what}: blob_offset {:#x} + len {:#x} is beyond the blob ({blob_len} bytes)", q.blob_offset, q.len));
        }
        if !pgoffs.insert(q.pgoff) {
            return Err(format!("{what}: two mappings have this page offset"));
        }
    }
    let ring = |what: String, o: Option<u64>| match o {
        Some(o) if pgoffs.contains(&o) => Ok(()),
        Some(o) => Err(format!("{what}: its ring (page offset {o:#x}) is not among the saved mappings")),
        None => Ok(()), // refused by the object's check
    };
    for x in &c.cqs {
        ring(format!("CQ handle {}", x.handle), x.pgoff)?;
    }
    for x in &c.srqs {
        ring(format!("SRQ handle {}", x.handle), x.pgoff)?;
    }
    for q in &c.qps {
        if let Some(l) = q.links {
            ring(format!("QP {} send queue", q.qpn), Some(l.sq_pgoff))?;
            ring(format!("QP {} receive queue", q.qpn), Some(l.rq_pgoff))?;
        }
        if let Some(m) = q.mig_image {
            if m.len == 0 || m.len > MAX_QP_IMAGE_BYTES || m.offset.checked_add(m.len).is_none_or(|e| e > blob_len) {
                return Err(format!("QP {}: mig_image offset {:#x} len {:#x} is not within the blob ({blob_len} bytes)", q.qpn, m.offset, m.len));
            }
        }
    }
    Ok(())
}

/// An event file's fields the restore uses: its role, fd, and channel token.
pub fn check_event_file(img: &FileImage, e: &EventFile) -> Result<(), String> {
    if !matches!(e.role.as_str(), "async" | "comp_channel") {
        return Err(format!("event file role {:?} is neither async nor comp_channel", e.role.chars().take(80).collect::<String>()));
    }
    fd("the event file's fd", img.fd)?;
    if let Some(t) = &e.channel {
        token("channel", t)?;
    }
    if let Some(t) = &e.file_token {
        token("file_token", t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{BlobRef, Cq, FileKind, Handle, Qp, QpLinks, QueueVma};

    fn ctx() -> Context {
        Context {
            path: "/dev/infiniband/uverbs0".into(),
            rdev_major: 231,
            rdev_minor: 192,
            ibdev: "rxe0".into(),
            flags: 2,
            pds: vec![Handle { handle: 0 }],
            cqs: vec![Cq { handle: 1, pgoff: Some(0x10), cqe: Some(255), ..Default::default() }],
            srqs: vec![],
            qps: vec![Qp {
                handle: 2,
                qpn: 17,
                links: Some(QpLinks { pd: 0, send_cq: 1, recv_cq: 1, sq_pgoff: 0x20, rq_pgoff: 0x30, srq: None }),
                mig_image: Some(BlobRef { offset: 3 * PAGE, len: 100 }),
                ..Default::default()
            }],
            mrs: vec![],
            mws: vec![],
            ahs: vec![],
            comp_channels: 0,
            async_event_files: 1,
            events_saved: true,
            channels: vec![],
            async_pending: vec![],
            queues: [0x10, 0x20, 0x30]
                .iter()
                .enumerate()
                .map(|(i, o)| QueueVma {
                    start: 0x7f00_0000_0000 + i as u64 * PAGE,
                    end: 0x7f00_0000_1000 + i as u64 * PAGE,
                    pgoff: *o,
                    prot: "rw-s".into(),
                    blob_offset: i as u64 * PAGE,
                    len: PAGE,
                    contents: Default::default(),
                })
                .collect(),
            file_token: None,
        }
    }

    fn img() -> FileImage {
        FileImage { id: 1, pid: 42, fd: 3, ns_pid: None, kind: FileKind::Context(Box::new(ctx())) }
    }

    const BLOB: u64 = 3 * PAGE + 100;

    fn err(c: &Context) -> String {
        check_context(&img(), c, BLOB).unwrap_err()
    }

    #[test]
    fn a_sane_context_passes() {
        assert_eq!(check_context(&img(), &ctx(), BLOB), Ok(()));
    }

    #[test]
    fn device_fields_are_refused_out_of_range() {
        let mut c = ctx();
        c.path = "/dev/sda".into();
        assert!(err(&c).contains("is not /dev/infiniband/uverbsN"));
        let mut c = ctx();
        c.rdev_major = 8;
        assert!(err(&c).contains("rdev 8:192"));
        for bad in ["", "../../etc", "rxe0/../x", "rxe 0", "-rxe", &"r".repeat(64)] {
            let mut c = ctx();
            c.ibdev = bad.into();
            assert!(err(&c).contains("ibdev"), "{bad:?}");
        }
        let mut i = img();
        i.fd = -1;
        assert!(check_context(&i, &ctx(), BLOB).unwrap_err().contains("the uverbs file's fd is fd -1"));
        i.fd = MAX_FD;
        assert!(check_context(&i, &ctx(), BLOB).is_err());
        let mut c = ctx();
        c.file_token = Some("../x".into());
        assert!(err(&c).contains("file_token"));
    }

    #[test]
    fn handles_are_bounded_and_unique() {
        let mut c = ctx();
        c.pds[0].handle = MAX_HANDLE;
        assert!(err(&c).contains("PD handle 65536 is out of range"));
        let mut c = ctx();
        c.pds[0].handle = u32::MAX;
        assert!(err(&c).contains("out of range"));
        let mut c = ctx();
        c.pds.push(Handle { handle: 2 });
        assert!(err(&c).contains("handle 2 is held by two objects"));
        let mut c = ctx();
        c.pds = (0..MAX_OBJECTS as u32).map(|handle| Handle { handle }).collect();
        assert!(err(&c).contains("verbs objects, more than"));
    }

    #[test]
    fn counts_are_bounded() {
        let mut c = ctx();
        c.comp_channels = u32::MAX;
        assert!(err(&c).contains("completion channels"));
        let mut c = ctx();
        c.async_pending = vec![Default::default(); MAX_PENDING_EVENTS + 1];
        assert!(err(&c).contains("queued events"));
        let mut c = ctx();
        c.queues = vec![c.queues[0].clone(); MAX_QUEUES + 1];
        assert!(err(&c).contains("ring mappings, more than"));
    }

    #[test]
    fn rings_must_be_mappings_within_the_blob() {
        type Spoil = fn(&mut QueueVma);
        let bad: [(&str, Spoil); 8] = [
            ("not a page-aligned", |q| q.start += 1),
            ("not a page-aligned", |q| q.end = q.start),
            ("not a page-aligned", |q| q.len = 64),
            ("not a page-aligned", |q| {
                q.end = !(PAGE - 1);
                q.len = q.end - q.start
            }),
            ("not a page-aligned", |q| q.len = 2 * PAGE),
            ("beyond the blob", |q| q.blob_offset = BLOB),
            ("beyond the blob", |q| q.blob_offset = u64::MAX),
            ("pgoff is out of range", |q| q.pgoff = u64::MAX),
        ];
        for (want, f) in bad {
            let mut c = ctx();
            f(&mut c.queues[0]);
            assert!(err(&c).contains(want), "{want}: {}", err(&c));
        }
        let mut c = ctx();
        c.queues[1].pgoff = 0x10;
        assert!(err(&c).contains("two mappings have this page offset"));
        let mut c = ctx();
        c.queues[0].end = c.queues[0].start + MAX_RING_BYTES + PAGE;
        c.queues[0].len = MAX_RING_BYTES + PAGE;
        assert!(err(&c).contains("is more than"));
        let mut c = ctx();
        c.cqs[0].pgoff = Some(0x99);
        assert!(err(&c).contains("CQ handle 1: its ring (page offset 0x99) is not among the saved mappings"));
        let mut c = ctx();
        c.qps[0].links.as_mut().unwrap().rq_pgoff = 0x99;
        assert!(err(&c).contains("QP 17 receive queue"));
        for m in [BlobRef { offset: 3 * PAGE, len: 101 }, BlobRef { offset: u64::MAX, len: 2 }, BlobRef { offset: 0, len: 0 }] {
            let mut c = ctx();
            c.qps[0].mig_image = Some(m);
            assert!(err(&c).contains("mig_image"), "{m:?}");
        }
    }

    #[test]
    fn event_files_need_a_known_role_and_sane_fields() {
        let e = EventFile { context_id: Some(1), role: "async".into(), role_source: "x".into(), flags: 0, channel: None, file_token: None };
        assert_eq!(check_event_file(&img(), &e), Ok(()));
        let bad = EventFile { role: "rm -rf".into(), ..e.clone() };
        assert!(check_event_file(&img(), &bad).unwrap_err().contains("neither async nor comp_channel"));
        let bad = EventFile { channel: Some("".into()), ..e.clone() };
        assert!(check_event_file(&img(), &bad).unwrap_err().contains("channel"));
        let mut i = img();
        i.fd = i32::MIN;
        assert!(check_event_file(&i, &e).unwrap_err().contains("the event file's fd"));
    }
}
