/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR Linux-OpenIB) */
/*
 * User ABI of /dev/rxe_ctl, the control device of the rdma_rxe driver
 * with the rdmig patches. read() on the device returns a text status,
 * the ioctls below change the allocation of rxe object numbers.
 */

#ifndef RXE_CTL_ABI_H
#define RXE_CTL_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define RXE_CTL_ABI_VERSION	2

/* object types */
#define RXE_CTL_OBJ_QP		1	/* index = QPN */
#define RXE_CTL_OBJ_MR		2	/* index = lkey >> 8 */
#define RXE_CTL_OBJ_MW		3	/* index = rkey >> 8 */
#define RXE_CTL_OBJ_AH		4	/* index = ah_num */

/* length of the rxe device names below, with the terminating NUL */
#define RXE_CTL_IBDEV_NAME_MAX	64

/* bits in rxe_ctl_version.features */
#define RXE_CTL_FEAT_RESERVE	(1U << 0)
#define RXE_CTL_FEAT_EXPECT	(1U << 1)
#define RXE_CTL_FEAT_DIRTY	(1U << 2)
#define RXE_CTL_FEAT_QPMIG	(1U << 3)	/* QP_* commands */
#define RXE_CTL_FEAT_MR_REPIN	(1U << 4)	/* MR_REPIN, ring offsets */
#define RXE_CTL_FEAT_QP_EPOCH	(1U << 5)	/* PAUSE/RESUME epochs */
#define RXE_CTL_FEAT_MW_BIND	(1U << 6)	/* MW_BIND, MW and AH status */
#define RXE_CTL_FEAT_PAUSE_MAX	(1U << 7)	/* pauses end (pause_max_sec) */
#define RXE_CTL_FEAT_MR_WRPROTECT (1U << 8)	/* MR_WRPROTECT */
#define RXE_CTL_FEAT_MR_WRPROTECT_LOG (1U << 9)	/* MR_WRPROTECT_F_LOG */
#define RXE_CTL_FEAT_MR_HOLLOW	(1U << 10)	/* EXPECT RXE_CTL_F_HOLLOW */
#define RXE_CTL_FEAT_ADOPT	(1U << 11)	/* ADOPT, hollow MRs re-pinned into another process */
#define RXE_CTL_FEAT_QP_DUMP_SHARED (1U << 12)	/* QP_DUMP_F_NO_CQ, _F_NO_SRQ */
#define RXE_CTL_FEAT_QP_STOPPED	(1U << 13)	/* EXPECT RXE_CTL_F_STOPPED */

struct rxe_ctl_version {
	__u32	abi_version;	/* out: RXE_CTL_ABI_VERSION */
	__u32	features;	/* out: RXE_CTL_FEAT_* */
	__u32	page_shift;	/* out: log2 of the dirty log page size */
	__u32	dirty_log;	/* out: 1 if new user MRs get a dirty log */
};

/* flags of RXE_CTL_IOC_RESERVE and RXE_CTL_IOC_EXPECT */
#define RXE_CTL_F_PERSIST	(1U << 0)	/* keep after close() */
#define RXE_CTL_F_KEY		(1U << 1)	/* EXPECT: key is valid */
#define RXE_CTL_F_HOLLOW	(1U << 2)	/* EXPECT of an MR: pin no pages */
#define RXE_CTL_F_STOPPED	(1U << 3)	/* EXPECT of a QP: start stopped */

/*
 * Reserve the indices first..last of one object type on all rxe devices:
 * the normal allocator no longer hands them out.
 */
struct rxe_ctl_reserve {
	__u32	obj;		/* in: RXE_CTL_OBJ_QP, _MR or _MW */
	__u32	flags;		/* in: RXE_CTL_F_PERSIST */
	__u32	first;		/* in: first index */
	__u32	last;		/* in: last index, inclusive */
	__u32	id;		/* out: id for RXE_CTL_IOC_DROP */
	__u32	nbusy;		/* out: indices of the range now in use */
};

/*
 * Expect an object: the next object of type obj that the process pid
 * creates (with ibv_create_qp, ibv_reg_mr, ibv_alloc_mw or ibv_create_ah)
 * on rxe device ibdev gets index, and for MRs and MWs the key byte key,
 * or the creation fails with EBUSY if index is in use. Reservations do
 * not apply to expected objects.
 *
 * RXE_CTL_F_HOLLOW (MRs only, feature RXE_CTL_FEAT_MR_HOLLOW): the user MR
 * registered with this number pins no pages. The range it is registered
 * on need not be mapped; it counts in the process's pinned memory as
 * usual, and the MR refuses every access (and MR_WRPROTECT, EBUSY) until
 * RXE_CTL_IOC_MR_REPIN gives it the pages of its process. For a restore,
 * where the process's memory is not in place yet when its MRs are
 * registered: pinning other pages first would only cost their allocation.
 *
 * RXE_CTL_F_STOPPED (QPs only, feature RXE_CTL_FEAT_QP_STOPPED): an RC QP
 * created with this number starts stopped, as after RXE_CTL_IOC_QP_STOP:
 * once connected, its responder answers its peer's requests with a PAUSE
 * NAK (of epoch 0 until QP_RESTORE gives it the saved one) and drops them,
 * and it sends nothing, until RXE_CTL_IOC_QP_RESUME. For a restore: a peer
 * that missed its PAUSE retransmits into the new QP before its state is
 * loaded; executed, such a request meets a fresh responder and MRs not in
 * place yet, and moves the QP to the error state. Other QP types ignore it.
 */
