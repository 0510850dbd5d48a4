//! Restore side: how a context's objects get their old uverbs handles back. uverbs gives a new
//! object the lowest free handle, so the objects are made in an order that leaves each one's old
//! handle the lowest free one when it is made, with filler PDs holding the handles in between.

use std::collections::BTreeSet;

use crate::image::{self, Context};

/// An object of a context, as the restore creates it.
pub enum Obj<'a> {
    Pd(u32),
    Cq(&'a image::Cq),
    Mr(&'a image::Mr),
    Srq(&'a image::Srq),
    Ah(&'a image::Ah),
    Mw(&'a image::Mw),
    Qp(&'a image::Qp),
}

impl<'a> Obj<'a> {
    /// The objects of context `c` in uverbs handle order.
    pub fn all(c: &'a Context) -> Vec<Obj<'a>> {
        let mut objs: Vec<Obj> = c.pds.iter().map(|p| Obj::Pd(p.handle)).collect();
        objs.extend(c.cqs.iter().map(Obj::Cq));
        objs.extend(c.mrs.iter().map(Obj::Mr));
        objs.extend(c.srqs.iter().map(Obj::Srq));
        objs.extend(c.ahs.iter().map(Obj::Ah));
        objs.extend(c.mws.iter().map(Obj::Mw));
        objs.extend(c.qps.iter().map(Obj::Qp));
        objs.sort_by_key(Obj::handle);
        objs
    }

    pub fn handle(&self) -> u32 {
        match self {
            Obj::Pd(h) => *h,
            Obj::Cq(c) => c.handle,
            Obj::Mr(m) => m.handle,
            Obj::Srq(q) => q.handle,
            Obj::Ah(a) => a.handle,
            Obj::Mw(w) => w.handle,
            Obj::Qp(q) => q.handle,
        }
    }

    /// Creation level of an object: what it needs is made on an earlier level (PDs and CQs, then
    /// MRs, SRQs, AHs and MWs on their PDs, then QPs on their PD, CQs and SRQ; MWs are bound
    /// once memory is final).
    pub fn level(&self) -> u8 {
        match self {
            Obj::Pd(_) | Obj::Cq(_) => 0,
            Obj::Mr(_) | Obj::Srq(_) | Obj::Ah(_) | Obj::Mw(_) => 1,
            Obj::Qp(_) => 2,
        }
    }

    /// The restore's step that creates an object of this kind (`rdmig_image::timing`).
    pub fn step_name(&self) -> &'static str {
        match self {
            Obj::Pd(_) => "create_pd",
            Obj::Cq(_) => "create_cq",
            Obj::Mr(_) => "create_mr",
            Obj::Srq(_) => "create_srq",
            Obj::Ah(_) => "create_ah",
            Obj::Mw(_) => "create_mw",
            Obj::Qp(_) => "create_qp",
        }
    }

    /// What the object is, for messages.
    pub fn what(&self) -> String {
        match self {
            Obj::Pd(_) => "PD".to_string(),
            Obj::Cq(cq) => format!("CQ ({} entries)", cq.cqe.unwrap_or(0)),
            Obj::Mr(m) => format!("MR lkey {:#x}", m.lkey),
            Obj::Srq(q) => format!("SRQ ({} WRs, limit {})", q.max_wr, q.srq_limit),
            Obj::Ah(a) => format!("AH {}", a.ah_num.unwrap_or(0)),
            Obj::Mw(w) => format!("MW rkey {:#x}", w.rkey.unwrap_or(0)),
            Obj::Qp(q) => format!("QP {}", q.qpn),
        }
    }
}

/// One step of recreating a context's objects at their handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Allocate a filler PD, which must get this handle.
    Filler(u32),
    /// Free the filler PD at this handle.
    FreeFiller(u32),
    /// Create the object of this handle.
    Create(u32),
}

/// The steps that recreate objects `(handle, level)` at their handles. uverbs gives a new
/// object the lowest free handle. Objects are made level by level (an object may have a lower
/// handle than its PD), each level in handle order; before an object is made every lower handle
/// is taken, by an object made before it or by a filler PD. The fillers on the handles of a
/// level are freed when the level starts, the others at the end.
pub fn plan(objs: &[(u32, u8)]) -> Vec<Step> {
    let mut order = objs.to_vec();
    order.sort_by_key(|&(h, l)| (l, h));
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut fillers: BTreeSet<u32> = BTreeSet::new();
    let mut steps = vec![];
    let mut cur = None;
    for &(h, l) in &order {
        if cur != Some(l) {
            cur = Some(l);
            for &(p, _) in order.iter().filter(|o| o.1 == l) {
                if fillers.remove(&p) {
                    taken.remove(&p);
                    steps.push(Step::FreeFiller(p));
                }
            }
        }
        for want in 0..h {
            if taken.insert(want) {
                fillers.insert(want);
                steps.push(Step::Filler(want));
            }
        }
        taken.insert(h);
        steps.push(Step::Create(h));
    }
    steps.extend(fillers.into_iter().map(Step::FreeFiller));
    steps
}

/// The steps that recreate `objs` at their handles.
pub fn plan_for(objs: &[Obj]) -> Vec<Step> {
    plan(&objs.iter().map(|o| (o.handle(), o.level())).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a plan against a model of uverbs' lowest-free handle allocation: every step must
    /// get the handle it expects, and at the end exactly the objects' handles are taken.
    fn run_plan(objs: &[(u32, u8)]) -> Vec<Step> {
        let steps = plan(objs);
        let mut used: BTreeSet<u32> = BTreeSet::new();
        let mut made: Vec<u32> = vec![];
        for s in &steps {
            let lowest = (0..).find(|h| !used.contains(h)).unwrap();
            match *s {
                Step::Filler(h) => {
                    assert_eq!(lowest, h, "{steps:?}");
                    used.insert(h);
                }
                Step::Create(h) => {
                    assert_eq!(lowest, h, "{steps:?}");
                    let l = objs.iter().find(|o| o.0 == h).unwrap().1;
                    assert!(made.iter().all(|m| objs.iter().find(|o| o.0 == *m).unwrap().1 <= l), "levels in order: {steps:?}");
                    used.insert(h);
                    made.push(h);
                }
                Step::FreeFiller(h) => assert!(used.remove(&h), "{steps:?}"),
            }
        }
        let mut want: Vec<u32> = objs.iter().map(|o| o.0).collect();
        want.sort_unstable();
        assert_eq!(used.into_iter().collect::<Vec<_>>(), want, "{steps:?}");
        steps
    }

    #[test]
    fn handles_are_recreated_by_level_with_fillers() {
        // PD 0, CQ 1, MR 2, QP 3: no filler at all.
        assert_eq!(run_plan(&[(0, 0), (1, 0), (2, 1), (3, 2)]), vec![Step::Create(0), Step::Create(1), Step::Create(2), Step::Create(3)]);
        // A hole at 1 (a destroyed object) gets a filler, freed at the end.
        assert_eq!(run_plan(&[(0, 0), (2, 1)]), vec![Step::Create(0), Step::Filler(1), Step::Create(2), Step::FreeFiller(1)]);
        // An MR (1) with a lower handle than its PD (2): the PD is made first over a filler at 1.
        assert_eq!(run_plan(&[(0, 0), (1, 1), (2, 0)]), vec![Step::Create(0), Step::Filler(1), Step::Create(2), Step::FreeFiller(1), Step::Create(1)]);
        // Several PDs, CQs, MRs, QPs and holes, interleaved.
        run_plan(&[(0, 0), (1, 0), (2, 0), (3, 2), (4, 1), (5, 1), (7, 0), (8, 1), (9, 1), (12, 2), (13, 0)]);
        run_plan(&[(3, 2), (1, 1), (6, 0)]);
        run_plan(&[]);
    }
}
