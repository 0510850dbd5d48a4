//! The queue rings (CQ, SQ, RQ and SRQ rings) rxe shares with the process through mappings of
//! the uverbs file. Dump: found in `/proc/PID/maps` by page offset, and copied from the
//! process's memory once every connected QP is stopped. Restore: each recreated CQ, SRQ and QP
//! says at which offset its new ring can be mapped, UPDATE_VMA_MAP maps it at the old address,
//! and rings no QP state image carries are copied back once memory is final.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;

use super::DumpCx;
use crate::cmd;
use crate::common::{DumpError, RestoreError, PAGE};
use crate::image::{Context, QueueVma, RingContents};

/// Byte offsets in `struct rxe_queue_buf` (rdma_user_rxe.h): index mask, producer, consumer.
pub const RING_INDEX_MASK: usize = 4;
pub const RING_PRODUCER: usize = 128;
pub const RING_CONSUMER: usize = 256;
/// The ring's header (`struct rxe_queue_buf` up to its elements).
pub const RING_HEADER: usize = 384;

// ---- dump ----

/// A mapping of the uverbs file in the process.
pub struct Vma {
    pub start: u64,
    pub end: u64,
    /// Page offset in the uverbs file: which ring this is.
    pub pgoff: u64,
    /// Protection as `/proc/PID/maps` shows it (`rw-s`).
    pub prot: String,
}

/// The process's mappings of the uverbs file, by page offset.
pub fn mappings(cx: &DumpCx) -> Result<Vec<Vma>, DumpError> {
    let pid = cx.pid;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).map_err(DumpError::sys(format!("read /proc/{pid}/maps")))?;
    let mut vmas: Vec<Vma> = vec![];
    for l in maps.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[5] != cx.path {
            continue;
        }
        let (s, e) = f[0].split_once('-').unwrap_or(("0", "0"));
        let start = u64::from_str_radix(s, 16).unwrap_or(0);
        let end = u64::from_str_radix(e, 16).unwrap_or(0);
        let off = u64::from_str_radix(f[2], 16).unwrap_or(0);
        vmas.push(Vma { start, end, pgoff: off / PAGE, prot: f[1].to_string() });
    }
    vmas.sort_by_key(|v| v.pgoff);
    Ok(vmas)
}

/// Drops the mappings at page offsets `foreign` (rings of the process's other uverbs files).
pub fn forget(vmas: &mut Vec<Vma>, foreign: &[u64]) {
    vmas.retain(|v| !foreign.contains(&v.pgoff));
}

/// Copies every mapping from the process's memory to the end of `blob`. Called once every
/// connected QP is stopped: nothing changes the rings any more.
pub fn read(cx: &DumpCx, vmas: &[Vma], blob: &mut Vec<u8>) -> Result<Vec<QueueVma>, DumpError> {
    let (pid, who) = (cx.pid, &cx.who);
    let mem = fs::File::open(format!("/proc/{pid}/mem")).map_err(DumpError::sys(format!("open /proc/{pid}/mem")))?;
    let mut queues = vec![];
    for Vma { start, end, pgoff, prot } in vmas {
        let len = end.saturating_sub(*start);
        let mut buf = vec![0u8; len as usize];
        mem.read_exact_at(&mut buf, *start)
            .map_err(|e| DumpError::Unsupported(format!("{who}: cannot read the queue mapping {start:#x}-{end:#x} from /proc/{pid}/mem: {e}")))?;
        queues.push(QueueVma {
            start: *start,
            end: *end,
            pgoff: *pgoff,
            prot: prot.clone(),
            blob_offset: blob.len() as u64,
            len,
            contents: RingContents::Blob,
        });
        blob.extend_from_slice(&buf);
    }
    Ok(queues)
}