struct rxe_ctl_expect {
	__u32	obj;		/* in: RXE_CTL_OBJ_* */
	__u32	flags;		/* in: RXE_CTL_F_PERSIST, _KEY, _HOLLOW, _STOPPED */
	__s32	pid;		/* in: process (thread group), 0 = caller */
	__u32	index;		/* in: index of the object */
	__u32	key;		/* in: key byte 0..255 if RXE_CTL_F_KEY */
	__u32	id;		/* out: id for RXE_CTL_IOC_DROP */
	char	ibdev[RXE_CTL_IBDEV_NAME_MAX];	/* in: "" = any device */
};

/* flags of RXE_CTL_IOC_DROP */
#define RXE_CTL_DROP_F_ALL	(1U << 0)	/* with id 0: of all owners */

/* Drop the entry id, or with id 0 all entries created through this fd. */
struct rxe_ctl_drop {
	__u32	id;		/* in */
	__u32	flags;		/* in: RXE_CTL_DROP_F_ALL */
};

/* flags of RXE_CTL_IOC_DIRTY */
#define RXE_CTL_DIRTY_F_CLEAR	(1U << 0)	/* clear the bits read */

/* pages per RXE_CTL_IOC_DIRTY call with a bitmap, at most */
#define RXE_CTL_DIRTY_MAX_PAGES	(1U << 22)

/*
 * Read (and clear) the dirty log of a user MR: bit i of word w of the
 * bitmap is set if rxe wrote to page first_page + 64 * w + i of the MR
 * since the bit was last cleared. Page 0 is the page that contains the
 * start of the MR, at user address va. The kernel works on whole words
 * of 64 pages; it covers at most RXE_CTL_DIRTY_MAX_PAGES pages per call
 * if bitmap is set, and any number if bitmap is 0 (count or clear only).
 */
struct rxe_ctl_dirty {
	char	ibdev[RXE_CTL_IBDEV_NAME_MAX];	/* in: rxe device name */
	__u32	index;		/* in: MR index, lkey >> 8 */
	__u32	flags;		/* in: RXE_CTL_DIRTY_F_CLEAR */
	__u64	first_page;	/* in: a multiple of 64 */
	__u64	npages;		/* in: pages wanted, out: pages covered */
	__u64	bitmap;		/* in: address of __u64[(npages + 63) / 64] */
	__u64	ndirty;		/* out: dirty pages among those covered */
	__u64	mr_pages;	/* out: pages of the MR */
	__u64	va;		/* out: user address of page 0 */
	__u64	iova;		/* out: iova of page 0 */
	__u32	lkey;		/* out: lkey of the MR */
	__u32	page_shift;	/* out: log2 of the page size */
};

/* RXE_CTL_IOC_QP_* flags */
#define RXE_CTL_QP_F_CQ		(1U << 0)	/* RESTORE: also the CQ rings */
#define RXE_CTL_QP_F_SRQ	(1U << 1)	/* RESTORE: also the SRQ ring */
#define RXE_CTL_QP_F_LOCAL	(1U << 2)	/* RESUME: no RESUME packet */
#define RXE_CTL_QP_F_DROP_FIRST	(1U << 3)	/* RESUME: drop the first one */
#define RXE_CTL_QP_F_LATE_PAUSE	(1U << 4)	/* RESUME: stale PAUSE after ack */
/*
 * DUMP (feature RXE_CTL_FEAT_QP_DUMP_SHARED): leave the CQ rings (send
 * and receive CQ), or the SRQ ring, out of the image. For QPs that share
 * a CQ or SRQ with a QP whose image carries it: RESTORE of such an image
 * with RXE_CTL_QP_F_CQ (or _SRQ) fails with EINVAL.
 */
#define RXE_CTL_QP_F_NO_CQ	(1U << 5)
#define RXE_CTL_QP_F_NO_SRQ	(1U << 6)

/* rxe_ctl_qp.state bits */
#define RXE_CTL_QP_S_STOPPED	(1U << 0)	/* stopped or restored */
#define RXE_CTL_QP_S_RESUMING	(1U << 1)	/* RESUME not acked yet */
#define RXE_CTL_QP_S_PAUSED	(1U << 2)	/* the peer is paused */
#define RXE_CTL_QP_S_REQ_HELD	(1U << 3)	/* restored in RTR, until RTS */

