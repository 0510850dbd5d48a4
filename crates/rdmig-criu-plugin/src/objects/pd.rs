//! Protection domains: saved as their handles; every MR, MW, AH, SRQ and QP names its PD.
//! Restored with ALLOC_PD, and PDs also serve as the fillers that hold free handles while the
//! restore makes each object at its old handle (see [`crate::handles`]).

use std::os::fd::RawFd;

use super::DumpCx;
use crate::cmd;
use crate::common::{DumpError, RestoreError};
use crate::fdinfo::{Link, UverbsInfo};
use crate::image::Handle;
use crate::uverbs;

// ---- dump ----

/// The file's PDs. Listed first: every verbs device has PDs, so an error here is a real one.
pub fn save(cx: &DumpCx) -> Result<Vec<Handle>, DumpError> {
    Ok(cx.handles(uverbs::OBJ_PD, "PD")?.into_iter().map(|handle| Handle { handle }).collect())
}

/// The PD of object `h` of uverbs type `type_id` (`what`, for messages): from the fdinfo of
/// rdmig's ib_uverbs (softroce patch 0011), or the only PD there is.
pub fn of(cx: &DumpCx, uv: Option<&UverbsInfo>, pds: &[Handle], type_id: u16, h: u32, what: &str) -> Result<u32, DumpError> {
    match uv.and_then(|i| i.obj_of_type(type_id, h)).and_then(|o| o.pd) {
        Some(Link::Handle(p)) if pds.iter().any(|x| x.handle == p) => Ok(p),
        Some(Link::Handle(p)) => Err(cx.unsupported(format!("{what} uses PD handle {p}, which is not among the process's PDs"))),
        Some(Link::Busy) => Err(cx.unsupported(format!("{what} was being changed or destroyed while its PD was read"))),
        Some(Link::None) => Err(cx.unsupported(format!("{what} has no PD"))),
        None if pds.len() == 1 => Ok(pds[0].handle),
        None => {
            Err(cx
                .unsupported(format!("holds {} PDs, and this ib_uverbs does not show which PD {what} uses (it lacks rdmig's softroce patch 0011)", pds.len())))
        }
    }
}

// ---- restore ----

/// Allocates a PD; returns its handle.
pub fn create(fd: RawFd) -> Result<u32, RestoreError> {
    cmd::alloc_pd(fd).map_err(RestoreError::sys("ALLOC_PD"))
}

/// Allocates a filler PD, which must get handle `want`.
pub fn fill(fd: RawFd, want: u32) -> Result<(), RestoreError> {
    let h = cmd::alloc_pd(fd).map_err(RestoreError::sys("ALLOC_PD (handle filler)"))?;
    if h != want {
        return Err(RestoreError::Refused(format!("the filler for handle {want} got handle {h}")));
    }
    Ok(())
}

/// Frees the filler PD at handle `h`.
pub fn free_filler(fd: RawFd, h: u32) -> Result<(), RestoreError> {
    cmd::dealloc_pd(fd, h).map_err(RestoreError::sys(format!("DEALLOC_PD of filler {h}")))
}