/// Leaves the contents of the rings at page offsets `carried` out of `blob` (image version 3):
/// the QPs' driver state images carry them, and the restore never reads them from the blob.
/// Called once the dump has read what it needs from them. [`read`] appended the rings after
/// everything else (which ends at `others_end`: the QPs' state images), so the blob is cut at
/// the first ring and the kept rings are appended again; when it is not laid out so, nothing is
/// left out.
pub fn leave_out(queues: &mut [QueueVma], blob: &mut Vec<u8>, carried: &[u64], others_end: u64) {
    let Some(cut) = queues.iter().filter(|q| q.in_blob()).map(|q| q.blob_offset).min() else { return };
    let Some(cut_at) = usize::try_from(cut).ok().filter(|&c| c <= blob.len() && others_end <= cut) else { return };
    // Where each ring's contents go: (index, new offset, or None when left out).
    let mut kept = vec![];
    let mut plan = vec![];
    for (i, q) in queues.iter().enumerate().filter(|(_, q)| q.in_blob()) {
        let Some(bytes) = usize::try_from(q.blob_offset).ok().zip(usize::try_from(q.len).ok()).and_then(|(s, n)| blob.get(s..s.checked_add(n)?)) else {
            return;
        };
        if carried.contains(&q.pgoff) {
            plan.push((i, None));
        } else {
            plan.push((i, Some(cut + kept.len() as u64)));
            kept.extend_from_slice(bytes);
        }
    }
    blob.truncate(cut_at);
    blob.append(&mut kept);
    for (i, at) in plan {
        let q = &mut queues[i];
        match at {
            Some(at) => q.blob_offset = at,
            None => {
                q.blob_offset = 0;
                q.contents = RingContents::InQpImage;
            }
        }
    }
}

/// Refuses an image whose ring contents are left out where no QP's driver image carries them.
pub fn check_contents(c: &Context) -> Result<(), String> {
    let carried = super::qp::carried_rings_of(c);
    match c.queues.iter().find(|q| !q.in_blob() && !carried.contains(&q.pgoff)) {
        Some(q) => {
            Err(format!("ring mapping {:#x}-{:#x} (page offset {:#x}) was saved without its contents, and no connected QP carries it", q.start, q.end, q.pgoff))
        }
        None => Ok(()),
    }
}

/// The saved rings, to read their indices.
pub struct Saved<'a> {
    pub queues: &'a [QueueVma],
    pub blob: &'a [u8],
}

impl Saved<'_> {
    /// The 32-bit word at byte `at` of the ring at page offset `pgoff`.
    pub fn word(&self, pgoff: u64, at: usize) -> Option<u32> {
        let q = self.queues.iter().find(|q| q.pgoff == pgoff)?;
        let start = usize::try_from(q.blob_offset).ok()?.checked_add(at)?;
        let b = self.blob.get(start..start.checked_add(4)?)?;
        Some(u32::from_ne_bytes(b.try_into().ok()?))
    }
}

// ---- restore ----

/// The rings recreated so far: old page offset -> (new page offset, mapping address).
pub type Offsets = BTreeMap<u64, (u64, u64)>;

/// Where the recreated objects' rings are, to map them where the old ones were.
pub struct NewRings<'a> {
    saved: &'a [QueueVma],
    pub offsets: Offsets,
}

