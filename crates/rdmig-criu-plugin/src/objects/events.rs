//! Event files and event state: completion channels (which CQ delivers to which, the events
//! queued on each), the async event file (its queued events), and the event counters of CQs,
//! QPs and SRQs, as the fdinfo of rdmig's ib_uverbs shows them (softroce patch 0010). Dump:
//! read once no connected QP completes work any more; each event file gets its own image naming
//! its context and role. Restore: channels are created first (a CQ names its channel by fd),
//! counters set and events queued again once the objects exist (`RDMIG_UVERBS_IOC_EVENTS`), and
//! the files put at their old fd numbers with their old status flags.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{limits, DumpCx};
use crate::cmd;
use crate::common::{DumpError, RestoreError};
use crate::fdinfo::{self, EventInfo, UverbsInfo};
use crate::image::{AsyncEvent, Channel, Context, Cq, EventFile, FileKind, Loaded, Qp, Srq};
use crate::procfs;
use crate::uverbs;

// ---- dump ----

/// How many completion channels and async event files the file's context has (fd objects: the
/// kernel gives them no handle, they are dumped as their own event files).
pub fn count(cx: &DumpCx) -> Result<(u32, u32), DumpError> {
    let comp_channels = cx.handles(uverbs::OBJ_COMP_CHANNEL, "completion channel")?.len() as u32;
    let async_event_files = cx.handles(uverbs::OBJ_ASYNC_EVENT, "async event file")?.len() as u32;
    Ok((comp_channels, async_event_files))
}

/// Refuses completion channels when ib_uverbs does not show which CQ uses which (a stock one).
pub fn refuse_untold_channels(cx: &DumpCx, uv: Option<&UverbsInfo>, comp_channels: u32) -> Result<(), DumpError> {
    if comp_channels > 0 && uv.is_none() {
        return Err(cx.unsupported(format!(
            "holds {comp_channels} completion channel(s), but this ib_uverbs does not show which CQ uses which channel nor \
             the CQs' event counters (it lacks rdmig's softroce patch 0010)"
        )));
    }
    Ok(())
}

/// The completion channels of the file (token `file`) and the events queued on them and on its
/// async event file; none without rdmig's ib_uverbs. Refuses a channel the process holds no fd of.
pub fn save(cx: &DumpCx, uv: Option<&UverbsInfo>, file: Option<&str>, comp_channels: u32) -> Result<(Vec<Channel>, Vec<AsyncEvent>), DumpError> {
    let (channels, async_pending) = match uv {
        Some(_) => event_files(cx.pid, file, &cx.who)?,
        None => (vec![], vec![]),
    };
    if channels.len() != comp_channels as usize {
        return Err(cx.unsupported(format!(
            "holds {comp_channels} completion channel(s) but has fds for {} of them (fds {:?}); a channel without an fd cannot be restored",
            channels.len(),
            channels.iter().map(|c| c.fd).collect::<Vec<_>>()
        )));
    }
    Ok((channels, async_pending))
}

/// The process's completion channels (each with its lowest fd and the events queued on it) and
/// the events queued on its async event file (the one with the lowest fd), from their fdinfo.
/// With `file` (the uverbs file's token), only the event files of that uverbs file.
fn event_files(pid: i32, file: Option<&str>, who: &str) -> Result<(Vec<Channel>, Vec<AsyncEvent>), DumpError> {
    let mut channels: Vec<Channel> = vec![];
    let mut async_pending: Option<Vec<AsyncEvent>> = None;
    for n in procfs::event_fds(pid)? {
        let text = fdinfo::read(pid, n).map_err(DumpError::sys(format!("{who}: read /proc/{pid}/fdinfo/{n}")))?;
        if file.is_some() && fdinfo::file_token(&text).as_deref() != file {
            continue;
        }
        match fdinfo::parse_event_file(&text).map_err(|e| DumpError::Unsupported(format!("{who}: fdinfo of event fd {n}: {e}")))? {
            EventInfo::CompChannel { token, pending } => {
                if !channels.iter().any(|c| c.token == token) {
                    channels.push(Channel { token, fd: n, pending });
                }
            }
            EventInfo::Async { pending } => {
                async_pending.get_or_insert(
                    pending.into_iter().map(|e| AsyncEvent { event_type: e.event_type, element: e.element, object: e.object, handle: e.handle }).collect(),
                );
            }
            EventInfo::Unknown => {
                return Err(DumpError::Unsupported(format!("{who}: event fd {n} shows no rdmig lines in its fdinfo, unlike its uverbs file")))
            }
        }
    }
    Ok((channels, async_pending.unwrap_or_default()))
}

