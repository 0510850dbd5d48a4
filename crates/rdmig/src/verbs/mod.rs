//! Reliable-connected queue pairs over libibverbs (through `sideway`), as rdmig's tools and
//! transfer layer need them: one device context, PD, CQ with a completion channel, and an RC QP
//! per `RcQp`; page-aligned registered regions; send, receive and RDMA WRITE; blocking polls that
//! sleep on the completion channel instead of spinning (lab nodes have one virtual CPU).

pub mod control;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use sideway::ibverbs::address::{AddressHandleAttribute, Gid};
use sideway::ibverbs::completion::{BasicCompletionQueue, CompletionChannel, CompletionQueue, GenericCompletionQueue};
use sideway::ibverbs::device::{DeviceInfo, DeviceList};
use sideway::ibverbs::device_context::{DeviceContext, Mtu};
use sideway::ibverbs::memory_region::MemoryRegion;
use sideway::ibverbs::protection_domain::ProtectionDomain;
use sideway::ibverbs::queue_pair::{BasicQueuePair, PostSendGuard, QueuePair, QueuePairAttribute, QueuePairState, SetScatterGatherEntry, WorkRequestFlags};
use sideway::ibverbs::AccessFlags;

#[derive(Debug, thiserror::Error)]
pub enum VerbsError {
    #[error("RDMA device {0:?} not found (devices: {1})")]
    NoDevice(String, String),
    #[error("{what}: {source}")]
    Op {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{0}")]
    Invalid(String),
}

fn op<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> VerbsError {
    move |e| VerbsError::Op { what, source: Box::new(e) }
}

fn errno(what: &'static str, ret: i32) -> Result<(), VerbsError> {
    if ret == 0 {
        Ok(())
    } else {
        let e = if ret > 0 { ret } else { std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) };
        Err(VerbsError::Op { what, source: Box::new(std::io::Error::from_raw_os_error(e)) })
    }
}

#[derive(Debug, Clone)]
pub struct RcConfig {
    pub device: String,
    pub port: u8,
    pub gid_index: u32,
    pub mtu: Mtu,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    /// Sleep on a completion channel while waiting (true), or poll the CQ with short naps and
    /// have no channel at all (false): a process without a channel can be checkpointed by
    /// rdmig's CRIU plugin, which cannot restore channels yet.
    pub events: bool,
    /// PDs allocated (and left unused) before the QP's own, so that its PD is not the first:
    /// for tests of checkpoint/restore with several PDs.
    pub spare_pds: u32,
}

impl Default for RcConfig {
    fn default() -> Self {
        Self { device: "rxe0".into(), port: 1, gid_index: 1, mtu: Mtu::Mtu4096, max_send_wr: 128, max_recv_wr: 256, events: true, spare_pds: 0 }
    }
}

/// What a peer needs to connect its QP to ours: a wire type, defined with the protocol.
pub use rdmig_proto::Endpoint;

/// One completion, copied out of the CQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub wr_id: u64,
    /// `ibv_wc_status`: 0 is success.
    pub status: u32,
    pub opcode: u32,
    pub byte_len: u32,
    /// Immediate data of a RECV (SEND or RDMA WRITE with immediate), as the sender gave it.
    pub imm: u32,
}

impl Completion {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
}

/// Page-aligned anonymous memory registered with the PD. The MR is released before the memory.
pub struct Region {
    mr: std::mem::ManuallyDrop<Arc<MemoryRegion>>,
    ptr: NonNull<u8>,
    len: usize,
}