/*
 * RXE_CTL_IOC_QP_STOP, _DUMP, _RESTORE, _RESUME and _QUERY. @buf is only
 * used by DUMP (out) and RESTORE (in). The state image is opaque, see
 * softroce/README.md.
 */
struct rxe_ctl_qp {
	char	ibdev[RXE_CTL_IBDEV_NAME_MAX];	/* in:  0 */
	__u32	qpn;		/* in: 64 */
	__u32	flags;		/* in: 68: RXE_CTL_QP_F_* */
	__u64	buf;		/* in: 72: user address, or 0 */
	__u64	len;		/* in/out: 80: size of buf / of the image */
	__u32	state;		/* out: 88: RXE_CTL_QP_S_* */
	__u32	qp_state;	/* out: 92: enum ib_qp_state */
	__u32	pauses_sent;	/* out: 96: PAUSE NAKs sent */
	__u32	pauses_rcvd;	/* out: 100: PAUSE NAKs taken (not stale) */
	__u32	resumes_sent;	/* out: 104: RESUME packets sent (and dropped) */
	__u32	resumes_rcvd;	/* out: 108: RESUME packets taken */
	__u32	resume_acks;	/* out: 112: RESUME_ACKs received */
	__u32	pauses_stale;	/* out: 116: PAUSE NAKs ignored; in: 0 */
	__u32	pauses_expired;	/* out: 120: pauses ended by the bound; in: 0 */
	__u32	reserved;	/* in: 124: 0 */
};

/*
 * Move a user MR to other pages: the MR gets the pages that back
 * [va, va + length of the MR) in the address space of process pid now,
 * and keeps its index, keys, iova, length, access and dirty log. va must
 * have the same offset within a page as the address the MR was
 * registered at, and pid must be the process that registered it. No QP
 * may use the MR during the call (e.g. the QPs are stopped, or not
 * connected yet), else EBUSY or failed requests. A hollow MR (EXPECT with
 * RXE_CTL_F_HOLLOW) becomes valid here; it may go to any process
 * (feature RXE_CTL_FEAT_ADOPT), as it holds no pages of the one that
 * registered it.
 */
struct rxe_ctl_mr_repin {
	char	ibdev[RXE_CTL_IBDEV_NAME_MAX];	/* in:  0: rxe device name */
	__u32	index;		/* in: 64: MR index, lkey >> 8 */
	__s32	pid;		/* in: 68: process, 0 = caller */
	__u64	va;		/* in: 72: new user address of the MR start */
	__u32	flags;		/* in: 80: 0 */
	__u32	reserved;	/* in: 84: 0 */
	__u64	npages;		/* out: 88: pages pinned */
};

/*
 * RXE_CTL_IOC_MW_BIND binds an unbound MW as a bind work request would,
 * without one: to the MR @mr_index (range @addr, @length, access @access:
 * IB_ACCESS_REMOTE_* bits), and a type 2 MW to the QP @qpn. For a
 * restore: the MW was allocated with its old number and key (EXPECT), and
 * the MR is on its final pages (MR_REPIN refuses an MR that an MW uses).
 * @rkey must be the MW's rkey. EBUSY if the MW is bound already.
 */
struct rxe_ctl_mw_bind {
	char	ibdev[RXE_CTL_IBDEV_NAME_MAX];	/* in:  0: rxe device name */
	__u32	index;		/* in: 64: MW index, rkey >> 8 */
	__u32	rkey;		/* in: 68: the MW's rkey */
	__u32	mr_index;	/* in: 72: MR index, lkey >> 8 */
	__u32	qpn;		/* in: 76: type 2: the QP, type 1: 0 */
	__u64	addr;		/* in: 80 */
	__u64	length;		/* in: 88 */
	__u32	access;		/* in: 96 */
	__u32	flags;		/* in: 100: 0 */
};