impl<'a> NewRings<'a> {
    pub fn new(c: &'a Context) -> NewRings<'a> {
        NewRings { saved: &c.queues, offsets: BTreeMap::new() }
    }

    /// Records that the ring saved at page offset `old` (of `what`) is now at `mi`; refuses a
    /// ring that was not saved or that is smaller than the old mapping.
    pub fn add(&mut self, what: &str, old: u64, mi: &cmd::MmInfo) -> Result<(), RestoreError> {
        let (len, start) = self
            .saved
            .iter()
            .find(|q| q.pgoff == old)
            .map(|q| (q.len, q.start))
            .ok_or_else(|| RestoreError::Refused(format!("{what}: no saved mapping at page offset {old:#x}")))?;
        if (mi.size as u64) < len {
            return Err(RestoreError::Refused(format!("{what}: the new ring has {} bytes, the old mapping {len}: sizes differ", mi.size)));
        }
        self.offsets.insert(old, (mi.offset / PAGE, start));
        Ok(())
    }
}

/// UPDATE_VMA_MAP: the new file offset (CRIU's "pgoff" is in bytes) of the ring that was mapped
/// at `addr` from file offset `old_offset`, if it is one of `offsets`.
pub fn new_offset(offsets: &Offsets, addr: u64, old_offset: u64) -> Option<u64> {
    if old_offset % PAGE != 0 {
        return None;
    }
    let (new, start) = offsets.get(&(old_offset / PAGE))?;
    (*start == addr).then_some(*new * PAGE)
}

/// Whether `/proc/PID/maps` text `maps` has a mapping of exactly `start..end` of a uverbs file.
pub fn is_uverbs_mapping(maps: &str, start: u64, end: u64) -> bool {
    maps.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some((s, e)) = f.first().and_then(|r| r.split_once('-')) else { return false };
        f.len() >= 6 && f[5].starts_with("/dev/infiniband/uverbs") && u64::from_str_radix(s, 16) == Ok(start) && u64::from_str_radix(e, 16) == Ok(end)
    })
}