/// Checks that the saved event state refers only to objects the image holds: each CQ's channel is
/// one of the process's channels, each queued completion event is of a CQ, each queued async
/// event is of a CQ, QP or SRQ of the image or of the device. Both sides check it.
pub fn check(cqs: &[Cq], qps: &[Qp], srqs: &[Srq], channels: &[Channel], async_pending: &[AsyncEvent]) -> Result<(), String> {
    for c in cqs {
        if let Some(t) = &c.channel {
            if !channels.iter().any(|ch| &ch.token == t) {
                return Err(format!("CQ handle {} delivers to completion channel {t}, of which the process holds no fd", c.handle));
            }
        }
    }
    for ch in channels {
        for h in &ch.pending {
            if !cqs.iter().any(|c| c.handle == *h && c.channel.as_ref() == Some(&ch.token)) {
                return Err(format!("completion channel fd {} holds an event of CQ handle {h}, which does not deliver to it", ch.fd));
            }
        }
    }
    for e in async_pending {
        let known = match (e.object as u16, e.handle) {
            (0, None) => true,
            (uverbs::OBJ_CQ, Some(h)) => cqs.iter().any(|c| c.handle == h),
            (uverbs::OBJ_QP, Some(h)) => qps.iter().any(|q| q.handle == h),
            (uverbs::OBJ_SRQ, Some(h)) => srqs.iter().any(|q| q.handle == h),
            _ => false,
        };
        if !known {
            return Err(format!(
                "the async event file holds an unread event (type {}) of object type {} handle {:?}, which cannot be restored",
                e.event_type, e.object, e.handle
            ));
        }
    }
    Ok(())
}

/// An event file (CRIU's copy `fd`, held by process `pid` at its fd `pfd`): which context it
/// belongs to and its role. `context_of(token)` gives the (file id, completion channels) of the
/// context dumped so far for the uverbs file with that token (patch 0014), else of the
/// process's only one.
pub fn save_file(fd: RawFd, pid: i32, pfd: i32, who: &str, context_of: impl FnOnce(&Option<String>) -> Option<(u32, u32)>) -> Result<EventFile, DumpError> {
    let event_fds = procfs::event_fds(pid)?;
    // rdmig's ib_uverbs says what the file is; otherwise it is guessed.
    let text = fdinfo::read(0, fd).map_err(DumpError::sys(format!("{who}: read its fdinfo")))?;
    let file_token = fdinfo::file_token(&text);
    let ctx = context_of(&file_token);
    let info = fdinfo::parse_event_file(&text).map_err(|e| DumpError::Unsupported(format!("{who}: fdinfo: {e}")))?;
    let mut channel = None;
    let (role, role_source) = match info {
        EventInfo::CompChannel { token, .. } => {
            channel = Some(token);
            ("comp_channel", "fdinfo (rdmig's ib_uverbs)")
        }
        EventInfo::Async { .. } => ("async", "fdinfo (rdmig's ib_uverbs)"),
        EventInfo::Unknown => match ctx {
            Some((_, 0)) => ("async", "the process's context has no completion channel"),
            _ if event_fds.first() == Some(&pfd) => ("async", "lowest event fd of the process (libibverbs opens it with the device)"),
            _ => ("comp_channel", "not the lowest event fd of the process"),
        },
    };
    Ok(EventFile { context_id: ctx.map(|c| c.0), role: role.into(), role_source: role_source.into(), flags: procfs::fd_flags(fd), channel, file_token })
}