/*
 * RXE_CTL_IOC_MR_WRPROTECT takes the write permission away from the page
 * table entries that map the pages of a user MR in the address space of
 * process pid (the MR's), so that soft-dirty tracking can follow them.
 * Linux 6.1's clear_refs ("4" > /proc/PID/clear_refs) leaves the writable
 * entries of pinned pages alone, so every page of an MR stays soft-dirty
 * and every pre-dump carries it again. An entry this call write-protected
 * is cleared by the next clear_refs like any other (which also flushes
 * the TLB), and the process's next write to it faults and sets the bit
 * again; the fault reuses the page in place, as it does for every
 * exclusive anonymous page (and pinned anonymous pages are exclusive), so
 * the MR keeps its pages. Only present, writable 4 KiB entries of
 * exclusive anonymous pages are changed; the TLB is not flushed (a stale
 * writable entry only leaves its page soft-dirty until clear_refs
 * flushes). Pages mapped otherwise (huge pages, other kinds) are counted
 * in skipped and stay as they were: soft-dirty, i.e. always carried.
 *
 * With RXE_CTL_MR_WRPROTECT_F_LOG (feature RXE_CTL_FEAT_MR_WRPROTECT_LOG)
 * the call first moves the MR's dirty log (see RXE_CTL_IOC_DIRTY) into the
 * page tables: each page the log holds loses its bit there and gets its
 * entry marked soft-dirty, without a write to the page, so the next
 * incremental dump carries what rxe wrote to the MR while the process ran.
 * A page rxe writes afterwards is logged again. A page whose entry cannot
 * be marked (not present, huge) keeps its bit. logged counts the marked
 * pages. EOPNOTSUPP on a kernel without soft-dirty tracking.
 */
#define RXE_CTL_MR_WRPROTECT_F_LOG	(1U << 0)

struct rxe_ctl_mr_wrprotect {
	char	ibdev[RXE_CTL_IBDEV_NAME_MAX];	/* in:  0: rxe device name */
	__u32	index;		/* in: 64: MR index, lkey >> 8 */
	__s32	pid;		/* in: 68: the process that holds the MR */
	__u32	flags;		/* in: 72: RXE_CTL_MR_WRPROTECT_F_LOG */
	__u32	logged;		/* in: 76: 0, out: pages moved from the log */
	__u64	npages;		/* out: 80: pages of the MR */
	__u64	protected;	/* out: 88: entries write-protected now */
	__u64	skipped;	/* out: 96: pages left as they were */
};

/*
 * RXE_CTL_IOC_ADOPT (feature RXE_CTL_FEAT_ADOPT): the caller becomes the
 * creator of every user QP, MR, MW and AH that process @pid (in the
 * caller's pid namespace) created, on every rxe device: the status names
 * the caller, as for objects it created itself. For a restore that took
 * over the descriptors of objects another process made for it ahead of
 * time (with EXPECT). EINVAL for the caller itself, ESRCH for no process.
 */
struct rxe_ctl_adopt {
	__s32	pid;		/* in:  0: the process that created them */
	__u32	flags;		/* in:  4: 0 */
	__u32	count;		/* out: 8: objects adopted */
	__u32	reserved;	/* in: 12: 0 */
};

#define RXE_CTL_IOC_MAGIC	0xB8

#define RXE_CTL_IOC_VERSION	_IOR(RXE_CTL_IOC_MAGIC, 0x00, struct rxe_ctl_version)
#define RXE_CTL_IOC_RESERVE	_IOWR(RXE_CTL_IOC_MAGIC, 0x01, struct rxe_ctl_reserve)
#define RXE_CTL_IOC_EXPECT	_IOWR(RXE_CTL_IOC_MAGIC, 0x02, struct rxe_ctl_expect)
#define RXE_CTL_IOC_DROP	_IOW(RXE_CTL_IOC_MAGIC, 0x03, struct rxe_ctl_drop)
#define RXE_CTL_IOC_DIRTY	_IOWR(RXE_CTL_IOC_MAGIC, 0x04, struct rxe_ctl_dirty)
#define RXE_CTL_IOC_QP_STOP	_IOWR(RXE_CTL_IOC_MAGIC, 0x05, struct rxe_ctl_qp)
#define RXE_CTL_IOC_QP_DUMP	_IOWR(RXE_CTL_IOC_MAGIC, 0x06, struct rxe_ctl_qp)
#define RXE_CTL_IOC_QP_RESTORE	_IOWR(RXE_CTL_IOC_MAGIC, 0x07, struct rxe_ctl_qp)
#define RXE_CTL_IOC_QP_RESUME	_IOWR(RXE_CTL_IOC_MAGIC, 0x08, struct rxe_ctl_qp)
#define RXE_CTL_IOC_QP_QUERY	_IOWR(RXE_CTL_IOC_MAGIC, 0x09, struct rxe_ctl_qp)
#define RXE_CTL_IOC_MR_REPIN	_IOWR(RXE_CTL_IOC_MAGIC, 0x0a, struct rxe_ctl_mr_repin)
#define RXE_CTL_IOC_MW_BIND	_IOW(RXE_CTL_IOC_MAGIC, 0x0b, struct rxe_ctl_mw_bind)
#define RXE_CTL_IOC_MR_WRPROTECT _IOWR(RXE_CTL_IOC_MAGIC, 0x0c, struct rxe_ctl_mr_wrprotect)
#define RXE_CTL_IOC_ADOPT	_IOWR(RXE_CTL_IOC_MAGIC, 0x0d, struct rxe_ctl_adopt)

#endif /* RXE_CTL_ABI_H */
