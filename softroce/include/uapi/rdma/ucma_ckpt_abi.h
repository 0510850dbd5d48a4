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
 *   rdmig_ucma:	2
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
 *
 * Connected IDs (version 2). For each ID in state connect, fdinfo shows,
 * right after its cm_id line, one line (folded here):
 *
 *   cm_conn:	id=ID cm_state=CS role=R dmac=M hop_limit=H srq=Q
 *   	local_comm_id=0xL remote_comm_id=0xR remote_qpn=N sq_psn=P rq_psn=P
 *   	service_id=0xS path_mtu=U responder_resources=A initiator_depth=I
 *   	retry_count=C rnr_retry_count=C max_cm_retries=C
 *   	remote_cm_response_timeout=T local_cm_response_timeout=T
 *   	service_timeout=T target_ack_delay=T packet_life_time=T pkey=0xK
 *
 * CS is the state of the ID's IB CM ID: established, or another state of
 * enum ib_cm_state in lower case without the IB_CM_ prefix (req_sent,
 * rep_rcvd, dreq_sent, ...; "none" without one); for any state but
 * established with no load alternate path exchange under way
 * (lap_state idle or uninit), the line ends after cm_state, the
 * connection is being set up or torn down and cannot be recreated. R is
 * "active" for an ID that connected (rdma_connect()) and holds its bound
 * port, "passive" for one created by a connection request on a listening
 * ID, which holds no port of its own. M is the peer's MAC as the ID's
 * route has it (aa:bb:cc:dd:ee:ff), H the route's hop limit, Q 1 when
 * the QP uses an SRQ. The rest is the IB CM ID's: L and R are the local
 * and remote communication IDs as numbers in host order, N the peer's
 * QP number, S the service ID; the others are the values the connection
 * was set up with (enum ib_mtu, the REQ/REP fields, the address vector's
 * timeout as packet_life_time, the P_Key).
 *
 * Events (version 2) also show their whole response: the event line ends
 * with resp=HEX, the struct rdma_ucm_event_resp that UCMA_CMD_GET_EVENT
 * would copy out for it, as lower-case hex without separators.
 *
 * A file marked moving (below) shows "moving:	1" after its first line.
 *
 * RDMIG_UCMA_IOC_CONNECT (same callers as CREATE_ID) makes ID @id of the
 * file, just created by RDMIG_UCMA_IOC_CREATE_ID with port space TCP or IB
 * and QP type RC, connected without a handshake: as a connection to @dst
 * from @src whose IB CM state is the rest of struct rdmig_ucma_conn (the
 * cm_conn line's values). An active ID must be bound (UCMA_CMD_BIND) to
 * @src, port included, first; a passive one must be idle (it takes @src
 * without a port of its own, as an accepted connection does). The options
 * (UCMA_CMD_SET_OPTION: type of service, ACK timeout) are set before. The
 * route is built as rdma_resolve_route() builds one for RoCE, from the
 * device that holds @src in the caller's network namespace, @dst_mac and
 * @hop_limit; the IB CM ID takes the local communication ID
 * @local_comm_id (EADDRINUSE when another IB CM ID of this host has it)
 * and is established; the ID's state is connect and its QP number @qpn.
 * A later DREQ from the peer, or rdma_disconnect(), then ends the
 * connection as it would have ended at the source. Errors: EINVAL (a
 * field, state, role, port space or QP type the call cannot take),
 * EADDRNOTAVAIL (@src is not an address of this host), ENODEV (no RDMA
 * device for it), EADDRINUSE.
 *
 * RDMIG_UCMA_IOC_MOVING with a nonzero value marks the file moving: from
 * then on, an ID of the file in state connect that is destroyed (by
 * UCMA_CMD_DESTROY_ID, or because the file is closed when its process is
 * killed) forgets its connection without telling the peer (no DREQ),
 * because the connection now lives at the host the process moved to.
 * Zero clears the mark (the process stays here: a failed or rolled back
 * migration) and binds each connected ID of the file, and its IB CM
 * address vector, to the GID entry its source address has now: the
 * address left this host and came back meanwhile, with new entries, and
 * the old ones no longer send, so the ID's disconnect would never leave.
 * The mark is cleared even when that fails for an ID; the call then
 * returns the first ID's error. Same callers as CREATE_ID.
 *
 * RDMIG_UCMA_IOC_QUEUE_EVENT (same callers) queues event @resp again on
 * the file, for ID @id of the file, behind the events already queued:
 * @resp.id must be @id and @resp.uid that ID's user context. Not for
 * RDMA_CM_EVENT_CONNECT_REQUEST (its new ID would have to be recreated
 * with it), the multicast events or RDMA_CM_EVENT_DEVICE_REMOVAL
 * (EINVAL).
 */
#ifndef UCMA_CKPT_ABI_H
#define UCMA_CKPT_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>
#include <linux/socket.h>
#include <rdma/rdma_user_cm.h>

#define RDMIG_UCMA_ABI_VERSION 2

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

#define RDMIG_UCMA_ROLE_ACTIVE	1
#define RDMIG_UCMA_ROLE_PASSIVE	2

struct rdmig_ucma_conn {
	__u32 id;		/* the ID, created by CREATE_ID in this file */
	__u8 role;		/* RDMIG_UCMA_ROLE_* */
	__u8 hop_limit;		/* the route's */
	__u8 dst_mac[6];	/* the peer's MAC */
	__u8 reserved0[4];	/* must be 0 */
	struct __kernel_sockaddr_storage src;	/* address and port */
	struct __kernel_sockaddr_storage dst;	/* the peer's */
	__u32 qpn;		/* the ID's QP */
	__u32 local_comm_id;	/* IB CM, host order */
	__u32 remote_comm_id;
	__u32 remote_qpn;
	__u32 sq_psn;
	__u32 rq_psn;
	__u64 service_id;	/* host order */
	__u16 pkey;
	__u8 srq;		/* 1: the QP uses an SRQ */
	__u8 path_mtu;		/* enum ib_mtu */
	__u8 responder_resources;
	__u8 initiator_depth;
	__u8 retry_count;
	__u8 rnr_retry_count;
	__u8 max_cm_retries;
	__u8 remote_cm_response_timeout;
	__u8 local_cm_response_timeout;
	__u8 service_timeout;
	__u8 target_ack_delay;
	__u8 packet_life_time;
	__u8 reserved1[10];	/* must be 0 */
};

#define RDMIG_UCMA_IOC_CONNECT _IOW(0xB8, 0x52, struct rdmig_ucma_conn)

#define RDMIG_UCMA_IOC_MOVING _IOW(0xB8, 0x53, __u32)

struct rdmig_ucma_event {
	__u32 id;		/* the ID the event is for */
	__u32 reserved;		/* must be 0 */
	struct rdma_ucm_event_resp resp;
};

#define RDMIG_UCMA_IOC_QUEUE_EVENT _IOW(0xB8, 0x54, struct rdmig_ucma_event)

#endif /* UCMA_CKPT_ABI_H */