// ---- image checks ----

/// Every completion channel was saved with its CQs and events, and the event state refers only
/// to objects of the image.
pub fn check_image(c: &Context) -> Result<(), String> {
    if c.comp_channels as usize != c.channels.len() {
        return Err(format!(
            "holds {} completion channel(s), {} of them saved with their CQs and events (dumped with a stock ib_uverbs or an older plugin?)",
            c.comp_channels,
            c.channels.len()
        ));
    }
    for (i, ch) in c.channels.iter().enumerate() {
        limits::token("completion channel token", &ch.token)?;
        limits::fd(&format!("completion channel {}", ch.token), ch.fd)?;
        if c.channels[..i].iter().any(|o| o.token == ch.token || o.fd == ch.fd) {
            return Err(format!("completion channel {} (fd {}): two channels have this token or fd", ch.token, ch.fd));
        }
    }
    for e in &c.async_pending {
        limits::range("queued async event: event_type", e.event_type, 0, limits::MAX_EVENT_TYPE)?;
    }
    check(&c.cqs, &c.qps, &c.srqs, &c.channels, &c.async_pending)
}

// ---- restore ----

/// Whether event file image `ev` belongs to context image `ctx`: as the dump recorded, or, when
/// the event file was dumped before its context, by pid and the uverbs file's token.
pub fn belongs_to(ev: &Loaded, ctx: &Loaded) -> bool {
    let (FileKind::EventFile(e), FileKind::Context(c)) = (&ev.image.kind, &ctx.image.kind) else { return false };
    match e.context_id {
        Some(id) => id == ctx.image.id,
        None => ev.image.pid == ctx.image.pid && (e.file_token.is_none() || e.file_token == c.file_token),
    }
}

/// The fd number the process had for the async event file of context image `l`, if it was dumped.
pub fn async_target(images: &[Loaded], l: &Loaded) -> Option<RawFd> {
    images.iter().find(|e| matches!(&e.image.kind, FileKind::EventFile(ev) if ev.role == "async") && belongs_to(e, l)).map(|e| e.image.fd)
}

/// A recreated completion channel.
pub struct NewChannel {
    pub token: String,
    pub file: OwnedFd,
    /// The fd number the process had for it.
    pub target: RawFd,
}

/// Creates the completion channels of context `c` on the new uverbs file `fd`.
pub fn create_channels(fd: RawFd, c: &Context) -> Result<Vec<NewChannel>, RestoreError> {
    let mut chans = vec![];
    for ch in &c.channels {
        let cfd = cmd::create_comp_channel(fd).map_err(RestoreError::sys(format!("CREATE_COMP_CHANNEL (for fd {})", ch.fd)))?;
        // SAFETY: CREATE_COMP_CHANNEL returned a new descriptor that we own.
        chans.push(NewChannel { token: ch.token.clone(), file: unsafe { OwnedFd::from_raw_fd(cfd) }, target: ch.fd });
    }
    Ok(chans)
}

/// The fd of recreated channel `token` (of `chans`), -1 for none.
pub fn channel_fd(chans: &[NewChannel], token: &Option<String>) -> Result<RawFd, RestoreError> {
    match token {
        None => Ok(-1),
        Some(t) => chans.iter().find(|c| &c.token == t).map(|c| c.file.as_raw_fd()).ok_or_else(|| RestoreError::Refused(format!("no channel {t}"))),
    }
}