/// Copies back, through `/proc/PID/mem`, the saved rings of context `c` (image blob `blob`)
/// other than those at page offsets `carried` (their contents came with a QP's driver image).
/// The header (element size and index mask) is the driver's: checked, not written; the rest
/// (indices, elements) is written as saved.
pub fn copy_back(c: &Context, blob: &[u8], carried: &[u64], pid: i32, who: &str) -> Result<(), RestoreError> {
    let mem =
        fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/mem")).map_err(RestoreError::sys(format!("{who}: open /proc/{pid}/mem")))?;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).map_err(RestoreError::sys(format!("{who}: read /proc/{pid}/maps")))?;
    for q in c.queues.iter().filter(|q| !carried.contains(&q.pgoff)) {
        let data = Some(q)
            .filter(|q| q.in_blob())
            .and_then(|q| super::qp::blob_range(blob, q.blob_offset, q.len))
            .filter(|d| d.len() >= RING_HEADER)
            .ok_or_else(|| RestoreError::Refused(format!("{who}: the saved ring at {:#x} is not a whole ring within the blob", q.start)))?;
        // Written only where the process maps a uverbs file, exactly as saved: the ring.
        if !is_uverbs_mapping(&maps, q.start, q.end) {
            return Err(RestoreError::Refused(format!("{who}: {:#x}-{:#x} is not a uverbs ring mapping of the restored process", q.start, q.end)));
        }
        let mut hdr = [0u8; 8];
        mem.read_exact_at(&mut hdr, q.start).map_err(RestoreError::sys(format!("{who}: read the ring at {:#x}", q.start)))?;
        if hdr[..] != data[..8] {
            return Err(RestoreError::Refused(format!("{who}: the new ring at {:#x} has another element size or capacity", q.start)));
        }
        mem.write_all_at(&data[64..], q.start + 64).map_err(RestoreError::sys(format!("{who}: write the ring at {:#x}", q.start)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(pgoff: u64, blob_offset: u64, pages: u64) -> QueueVma {
        let start = 0x7f00_0000_0000 + pgoff * PAGE;
        QueueVma { start, end: start + pages * PAGE, pgoff, prot: "rw-s".into(), blob_offset, len: pages * PAGE, contents: RingContents::Blob }
    }

    #[test]
    fn carried_rings_are_left_out_of_the_blob_and_the_others_move_up() {
        // 100 bytes of QP state image, then rings 0x10 (1 page), 0x20 (2 pages), 0x30 (1 page).
        let p = PAGE as usize;
        let mut blob = vec![7u8; 100];
        for (fill, pages) in [(1u8, 1), (2, 2), (3, 1)] {
            blob.extend(std::iter::repeat_n(fill, pages * p));
        }
        let mut queues = vec![ring(0x10, 100, 1), ring(0x20, 100 + PAGE, 2), ring(0x30, 100 + 3 * PAGE, 1)];
        leave_out(&mut queues, &mut blob, &[0x10, 0x30], 100);
        assert_eq!(blob.len(), 100 + 2 * p, "the QP image and ring 0x20");
        assert_eq!(&blob[..100], &[7u8; 100][..]);
        assert_eq!(queues[1].blob_offset, 100);
        assert!(blob[100..].iter().all(|&b| b == 2), "ring 0x20's contents, moved up");
        for q in [&queues[0], &queues[2]] {
            assert_eq!((q.contents, q.blob_offset), (RingContents::InQpImage, 0));
        }
        assert_eq!(queues[1].contents, RingContents::Blob);
        assert_eq!(queues[1].len, 2 * PAGE, "the mapping's length stays");

        // A blob not laid out as read() lays it out, or a ring beyond it: left as it is.
        let mut blob = vec![0u8; 100 + p];
        let mut queues = vec![ring(0x10, 100, 1)];
        leave_out(&mut queues, &mut blob, &[0x10], 200);
        assert_eq!((blob.len(), queues[0].contents), (100 + p, RingContents::Blob), "a QP image after the first ring");
        let mut queues = vec![ring(0x10, 100, 2)];
        leave_out(&mut queues, &mut blob, &[0x10], 100);
        assert_eq!((blob.len(), queues[0].contents), (100 + p, RingContents::Blob), "a ring beyond the blob");
    }

    #[test]
    fn a_ring_without_contents_must_be_carried_by_a_connected_qp() {
        use crate::image::{BlobRef, Cq, QpLinks};
        let mut c = crate::objects::tests::ctx();
        c.cqs = vec![Cq { handle: 1, pgoff: Some(0x10), ..Default::default() }];
        c.qps[0].links = Some(QpLinks { pd: 0, send_cq: 1, recv_cq: 1, sq_pgoff: 0x20, rq_pgoff: 0x30, srq: None });
        c.qps[0].mig_image = Some(BlobRef { offset: 0, len: 8 });
        c.queues = vec![ring(0x10, 0, 1), ring(0x20, 0, 1), ring(0x30, 0, 1)];
        for q in &mut c.queues {
            q.contents = RingContents::InQpImage;
        }
        assert_eq!(check_contents(&c), Ok(()));
        c.qps[0].mig_image = None;
        assert!(check_contents(&c).unwrap_err().contains("no connected QP carries it"), "an unconnected QP's rings are copied back from the blob");
    }

    #[test]
    fn only_uverbs_mappings_are_rings() {
        let maps = "55d0c0de0000-55d0c0de1000 r--p 00000000 08:01 1234 /usr/bin/x\n\
                    7f0000000000-7f0000002000 rw-s 0004d000 00:06 1064 /dev/infiniband/uverbs0\n\
                    7f0000002000-7f0000003000 rw-p 00000000 00:00 0\n";
        assert!(is_uverbs_mapping(maps, 0x7f00_0000_0000, 0x7f00_0000_2000));
        assert!(!is_uverbs_mapping(maps, 0x7f00_0000_0000, 0x7f00_0000_1000), "part of a mapping");
        assert!(!is_uverbs_mapping(maps, 0x55d0_c0de_0000, 0x55d0_c0de_1000), "not a uverbs file");
        assert!(!is_uverbs_mapping(maps, 0x7f00_0000_2000, 0x7f00_0000_3000), "anonymous");
        assert!(!is_uverbs_mapping("garbage\n\n-\n", 0, 0));
    }

    #[test]
    fn saved_words_out_of_the_blob_are_none() {
        let queues = [QueueVma { start: 0, end: PAGE, pgoff: 1, prot: "rw-s".into(), blob_offset: u64::MAX, len: PAGE, contents: Default::default() }];
        let saved = Saved { queues: &queues, blob: &[0; 16] };
        assert_eq!(saved.word(1, RING_PRODUCER), None);
        assert_eq!(saved.word(2, 0), None);
    }
}
