/* SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB */
/*
 * rdmig: what a checkpoint/restore tool needs from ib_uverbs to save and
 * recreate the event state of a verbs context.
 *
 * Reading (any process that may read /proc/PID/fdinfo of the file):
 *
 * /proc/PID/fdinfo of a uverbs file lists, after the usual lines, one line
 * per CQ, QP, SRQ and WQ of the file, and of the other objects that carry
 * a user handle:
 *
 *   rdmig_uverbs:	1
 *   rdmig_uverbs_file:	FILE
 *   cq:	handle=H user_handle=0xU channel=ID comp_events_reported=C events_reported=E
 *   qp:	handle=H user_handle=0xU events_reported=E pd=P qpn=N send_cq=S recv_cq=R srq=Q
 *   srq:	handle=H user_handle=0xU events_reported=E pd=P
 *   wq:	handle=H user_handle=0xU events_reported=E pd=P
 *   obj:	type=T handle=H user_handle=0xU [pd=P]
 *
 * FILE names the uverbs file as an opaque token (its hashed address, like
 * ID below); the completion channels and async event files of the file show
 * the same token in a rdmig_uverbs_file line, so a process with several
 * uverbs files can tell which event file belongs to which. N is the QP's
 * number. P, S, R and Q are the handles of the PD, the send and receive CQs and the
 * SRQ the object uses ("-" for none). An "obj" line has pd=P for an MR, MW
 * or AH. pd=? (and no other links) means that the object was locked for a
 * change or its destruction while the file was read: read again.
 *
 * ID is the completion channel of the CQ as an opaque token ("-" for none;
 * it is the hashed address of the channel, the same for the same channel
 * until the next boot). /proc/PID/fdinfo of a completion channel shows its
 * token and its queued events in order, of an async event file its queued
 * events in order:
 *
 *   rdmig_uverbs_comp_channel:	ID
 *   event:	cq=H user_handle=0xU
 *
 *   rdmig_uverbs_async_event_file:	1
 *   event:	type=T element=0xE object=O handle=H      (an object's event)
 *   event:	type=T element=0xE object=0 handle=-      (a device/port event)
 *
 * A reader must ignore lines and keys it does not know.
 *
 * Restoring: RDMIG_UVERBS_IOC_EVENTS on a uverbs file, by a caller with
 * CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) in the initial user namespace.
 */
#ifndef UVERBS_CKPT_ABI_H
#define UVERBS_CKPT_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define RDMIG_UVERBS_ABI_VERSION 1

enum rdmig_uverbs_ev_op {
	/* Set the events_reported (and for a CQ comp_events_reported)
	 * counters of an object: what DESTROY_* reports and libibverbs
	 * compares with the events the process acknowledged.
	 */
	RDMIG_UVERBS_EV_SET_COUNTERS = 1,
	/* Queue one completion event of CQ @handle on its completion
	 * channel, as the CQ's completion handler would.
	 */
	RDMIG_UVERBS_EV_QUEUE_COMP = 2,
	/* Queue one async event @event_type: of object @object/@handle on
	 * the object's async event file, or, with @object 0, a device event
	 * with @element (the port) on the file's default async event file.
	 */
	RDMIG_UVERBS_EV_QUEUE_ASYNC = 3,
};

struct rdmig_uverbs_ev_ctl {
	__u32 op;		/* enum rdmig_uverbs_ev_op */
	__u32 object;		/* UVERBS_OBJECT_CQ, _QP, _SRQ or _WQ */
	__u32 handle;
	__u32 event_type;	/* QUEUE_ASYNC: enum ib_event_type */
	__u64 element;		/* QUEUE_ASYNC of a device event */
	__u32 events_reported;	/* SET_COUNTERS */
	__u32 comp_events_reported; /* SET_COUNTERS of a CQ */
	__u64 reserved;		/* must be 0 */
};

#define RDMIG_UVERBS_IOC_EVENTS _IOW(0xB8, 0x40, struct rdmig_uverbs_ev_ctl)

#endif /* UVERBS_CKPT_ABI_H */
