/* SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB */
/*
 * rdmig: what a checkpoint/restore tool needs from rdma_ucm (the
 * /dev/infiniband/rdma_cm file of librdmacm) to save the CM IDs of a file
 * and recreate them in a new file with the numbers the process knows.
 *
 * Reading (any process that may read /proc/PID/fdinfo of the file):
 *
 * /proc/PID/fdinfo of an rdma_cm file lists, after the usual lines, one
 * line per CM ID of the file and one per event queued on the file and not
 * yet read, in queue order:
 *
 *   rdmig_ucma:	1
 *   cm_id:	id=ID uid=0xU ps=PS qp_type=T state=S dev=D port=P src=A dst=A
 *   	backlog=B qpn=N events_reported=E reuseaddr=R afonly=F tos=O mc=M
 *   event:	id=ID event=EV status=ST
 *
 * (one cm_id line, folded here). ID is the number write() commands name
 * the ID by (the "id" of UCMA_CMD_CREATE_ID's response), U the user's
 * context (librdmacm's pointer) in hex, PS the port space (enum
 * rdma_ucm_port_space), T the QP type (enum ib_qp_type), S the state, one
 * of idle addr_query addr_resolved route_query route_resolved connect
 * disconnect addr_bound listen device_removal destroying. D is the bound
 * device's name and P its port ("-" and 0 for none). A is an address with
 * its port as %pISpc prints it (1.2.3.4:5, [fe80::1]:5), or "-" for none
 * (also the any address with port 0, the destination of a bound ID that
 * was not resolved) or a family other than AF_INET and AF_INET6. An ID
 * that is being closed (its CM ID destroyed or about to be) shows its
 * id, uid and events_reported, state destroying and empty values for the
 * rest (0, "-", tos=-1). B is the backlog of a
 * listening ID (0 otherwise), N the QP number the ID was connected or
 * accepted with (0 for none), E the events of the ID read so far (what
 * UCMA_CMD_DESTROY_ID reports and librdmacm waits for), R and F the
 * RDMA_OPTION_ID_REUSEADDR and _AFONLY options, O the type of service set
 * with RDMA_OPTION_ID_TOS (-1 when it was never set), M the number of
 * multicast groups the ID joined. EV is the event's enum rdma_cm_event_type
 * and ST its status; the event's ID is the one its struct
 * rdma_ucm_event_resp carries: for RDMA_CM_EVENT_CONNECT_REQUEST the new
 * ID's (whose cm_id line the file shows too), for multicast events the
 * group's number.
 *
 * When the process that opened the file has device aliases (below), the
 * file also shows them, after the first line, one line each:
 *
 *   dev_alias:	node_guid=0xG alias=0xA
 *
 * A reader must ignore lines and keys it does not know.
 *
 * Restoring: RDMIG_UCMA_IOC_CREATE_ID on an rdma_cm file, by a caller with
 * CAP_CHECKPOINT_RESTORE (or CAP_SYS_ADMIN) in the initial user namespace,
 * creates an ID as UCMA_CMD_CREATE_ID does (in the caller's network
 * namespace), but with the number @id, which must be free in the whole
 * system (numbers are global, not per file; EBUSY otherwise) and at most
 * INT_MAX, as @events_reported (EINVAL otherwise), and with
 * @events_reported already counted. The ID is then
 * bound, given its options and made to listen with the ordinary write()
 * commands.
 *
 * RDMIG_UCMA_IOC_DEV_ALIAS, by the same callers, on any rdma_cm file, makes
 * the replies of UCMA_CMD_QUERY_ROUTE and UCMA_CMD_QUERY
 * (RDMA_USER_CM_QUERY_ADDR and _GID) to the calling process (its thread
 * group, on all of its rdma_cm files, also those it opens later) name the
 * device whose node GUID is @node_guid by @alias_guid instead, with no
 * device index (-1). librdmacm finds the ibv_device of an ID by the GUID
 * and index these replies give, among the devices it listed when the
 * process started; a restored process listed those of the host it was
 * checkpointed on, whose GUIDs differ. With no index, librdmacm matches by
 * the GUID alone. GUIDs are numbers as sysfs shows them (node_guid, the
 * groups of four hex digits read as one 64-bit number). An alias cannot be
 * changed (EEXIST), a process has at most RDMIG_UCMA_MAX_DEV_ALIASES
 * (ENOSPC), and neither GUID may be 0 (EINVAL). A process's children do
 * not inherit its aliases.
 *
 * Numbering: CM ID numbers are global on a host, and a restored process
 * keeps its own, which another process of the new host must not hold.
 * write() (UCMA_CMD_CREATE_ID) numbers new IDs from the lowest free number
 * in [id_min, id_max], the sysctls /proc/sys/net/rdma_ucm/id_min and
 * id_max (0 and INT_MAX by default, each at most INT_MAX; while id_max is
 * below id_min, from id_min to INT_MAX). Giving each host of a cluster a
 * block of its own keeps the numbers of processes that may meet apart.
 * RDMIG_UCMA_IOC_CREATE_ID is not bound by them.
 *
 * A write() to an rdma_cm file is also accepted from a task whose
 * credentials hold no privilege the opener's did not (as for ib_uverbs,
 * patch 19): CRIU opens the file in the restored task with its own
 * credentials, before it gives the task its own.
 */
#ifndef UCMA_CKPT_ABI_H
#define UCMA_CKPT_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define RDMIG_UCMA_ABI_VERSION 1

struct rdmig_ucma_create_id {
	__u64 uid;		/* the user's context, as in rdma_ucm_create_id */
	__u32 id;		/* the ID's number in the new file */
	__u16 ps;		/* enum rdma_ucm_port_space */
	__u8 qp_type;		/* enum ib_qp_type: IB_QPT_RC or IB_QPT_UD */
	__u8 reserved0;		/* must be 0 */
	__u32 events_reported;	/* the ID's events read so far */
	__u32 reserved1;	/* must be 0 */
};

#define RDMIG_UCMA_IOC_CREATE_ID _IOW(0xB8, 0x50, struct rdmig_ucma_create_id)

#define RDMIG_UCMA_MAX_DEV_ALIASES 8

struct rdmig_ucma_dev_alias {
	__u64 node_guid;	/* a device of this host, as sysfs shows it */
	__u64 alias_guid;	/* the GUID the file's process knows it by */
};

#define RDMIG_UCMA_IOC_DEV_ALIAS _IOW(0xB8, 0x51, struct rdmig_ucma_dev_alias)

#endif /* UCMA_CKPT_ABI_H */