impl Region {
    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }
    pub fn rkey(&self) -> u32 {
        self.mr.rkey()
    }
    pub fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is a live mapping of len bytes owned by self. The NIC may write into it
        // concurrently (that is what RDMA is); callers read only what a completion announced.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self keeps other Rust references away.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // Deregister first, then unmap: the NIC must not write into memory that is gone.
        // SAFETY: mr is dropped exactly once, here; the range is the one mapped in `RcQp::region`.
        unsafe {
            std::mem::ManuallyDrop::drop(&mut self.mr);
            let _ = nix::sys::mman::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// Memory the caller mapped, registered with the QP's PD by `RcQp::register`: deregistered when
/// dropped, never unmapped (the caller owns the mapping and must keep it longer than this).
pub struct Registration {
    mr: Arc<MemoryRegion>,
    addr: u64,
    len: usize,
}

impl Registration {
    pub fn lkey(&self) -> u32 {
        self.mr.lkey()
    }
    pub fn rkey(&self) -> u32 {
        self.mr.rkey()
    }
    pub fn addr(&self) -> u64 {
        self.addr
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An SRQ from `RcQp::idle_srq`.
pub struct IdleSrq {
    srq: NonNull<rdma_mummy_sys::ibv_srq>,
}

impl Drop for IdleSrq {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_srq, destroyed once here.
        unsafe { rdma_mummy_sys::ibv_destroy_srq(self.srq.as_ptr()) };
    }
}

/// A type 1 memory window bound by `RcQp::bind_window`; deallocated when dropped.
pub struct Window {
    mw: NonNull<rdma_mummy_sys::ibv_mw>,
}

impl Window {
    pub fn rkey(&self) -> u32 {
        // SAFETY: the MW is alive until drop; librxe updated its rkey at the bind.
        unsafe { self.mw.as_ref().rkey }
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: allocated by ibv_alloc_mw, freed once here.
        unsafe { rdma_mummy_sys::ibv_dealloc_mw(self.mw.as_ptr()) };
    }
}

pub struct RcQp {
    // Field order is drop order: QP, CQ, channel, PD, context.
    qp: BasicQueuePair,
    cq: Arc<BasicCompletionQueue>,
    channel: Option<Arc<CompletionChannel>>,
    pd: Arc<ProtectionDomain>,
    _spare_pds: Vec<Arc<ProtectionDomain>>,
    ctx: Arc<DeviceContext>,
    cfg: RcConfig,
    psn: u32,
    gid: Gid,
}

impl RcQp {
    pub fn open(cfg: RcConfig) -> Result<Self, VerbsError> {
        let list = DeviceList::new().map_err(op("list RDMA devices"))?;
        let names: Vec<String> = list.iter().map(|d| d.name()).collect();
        let dev = list
            .iter()
            .find(|d| d.name() == cfg.device)
            .ok_or_else(|| VerbsError::NoDevice(cfg.device.clone(), if names.is_empty() { "none".into() } else { names.join(", ") }))?;
        let ctx = dev.open().map_err(op("open device"))?;
        let gid = ctx.query_gid(cfg.port, cfg.gid_index).map_err(op("query GID"))?;
        let spare_pds = (0..cfg.spare_pds).map(|_| ctx.alloc_pd().map_err(op("allocate a spare PD"))).collect::<Result<Vec<_>, _>>()?;
        let pd = ctx.alloc_pd().map_err(op("allocate PD"))?;
        Self::on_pd(ctx, pd, spare_pds, cfg, gid)
    }

    /// Another RC QP on this one's device context and PD, with a CQ (and, if the configuration
    /// asks for one, a completion channel) of its own: regions registered through either QP serve
    /// both. For processes that hold many QPs towards one peer, as applications with a QP per
    /// thread or per connection do.
    pub fn sibling(&self) -> Result<Self, VerbsError> {
        Self::on_pd(Arc::clone(&self.ctx), Arc::clone(&self.pd), Vec::new(), self.cfg.clone(), self.gid)
    }

    /// The CQ, QP and INIT transition of `open` and `sibling`, on a PD that exists already.
    fn on_pd(ctx: Arc<DeviceContext>, pd: Arc<ProtectionDomain>, spare_pds: Vec<Arc<ProtectionDomain>>, cfg: RcConfig, gid: Gid) -> Result<Self, VerbsError> {
        let channel = if cfg.events {
            let ch = CompletionChannel::new(&ctx).map_err(op("create completion channel"))?;
            ch.set_nonblocking(true).map_err(op("make completion channel non-blocking"))?;
            Some(ch)
        } else {
            None
        };
        let mut cqb = ctx.create_cq_builder();
        cqb.setup_cqe(cfg.max_send_wr + cfg.max_recv_wr);
        if let Some(ch) = &channel {
            cqb.setup_comp_channel(ch, 0);
        }
        let cq = cqb.build().map_err(op("create CQ"))?;
        let generic = GenericCompletionQueue::from(Arc::clone(&cq));
        let qp = pd
            .create_qp_builder()
            .setup_max_send_wr(cfg.max_send_wr)
            .setup_max_recv_wr(cfg.max_recv_wr)
            .setup_max_send_sge(1)
            .setup_max_recv_sge(1)
            .setup_send_cq(generic.clone())
            .setup_recv_cq(generic)
            .build()
            .map_err(op("create RC QP"))?;
        let psn = random_psn();
        let mut me = Self { qp, cq, channel, pd, _spare_pds: spare_pds, ctx, cfg, psn, gid };
        // INIT right away: rxe accepts receive work requests only from INIT on, and receives
        // must be posted before the peer can send.
        let access = AccessFlags::LocalWrite | AccessFlags::RemoteWrite | AccessFlags::RemoteRead;
        let mut a = QueuePairAttribute::new();
        a.setup_state(QueuePairState::Init).setup_pkey_index(0).setup_port(me.cfg.port).setup_access_flags(access);
        me.qp.modify(&a).map_err(op("QP to INIT"))?;
        Ok(me)
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint { qpn: self.qp.qp_number(), psn: self.psn, gid: self.gid.raw }
    }

    pub fn qp_number(&self) -> u32 {
        self.qp.qp_number()
    }

    pub fn context(&self) -> &Arc<DeviceContext> {
        &self.ctx
    }

    /// Creates a shared receive queue on the QP's PD that no QP uses (destroyed when dropped).
    /// For tests of what checkpoint/restore refuses.
    pub fn idle_srq(&self) -> Result<IdleSrq, VerbsError> {
        let mut init = rdma_mummy_sys::ibv_srq_init_attr {
            srq_context: std::ptr::null_mut(),
            attr: rdma_mummy_sys::ibv_srq_attr { max_wr: 16, max_sge: 1, srq_limit: 0 },
        };
        // SAFETY: the PD is alive (self holds it); init is read during the call.
        let srq = unsafe { rdma_mummy_sys::ibv_create_srq(self.pd.pd().as_ptr(), &mut init) };
        NonNull::new(srq).map(|srq| IdleSrq { srq }).ok_or_else(|| VerbsError::Op { what: "create SRQ", source: Box::new(std::io::Error::last_os_error()) })
    }

    /// Moves the QP (in INIT since `open`) through RTR and RTS towards `remote`. Retries are unlimited (7) so a
    /// peer that is briefly away (a migration) does not push the QP into the error state.
    pub fn connect(&mut self, remote: &Endpoint) -> Result<(), VerbsError> {
        self.connect_with(remote, 14, 7)
    }

    /// Like `connect`, with the local ACK timeout (4.096 us * 2^timeout) and the retry count chosen.
    pub fn connect_with(&mut self, remote: &Endpoint, timeout: u8, retry_cnt: u8) -> Result<(), VerbsError> {
        self.connect_rtr(remote)?;
        self.to_rts(timeout, retry_cnt)
    }

    /// Only the INIT -> RTR half of `connect`.
    pub fn connect_rtr(&mut self, remote: &Endpoint) -> Result<(), VerbsError> {
        let mut av = AddressHandleAttribute::new();
        av.setup_dest_lid(0)
            .setup_port(self.cfg.port)
            .setup_service_level(0)
            .setup_grh_src_gid_index(self.cfg.gid_index as u8)
            .setup_grh_dest_gid(&Gid { raw: remote.gid })
            .setup_grh_hop_limit(64);
        let mut a = QueuePairAttribute::new();
        a.setup_state(QueuePairState::ReadyToReceive)
            .setup_path_mtu(self.cfg.mtu)
            .setup_dest_qp_num(remote.qpn)
            .setup_rq_psn(remote.psn)
            .setup_max_dest_read_atomic(1)
            .setup_min_rnr_timer(12)
            .setup_address_vector(&av);
        self.qp.modify(&a).map_err(op("QP to RTR"))?;
        Ok(())
    }

    /// The RTR -> RTS half of `connect`; RNR retries stay unlimited.
    pub fn to_rts(&mut self, timeout: u8, retry_cnt: u8) -> Result<(), VerbsError> {
        let mut a = QueuePairAttribute::new();
        a.setup_state(QueuePairState::ReadyToSend)
            .setup_sq_psn(self.psn)
            .setup_timeout(timeout)
            .setup_retry_cnt(retry_cnt)
            .setup_rnr_retry(7)
            .setup_max_read_atomic(1);
        self.qp.modify(&a).map_err(op("QP to RTS"))?;
        Ok(())
    }

    /// The configuration the QP was opened with.
    pub fn config(&self) -> &RcConfig {
        &self.cfg
    }

    /// Like `region`, but mapped exactly at `addr` (which must be free and page aligned), so that
    /// a restored process gets its buffers, and the addresses in its queued work requests, back.
    pub fn region_at(&self, addr: u64, len: usize, remote_write: bool) -> Result<Region, VerbsError> {
        let page = 4096;
        let len = len.max(1).div_ceil(page) * page;
        if addr == 0 || addr % page as u64 != 0 {
            return Err(VerbsError::Invalid(format!("address {addr:#x} is not a page-aligned address")));
        }
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; nothing refers to the new one.
        let p = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != addr {
            let e = std::io::Error::last_os_error();
            if p != libc::MAP_FAILED {
                // SAFETY: an old kernel placed it elsewhere: undo that mapping.
                unsafe { libc::munmap(p, len) };
            }
            return Err(VerbsError::Invalid(format!("cannot map {len} bytes at {addr:#x}: {e}")));
        }
        let ptr = NonNull::new(p as *mut u8).expect("non-null mapping");
        let mut access = AccessFlags::LocalWrite;
        if remote_write {
            access |= AccessFlags::RemoteWrite | AccessFlags::RemoteRead;
        }
        // SAFETY: the mapping lives as long as the Region, which deregisters before unmapping.
        let mr = match unsafe { self.pd.reg_mr(ptr.as_ptr() as usize, len, access) } {
            Ok(mr) => mr,
            Err(e) => {
                // SAFETY: just mapped above.
                unsafe { libc::munmap(p, len) };
                return Err(op("register memory region")(e));
            }
        };
        Ok(Region { mr: std::mem::ManuallyDrop::new(mr), ptr, len })
    }

    /// Registers memory the caller already mapped (for a program that lays out and advises its
    /// own memory before the NIC may write it, e.g. without transparent huge pages), remote
    /// reads and writes allowed when `remote_write`.
    ///
    /// # Safety
    /// `addr..addr + len` must be a mapping of the calling process that stays mapped, readable
    /// and writable until the returned `Registration` is dropped.
    pub unsafe fn register(&self, addr: *mut u8, len: usize, remote_write: bool) -> Result<Registration, VerbsError> {
        let mut access = AccessFlags::LocalWrite;
        if remote_write {
            access |= AccessFlags::RemoteWrite | AccessFlags::RemoteRead;
        }
        // SAFETY: the caller keeps the range mapped for as long as the Registration lives.
        let mr = unsafe { self.pd.reg_mr(addr as usize, len, access) }.map_err(op("register memory region"))?;
        Ok(Registration { mr, addr: addr as u64, len })
    }

    /// Maps `len` bytes (rounded up to pages) and registers them.
    pub fn region(&self, len: usize, remote_write: bool) -> Result<Region, VerbsError> {
        Self::region_in(&self.pd, len, remote_write)
    }

    /// Like `region`, but on a PD of its own (kept as long as the region), not the QP's: for
    /// tests of checkpoint/restore with several PDs. A PD allocated and freed before it leaves a
    /// free handle below the new PD's, which the region's MR takes.
    pub fn region_on_own_pd(&mut self, len: usize, remote_write: bool) -> Result<Region, VerbsError> {
        let hole = self.ctx.alloc_pd().map_err(op("allocate PD"))?;
        let pd = self.ctx.alloc_pd().map_err(op("allocate PD"))?;
        drop(hole);
        Self::region_in(&pd, len, remote_write)
    }

    /// Like `region` (remote writes allowed), and memory windows may be bound to it.
    pub fn region_bindable(&self, len: usize) -> Result<Region, VerbsError> {
        Self::region_with(&self.pd, len, AccessFlags::LocalWrite | AccessFlags::RemoteWrite | AccessFlags::RemoteRead | AccessFlags::MemoryWindowBind)
    }

    /// Allocates a type 1 memory window on the QP's PD and binds it to all of `r` for remote
    /// writes (`ibv_bind_mw`: a work request on this QP, which must be in RTS; its completion is
    /// waited for here, so nothing else may be in flight). `r` must come from
    /// `region_bindable`; the window must be dropped before `r`.
    pub fn bind_window(&mut self, r: &Region) -> Result<Window, VerbsError> {
        const BIND_WR_ID: u64 = u64::MAX;
        // SAFETY: the PD is alive (self holds it); alloc_mw only reads it.
        let mw = unsafe { rdma_mummy_sys::ibv_alloc_mw(self.pd.pd().as_ptr(), rdma_mummy_sys::ibv_mw_type::IBV_MW_TYPE_1) };
        let mw = NonNull::new(mw).ok_or_else(|| VerbsError::Op { what: "allocate memory window", source: Box::new(std::io::Error::last_os_error()) })?;
        let w = Window { mw };
        let mut bind = rdma_mummy_sys::ibv_mw_bind {
            wr_id: BIND_WR_ID,
            send_flags: rdma_mummy_sys::ibv_send_flags::IBV_SEND_SIGNALED.0,
            bind_info: rdma_mummy_sys::ibv_mw_bind_info {
                // SAFETY: the MR is alive as long as `r`.
                mr: unsafe { r.mr.mr().as_ptr() },
                addr: r.addr(),
                length: r.len() as u64,
                mw_access_flags: rdma_mummy_sys::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0,
            },
        };
        // SAFETY: QP, MW and the bind description are alive for the call.
        errno("bind memory window", unsafe { rdma_mummy_sys::ibv_bind_mw(self.qp.qp().as_ptr(), mw.as_ptr(), &mut bind) })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut wcs = vec![];
        while Instant::now() < deadline {
            wcs.clear();
            self.poll_wait(&mut wcs, Duration::from_millis(200))?;
            if let Some(wc) = wcs.iter().find(|c| c.wr_id == BIND_WR_ID) {
                if !wc.ok() {
                    return Err(VerbsError::Invalid(format!("binding the memory window failed with status {}", wc.status)));
                }
                return Ok(w);
            }
        }
        Err(VerbsError::Invalid("no completion of the memory window bind".into()))
    }

    fn region_in(pd: &Arc<ProtectionDomain>, len: usize, remote_write: bool) -> Result<Region, VerbsError> {
        let mut access = AccessFlags::LocalWrite;
        if remote_write {
            access |= AccessFlags::RemoteWrite | AccessFlags::RemoteRead;
        }
        Self::region_with(pd, len, access)
    }

    fn region_with(pd: &Arc<ProtectionDomain>, len: usize, access: AccessFlags) -> Result<Region, VerbsError> {
        let page = 4096;
        let len = len.max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let ptr = unsafe {
            nix::sys::mman::mmap_anonymous(
                None,
                std::num::NonZeroUsize::new(len).expect("non-zero"),
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(op("map memory"))?;
        // SAFETY: the mapping lives as long as the Region, which deregisters before unmapping.
        let mr = match unsafe { pd.reg_mr(ptr.as_ptr() as usize, len, access) } {
            Ok(mr) => mr,
            Err(e) => {
                // SAFETY: just mapped above.
                unsafe {
                    let _ = nix::sys::mman::munmap(ptr, len);
                }
                return Err(op("register memory region")(e));
            }
        };
        Ok(Region { mr: std::mem::ManuallyDrop::new(mr), ptr: ptr.cast(), len })
    }

    fn check_range(r: &Region, off: usize, len: usize) -> Result<(), VerbsError> {
        if off.checked_add(len).is_none_or(|end| end > r.len) {
            return Err(VerbsError::Invalid(format!("range {off}+{len} outside a region of {} bytes", r.len)));
        }
        Ok(())
    }

    pub fn post_recv(&mut self, wr_id: u64, r: &Region, off: usize, len: usize) -> Result<(), VerbsError> {
        Self::check_range(r, off, len)?;
        let mut g = self.qp.start_post_recv();
        let h = g.construct_wr(wr_id);
        // SAFETY: the range was checked against a live registered region.
        unsafe { h.setup_sge(r.lkey(), r.addr() + off as u64, len as u32) };
        g.post().map_err(op("post receive"))
    }

    pub fn post_send(&mut self, wr_id: u64, r: &Region, off: usize, len: usize) -> Result<(), VerbsError> {
        Self::check_range(r, off, len)?;
        let mut g = self.qp.start_post_send();
        let h = g.construct_wr(wr_id, WorkRequestFlags::Signaled).setup_send();
        // SAFETY: as in post_recv.
        unsafe { h.setup_sge(r.lkey(), r.addr() + off as u64, len as u32) };
        g.post().map_err(op("post send"))
    }

    pub fn post_write(&mut self, wr_id: u64, r: &Region, off: usize, len: usize, rkey: u32, raddr: u64) -> Result<(), VerbsError> {
        Self::check_range(r, off, len)?;
        let mut g = self.qp.start_post_send();
        let h = g.construct_wr(wr_id, WorkRequestFlags::Signaled).setup_write(rkey, raddr);
        // SAFETY: as in post_recv.
        unsafe { h.setup_sge(r.lkey(), r.addr() + off as u64, len as u32) };
        g.post().map_err(op("post RDMA WRITE"))
    }

    /// RDMA WRITE with immediate data: the peer gets a receive completion carrying `imm`.
    #[allow(clippy::too_many_arguments)]
    pub fn post_write_imm(&mut self, wr_id: u64, r: &Region, off: usize, len: usize, rkey: u32, raddr: u64, imm: u32) -> Result<(), VerbsError> {
        Self::check_range(r, off, len)?;
        let mut g = self.qp.start_post_send();
        let h = g.construct_wr(wr_id, WorkRequestFlags::Signaled).setup_write_imm(rkey, raddr, imm);
        // SAFETY: as in post_recv.
        unsafe { h.setup_sge(r.lkey(), r.addr() + off as u64, len as u32) };
        g.post().map_err(op("post RDMA WRITE with immediate"))
    }

    /// Appends whatever completions are ready to `out`; never blocks.
    pub fn poll(&self, out: &mut Vec<Completion>) -> usize {
        let before = out.len();
        if let Ok(p) = self.cq.start_poll() {
            for wc in p {
                out.push(Completion { wr_id: wc.wr_id(), status: wc.status(), opcode: wc.opcode(), byte_len: wc.byte_len(), imm: wc.imm_data() });
            }
        }
        out.len() - before
    }

    /// Like `poll`, but sleeps on the completion channel for up to `timeout` when nothing is
    /// ready. Returns the number of completions appended (0 on timeout).
    pub fn poll_wait(&self, out: &mut Vec<Completion>, timeout: Duration) -> Result<usize, VerbsError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.poll(out) > 0 {
                return Ok(out.len());
            }
            let Some(channel) = &self.channel else {
                // No channel: nap briefly and look again.
                if Instant::now() >= deadline {
                    return Ok(0);
                }
                std::thread::sleep(Duration::from_micros(200));
                continue;
            };
            // SAFETY: the CQ is alive for as long as self.
            errno("arm CQ", unsafe { rdma_mummy_sys::ibv_req_notify_cq(self.cq.cq().as_ptr(), 0) })?;
            // A completion that arrived before arming raised no event: look once more.
            let n = self.poll(out);
            if n > 0 {
                return Ok(n);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            // SAFETY: the channel's fd is open for as long as self.
            let fd = unsafe { BorrowedFd::borrow_raw(channel.as_raw_fd()) };
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                Ok(0) => return Ok(0),
                Ok(_) => self.take_events()?,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(op("wait for completions")(e)),
            }
        }
    }

    /// Reads and acknowledges every pending completion event (the channel is non-blocking).
    fn take_events(&self) -> Result<(), VerbsError> {
        let Some(channel) = &self.channel else { return Ok(()) };
        loop {
            let mut cq: *mut rdma_mummy_sys::ibv_cq = std::ptr::null_mut();
            let mut ctx: *mut libc::c_void = std::ptr::null_mut();
            // SAFETY: channel and out-pointers are valid.
            let r = unsafe { rdma_mummy_sys::ibv_get_cq_event(channel.comp_channel().as_ptr(), &mut cq, &mut ctx) };
            if r != 0 {
                return Ok(()); // EAGAIN: drained
            }
            // SAFETY: cq came from the event just read; acknowledging it keeps destroy_cq from waiting.
            unsafe { rdma_mummy_sys::ibv_ack_cq_events(cq, 1) };
        }
    }
}

/// Fills `buf` with a pseudo-random pattern determined by `seed` alone (xorshift64), so a
/// receiver can regenerate what a sender wrote and compare: the test programs' payloads.
pub fn fill_pattern(seed: u64, buf: &mut [u8]) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b)).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(1);
        b = t.to_le_bytes();
    }
    u32::from_le_bytes(b) & 0x00ff_ffff
}
