//! QP and MR numbers across the nodes of a cluster. A restored process needs its QPNs and MR
//! keys free on the destination, so no two processes that may meet on one node may share a
//! number: node I of N allocates only from block I of each number space, because its agent
//! reserves every other block (`/dev/rxe_ctl` RESERVE, which the normal allocator skips) and
//! points the allocation cursor (`last_qpn`, `last_mrn`) into its own block. A process migrated
//! in keeps the numbers of its origin's block (exact requests ignore reservations), and no local
//! allocation can take them. The reservations are persistent (they outlive the agent, so a
//! restarted agent finds them and adds nothing, and the module can still be unloaded; unloading
//! drops them).
//!
//! CM ID numbers (rdma_cm's, global on a host, kept by a restored process) are split the same
//! way: the agent points rdma_ucm's numbering of new IDs (`/proc/sys/net/rdma_ucm/id_min` and
//! `id_max`, softroce patch 25) at this node's block.
//!
//! The lowest [`MANUAL`] numbers of each space are nobody's block and never reserved: numbers
//! chosen by hand, MigrOS style (`echo 64 > /proc/sys/net/rdma_rxe/last_qpn`), work on every
//! node as before, and keeping them apart across nodes is then the user's business, as it was.

use rdmig_rxe::{Ctl, CtlError, Obj};

/// "Node I of N", 1 <= I <= N <= 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberRange {
    pub node: u32,
    pub nodes: u32,
}

impl std::str::FromStr for NumberRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or_else(|| format!("{s:?}: expected I/N, e.g. 2/3 for the second of three nodes"))?;
        let node: u32 = i.trim().parse().map_err(|_| format!("{s:?}: I must be a number"))?;
        let nodes: u32 = n.trim().parse().map_err(|_| format!("{s:?}: N must be a number"))?;
        if nodes == 0 || nodes > 64 || node == 0 || node > nodes {
            return Err(format!("{s:?}: need 1 <= I <= N <= 64"));
        }
        Ok(NumberRange { node, nodes })
    }
}

/// Size of the hand-managed zone at the bottom of each number space.
pub const MANUAL: u32 = 8192;

/// rdma_ucm's sysctls of CM ID numbering (softroce patch 25).
pub const CM_SYSCTL_DIR: &str = "/proc/sys/net/rdma_ucm";

impl NumberRange {
    /// This node's block `[first, last]` of `obj`'s index space.
    pub fn block(&self, obj: Obj) -> (u32, u32) {
        let (min, max) = obj.range();
        self.share_of(min + MANUAL, max)
    }

    /// This node's block `[first, last]` of CM ID numbers (those write() can name: up to
    /// `i32::MAX`).
    pub fn cm_id_block(&self) -> (u32, u32) {
        self.share_of(MANUAL, i32::MAX as u32)
    }

    /// Block I of N of `[min, max]`: equal blocks, the last one taking the remainder.
    fn share_of(&self, min: u32, max: u32) -> (u32, u32) {
        let size = (max - min + 1) / self.nodes;
        let first = min + (self.node - 1) * size;
        let last = if self.node == self.nodes { max } else { first + size - 1 };
        (first, last)
    }

    /// Makes rdma_ucm number new CM IDs from this node's block: `Ok(false)` when its sysctls are
    /// not there (a stock rdma_ucm, or none loaded), and rdma_cm processes number from 0.
    pub fn apply_cm_ids(&self) -> Result<bool, String> {
        let dir = std::path::Path::new(CM_SYSCTL_DIR);
        if !dir.join("id_min").exists() {
            return Ok(false);
        }
        let (first, last) = self.cm_id_block();
        // id_min first: while id_max is still above, the range only narrows.
        for (name, v) in [("id_min", first), ("id_max", last)] {
            let p = dir.join(name);
            std::fs::write(&p, v.to_string()).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        Ok(true)
    }

    /// Reserves the other nodes' blocks of QPNs and MR indices (unless reserved already) and
    /// moves the allocation cursors into ours.
    pub fn apply(&self) -> Result<(), CtlError> {
        let ctl = Ctl::open()?;
        let existing = rdmig_rxe::status::read()?;
        let have = |obj: Obj, first: u32, last: u32| {
            let name = format!("{obj:?}").to_lowercase();
            existing.iter().any(|r| {
                r.kind == "reserve"
                    && r.fields.get("obj") == Some(&name)
                    && r.fields.get("first").and_then(|v| v.parse().ok()) == Some(first)
                    && r.fields.get("last").and_then(|v| v.parse().ok()) == Some(last)
                    && r.fields.get("persist").map(String::as_str) == Some("1")
            })
        };
        for obj in [Obj::Qp, Obj::Mr] {
            let (min, max) = obj.range();
            let min = min + MANUAL;
            let (first, last) = self.block(obj);
            for (a, b) in [(min, first.saturating_sub(1)), (last + 1, max)] {
                if a <= b && a >= min && !have(obj, a, b) {
                    ctl.reserve(obj, a, b, true)?;
                }
            }
        }
        rdmig_rxe::sysctl::set("last_qpn", self.block(Obj::Qp).0 - Obj::Qp.range().0)?;
        rdmig_rxe::sysctl::set("last_mrn", self.block(Obj::Mr).0 - Obj::Mr.range().0)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_space_without_overlap() {
        for n in [1u32, 2, 3, 7] {
            for obj in [Obj::Qp, Obj::Mr] {
                let (min, max) = obj.range();
                let mut next = min + MANUAL;
                for i in 1..=n {
                    let (f, l) = NumberRange { node: i, nodes: n }.block(obj);
                    assert_eq!(f, next, "{obj:?} node {i}/{n}");
                    assert!(l >= f);
                    next = l + 1;
                }
                assert_eq!(next, max + 1);
            }
        }
    }

    #[test]
    fn cm_id_blocks_cover_what_write_can_name_without_overlap() {
        for n in [1u32, 2, 3, 64] {
            let mut next = MANUAL;
            for i in 1..=n {
                let (f, l) = NumberRange { node: i, nodes: n }.cm_id_block();
                assert_eq!(f, next, "node {i}/{n}");
                assert!(l >= f);
                next = l + 1;
            }
            assert_eq!(next, i32::MAX as u32 + 1);
        }
    }

    #[test]
    fn parses_and_refuses() {
        assert_eq!("2/3".parse::<NumberRange>(), Ok(NumberRange { node: 2, nodes: 3 }));
        for bad in ["", "3", "0/3", "4/3", "1/0", "a/b", "1/65"] {
            assert!(bad.parse::<NumberRange>().is_err(), "{bad}");
        }
    }
}