/// Gives the recreated CQs, QPs and SRQs the event counters they had and queues the events that
/// were queued at the dump, in their order (RDMIG_UVERBS_IOC_EVENTS of softroce patch 0010).
/// Returns how many calls it made (none when there is nothing to restore, so a context without
/// events restores on a stock ib_uverbs too).
pub fn restore_counters(fd: RawFd, c: &Context) -> Result<usize, RestoreError> {
    let mut calls: Vec<(String, cmd::EvCtl)> = vec![];
    let ev = |op, object: u16, handle| cmd::EvCtl { op, object: object as u32, handle, ..Default::default() };
    for cq in c.cqs.iter().filter(|cq| cq.comp_events_reported != 0 || cq.events_reported != 0) {
        let e = cmd::EvCtl {
            events_reported: cq.events_reported,
            comp_events_reported: cq.comp_events_reported,
            ..ev(cmd::EV_SET_COUNTERS, uverbs::OBJ_CQ, cq.handle)
        };
        calls.push((format!("set the event counters of CQ handle {} ({} completion, {} async)", cq.handle, cq.comp_events_reported, cq.events_reported), e));
    }
    for q in c.srqs.iter().filter(|q| q.events_reported != 0) {
        let e = cmd::EvCtl { events_reported: q.events_reported, ..ev(cmd::EV_SET_COUNTERS, uverbs::OBJ_SRQ, q.handle) };
        calls.push((format!("set the event counter of SRQ handle {} ({})", q.handle, q.events_reported), e));
    }
    for q in c.qps.iter().filter(|q| q.events_reported != 0) {
        let e = cmd::EvCtl { events_reported: q.events_reported, ..ev(cmd::EV_SET_COUNTERS, uverbs::OBJ_QP, q.handle) };
        calls.push((format!("set the event counter of QP {} ({})", q.qpn, q.events_reported), e));
    }
    for ch in &c.channels {
        for h in &ch.pending {
            calls.push((format!("queue a completion event of CQ handle {h} on the channel of fd {}", ch.fd), ev(cmd::EV_QUEUE_COMP, uverbs::OBJ_CQ, *h)));
        }
    }
    for a in &c.async_pending {
        let e = cmd::EvCtl { event_type: a.event_type, element: a.element, ..ev(cmd::EV_QUEUE_ASYNC, a.object as u16, a.handle.unwrap_or(0)) };
        calls.push((format!("queue async event type {} (object type {} handle {:?})", a.event_type, a.object, a.handle), e));
    }
    for (what, e) in &calls {
        cmd::events(fd, e).map_err(|err| {
            let hint = if err.raw_os_error() == Some(libc::ENOTTY) { " (this ib_uverbs lacks rdmig's softroce patch 0010)" } else { "" };
            RestoreError::Refused(format!("{what}: RDMIG_UVERBS_IOC_EVENTS: {err}{hint}"))
        })?;
    }
    Ok(calls.len())
}

/// Sets O_NONBLOCK on the new async event file `afile` and channels `chans` of context image
/// `l` where the process had set it (the event file images of `images` say).
pub fn set_flags(afile: &OwnedFd, chans: &[NewChannel], images: &[Loaded], l: &Loaded) -> Result<(), RestoreError> {
    let flags_of = |pick: &dyn Fn(&EventFile) -> bool| {
        images.iter().find_map(|e| match &e.image.kind {
            FileKind::EventFile(ev) if pick(ev) && belongs_to(e, l) => Some(ev.flags),
            _ => None,
        })
    };
    let nonblock = |f: &OwnedFd, flags: Option<i32>| -> Result<(), RestoreError> {
        if flags.is_some_and(|fl| fl & libc::O_NONBLOCK != 0) {
            // SAFETY: fcntl on a descriptor we own.
            if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
                return Err(RestoreError::sys("set O_NONBLOCK on an event file")(std::io::Error::last_os_error()));
            }
        }
        Ok(())
    };
    nonblock(afile, flags_of(&|e| e.role == "async"))?;
    for ch in chans {
        nonblock(&ch.file, flags_of(&|e| e.channel.as_ref() == Some(&ch.token)))?;
    }
    Ok(())
}
