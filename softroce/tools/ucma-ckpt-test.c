// SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB
/*
 * Test of rdmig's rdma_ucm (patch 0023), run as root where it is loaded
 * and an rxe device has the address ADDR:
 *
 *   ucma-ckpt-test -a ADDR [-p PORT] [-d rxe0] [-n ID]
 *
 * On one rdma_cm file it creates IDs with UCMA_CMD_CREATE_ID, binds one to
 * ADDR:PORT with a type of service and makes it listen, sets REUSEADDR on
 * another and resolves a third to ADDR (an event queued, then read), and
 * checks the cm_id and event lines of /proc/self/fdinfo. On a second file
 * RDMIG_UCMA_IOC_CREATE_ID creates an ID at number ID (default: a free one
 * from the pid) with events_reported 5; fdinfo shows it, the same number
 * again is EBUSY (on either file), reserved fields are EINVAL, the
 * ordinary write() commands bind it and make it listen on PORT+1, and
 * UCMA_CMD_DESTROY_ID reports 5 events. A child with fewer capabilities
 * (no CAP_SYS_ADMIN, CAP_CHECKPOINT_RESTORE) gets EPERM from the ioctl but
 * may still write (its credentials are within the opener's); a child set
 * to uid nobody gets EPERM and EACCES. RDMIG_UCMA_IOC_DEV_ALIAS (patch 0024)
 * makes this process's queries of IDs on DEV give another GUID and no
 * device index, on every rdma_cm file, also one opened afterwards, and not
 * a child's; fdinfo shows the alias, the same device again is EEXIST, a
 * ninth alias ENOSPC. With the sysctls
 * net/rdma_ucm/id_min and id_max (patch 0025) set to a block, write()
 * numbers new IDs within it (and from id_min on while id_max is below it);
 * the old values are put back.
 *
 * Connected IDs (patches 0026-0029, ABI version 2), on ONE node over
 * loopback: a listener on ADDR:PORT+10 and two connections to it from this
 * process (RC, fake QP numbers: the CM does not look at the QPs of user
 * IDs). Both ends show cm_conn lines (active, passive, established, comm
 * IDs crosswise); RDMIG_UCMA_IOC_QUEUE_EVENT queues an event that fdinfo
 * shows whole (resp=) and GET_EVENT returns unchanged, and refuses what
 * it must (EINVAL); RDMIG_UCMA_IOC_CONNECT refuses bad requests (EINVAL)
 * and a comm ID that an ID of this host has (EADDRINUSE). The second
 * connection's active file closed without RDMIG_UCMA_IOC_MOVING
 * disconnects its peer. The first's, marked moving, closes without its
 * peer hearing of it; then RDMIG_UCMA_IOC_CREATE_ID, BIND and
 * RDMIG_UCMA_IOC_CONNECT recreate its active ID from the saved cm_conn
 * line in a new file (fdinfo shows the same values), and the passive
 * side's disconnect reaches the recreated ID (RDMA_CM_EVENT_DISCONNECTED):
 * the peer's DREQ found the restored IB CM ID. Its DREP comes back too.
 * Then the passive side of a third connection (with its listener, in a
 * file of its own) moves the same way: recreated idle, it takes its
 * source and device as an accepted ID does, and the active side's
 * disconnect reaches it.
 *
 * Prints the fdinfo it read, PASS/FAIL lines and "N passed, M failed";
 * exits 1 if a check failed, 2 if the test could not run.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <linux/capability.h>
#include <rdma/rdma_user_cm.h>

#include "ucma_ckpt_abi.h"

#define RDMA_CM_PATH "/dev/infiniband/rdma_cm"
#define NOBODY 65534
#define QPT_RC 2		/* enum ib_qp_type */
#define QPT_UD 4
#define CM_EVENT_ADDR_RESOLVED 0	/* enum rdma_cm_event_type (librdmacm) */
#define CM_EVENT_ROUTE_RESOLVED 2
#define CM_EVENT_CONNECT_REQUEST 4
#define CM_EVENT_CONNECT_RESPONSE 5
#define CM_EVENT_ESTABLISHED 9
#define CM_EVENT_DISCONNECTED 10
#define CM_EVENT_DEVICE_REMOVAL 11
#define CM_EVENT_MULTICAST_JOIN 12

static int failures, passes;

#define CHECK(cond, ...)						\
	do {								\
		if (cond) {						\
			passes++;					\
			printf("PASS ");				\
		} else {						\
			failures++;					\
			printf("FAIL ");				\
		}							\
		printf(__VA_ARGS__);					\
		printf("\n");						\
		fflush(stdout);						\
	} while (0)

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* One write() command: the header, then @in; 0 or -errno. */
static int ucma_cmd(int fd, uint32_t cmd, const void *in, size_t in_len,
		    size_t out_len)
{
	char buf[sizeof(struct rdma_ucm_cmd_hdr) + 512];
	struct rdma_ucm_cmd_hdr hdr = {
		.cmd = cmd, .in = in_len, .out = out_len,
	};

	memcpy(buf, &hdr, sizeof(hdr));
	memcpy(buf + sizeof(hdr), in, in_len);
	if (write(fd, buf, sizeof(hdr) + in_len) != (ssize_t)(sizeof(hdr) + in_len))
		return -errno;
	return 0;
}

/* UCMA_CMD_CREATE_ID: the new ID's number in *id; 0 or -errno. */
static int create_id(int fd, uint64_t uid, uint16_t ps, uint8_t qpt,
		     uint32_t *id)
{
	struct rdma_ucm_create_id_resp resp = { 0 };
	struct rdma_ucm_create_id cmd = {
		.uid = uid, .response = (uintptr_t)&resp, .ps = ps,
		.qp_type = qpt,
	};
	int ret = ucma_cmd(fd, RDMA_USER_CM_CMD_CREATE_ID, &cmd, sizeof(cmd),
			   sizeof(resp));

	if (!ret)
		*id = resp.id;
	return ret;
}

static int destroy_id(int fd, uint32_t id, uint32_t *events_reported)
{
	struct rdma_ucm_destroy_id_resp resp = { 0 };
	struct rdma_ucm_destroy_id cmd = {
		.response = (uintptr_t)&resp, .id = id,
	};
	int ret = ucma_cmd(fd, RDMA_USER_CM_CMD_DESTROY_ID, &cmd, sizeof(cmd),
			   sizeof(resp));

	if (!ret && events_reported)
		*events_reported = resp.events_reported;
	return ret;
}

static int bind_id(int fd, uint32_t id, struct in_addr a, uint16_t port)
{
	struct rdma_ucm_bind cmd = { .id = id };
	struct sockaddr_in *sin = (struct sockaddr_in *)&cmd.addr;

	sin->sin_family = AF_INET;
	sin->sin_addr = a;
	sin->sin_port = htons(port);
	cmd.addr_size = sizeof(*sin);
	return ucma_cmd(fd, RDMA_USER_CM_CMD_BIND, &cmd, sizeof(cmd), 0);
}

static int listen_id(int fd, uint32_t id, uint32_t backlog)
{
	struct rdma_ucm_listen cmd = { .id = id, .backlog = backlog };

	return ucma_cmd(fd, RDMA_USER_CM_CMD_LISTEN, &cmd, sizeof(cmd), 0);
}

static int set_option(int fd, uint32_t id, uint32_t name, const void *val,
		      uint32_t len)
{
	struct rdma_ucm_set_option cmd = {
		.optval = (uintptr_t)val, .id = id, .level = RDMA_OPTION_ID,
		.optname = name, .optlen = len,
	};

	return ucma_cmd(fd, RDMA_USER_CM_CMD_SET_OPTION, &cmd, sizeof(cmd), 0);
}

static int resolve_ip(int fd, uint32_t id, struct in_addr dst, uint16_t port)
{
	struct rdma_ucm_resolve_ip cmd = { .id = id, .timeout_ms = 2000 };
	struct sockaddr_in *sin = (struct sockaddr_in *)&cmd.dst_addr;

	sin->sin_family = AF_INET;
	sin->sin_addr = dst;
	sin->sin_port = htons(port);
	return ucma_cmd(fd, RDMA_USER_CM_CMD_RESOLVE_IP, &cmd, sizeof(cmd), 0);
}

static int get_event(int fd, struct rdma_ucm_event_resp *ev)
{
	struct rdma_ucm_get_event cmd = { .response = (uintptr_t)ev };

	return ucma_cmd(fd, RDMA_USER_CM_CMD_GET_EVENT, &cmd, sizeof(cmd),
			sizeof(*ev));
}

static int ckpt_create(int fd, uint32_t id, uint64_t uid, uint16_t ps,
		       uint8_t qpt, uint32_t events, uint8_t reserved0)
{
	struct rdmig_ucma_create_id req = {
		.uid = uid, .id = id, .ps = ps, .qp_type = qpt,
		.reserved0 = reserved0, .events_reported = events,
	};

	return ioctl(fd, RDMIG_UCMA_IOC_CREATE_ID, &req) ? -errno : 0;
}

/* UCMA_CMD_QUERY of the ID's addresses and device: 0 or -errno. */
static int query_addr(int fd, uint32_t id, struct rdma_ucm_query_addr_resp *resp)
{
	struct rdma_ucm_query cmd = {
		.response = (uintptr_t)resp, .id = id,
		.option = RDMA_USER_CM_QUERY_ADDR,
	};

	memset(resp, 0, sizeof(*resp));
	return ucma_cmd(fd, RDMA_USER_CM_CMD_QUERY, &cmd, sizeof(cmd),
			sizeof(*resp));
}

static int dev_alias(int fd, uint64_t guid, uint64_t alias)
{
	struct rdmig_ucma_dev_alias req = {
		.node_guid = guid, .alias_guid = alias,
	};

	return ioctl(fd, RDMIG_UCMA_IOC_DEV_ALIAS, &req) ? -errno : 0;
}

/* The node GUID of device DEV as sysfs shows it, read as one number. */
static uint64_t sysfs_guid(const char *dev)
{
	unsigned int g[4];
	char path[256];
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/node_guid", dev);
	f = fopen(path, "r");
	if (!f)
		die(path);
	n = fscanf(f, "%4x:%4x:%4x:%4x", &g[0], &g[1], &g[2], &g[3]);
	fclose(f);
	if (n != 4)
		die("node_guid");
	return (uint64_t)g[0] << 48 | (uint64_t)g[1] << 32 | (uint64_t)g[2] << 16 | g[3];
}

/* A sysctl of net/rdma_ucm: its value, or -1. */
static long long ucma_sysctl(const char *name, long long set)
{
	char path[128], buf[32];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/net/rdma_ucm/%s", name);
	if (set >= 0) {
		f = fopen(path, "w");
		if (!f)
			return -1;
		fprintf(f, "%lld\n", set);
		if (fclose(f))
			return -1;
	}
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f))
		v = atoll(buf);
	fclose(f);
	return v;
}

/* /proc/self/fdinfo/FD, printed with a label. */
static char *fdinfo(int fd, const char *label)
{
	static char buf[65536];
	char path[64];
	ssize_t n;
	int f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY);
	if (f < 0)
		die(path);
	n = read(f, buf, sizeof(buf) - 1);
	if (n < 0)
		die(path);
	buf[n] = 0;
	close(f);
	printf("--- fdinfo (%s) ---\n%s--- end ---\n", label, buf);
	return buf;
}

/* The line of @text that starts with @prefix (a copy), or "". */
static const char *line_of(const char *text, const char *prefix)
{
	static char line[1024];
	const char *p = text;

	while (p && *p) {
		const char *end = strchr(p, '\n');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (!strncmp(p, prefix, strlen(prefix)) && len < sizeof(line)) {
			memcpy(line, p, len);
			line[len] = 0;
			return line;
		}
		p = end ? end + 1 : NULL;
	}
	return "";
}

static const char *cm_id_line(const char *text, uint32_t id)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "cm_id:\tid=%u ", id);
	return line_of(text, prefix);
}

/* Whether @line has the field @kv ("key=value") as a whole word. */
static int has(const char *line, const char *kv)
{
	size_t n = strlen(kv);
	const char *p = line;

	while ((p = strstr(p, kv))) {
		if ((p == line || p[-1] == ' ' || p[-1] == '\t') &&
		    (p[n] == ' ' || p[n] == 0))
			return 1;
		p += n;
	}
	return 0;
}

/* Checks each of the space-separated fields of @want in @line. */
static void check_fields(const char *what, const char *line, const char *want)
{
	char copy[512], *save, *kv;

	snprintf(copy, sizeof(copy), "%s", want);
	for (kv = strtok_r(copy, " ", &save); kv; kv = strtok_r(NULL, " ", &save))
		CHECK(has(line, kv), "%s: %s in \"%s\"", what, kv, line);
}

/* The value of key @key in @line as a number (base from its prefix), or -1. */
static long long field(const char *line, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), " %s=", key);
	p = strstr(line, k);
	if (!p)
		return -1;
	return strtoll(p + strlen(k), NULL, 0);
}

/* The value of key @key in @line as a string (a copy), or "". */
static const char *field_s(const char *line, const char *key)
{
	static char v[128];
	char k[64];
	const char *p;
	size_t n;

	snprintf(k, sizeof(k), " %s=", key);
	v[0] = 0;
	p = strstr(line, k);
	if (!p)
		return v;
	p += strlen(k);
	n = strcspn(p, " \n");
	if (n >= sizeof(v))
		n = sizeof(v) - 1;
	memcpy(v, p, n);
	v[n] = 0;
	return v;
}

static const char *cm_conn_line(const char *text, uint32_t id)
{
	char prefix[64];

	snprintf(prefix, sizeof(prefix), "cm_conn:\tid=%u ", id);
	return line_of(text, prefix);
}

static int resolve_route(int fd, uint32_t id)
{
	struct rdma_ucm_resolve_route cmd = { .id = id, .timeout_ms = 2000 };

	return ucma_cmd(fd, RDMA_USER_CM_CMD_RESOLVE_ROUTE, &cmd, sizeof(cmd), 0);
}

static void conn_param(struct rdma_ucm_conn_param *p, uint32_t qpn)
{
	memset(p, 0, sizeof(*p));
	p->qp_num = qpn;
	p->responder_resources = 1;
	p->initiator_depth = 1;
	p->retry_count = 7;
	p->rnr_retry_count = 7;
	p->valid = 1;
}

static int connect_id(int fd, uint32_t id, uint32_t qpn)
{
	struct rdma_ucm_connect cmd = { .id = id };

	conn_param(&cmd.conn_param, qpn);
	return ucma_cmd(fd, RDMA_USER_CM_CMD_CONNECT, &cmd, sizeof(cmd), 0);
}

/* UCMA_CMD_ACCEPT: with a QPN for a connection request, 0 for the RTU. */
static int accept_id(int fd, uint32_t id, uint64_t uid, uint32_t qpn)
{
	struct rdma_ucm_accept cmd = { .uid = uid, .id = id };

	if (qpn)
		conn_param(&cmd.conn_param, qpn);
	return ucma_cmd(fd, RDMA_USER_CM_CMD_ACCEPT, &cmd, sizeof(cmd), 0);
}

static int disconnect_id(int fd, uint32_t id)
{
	struct rdma_ucm_disconnect cmd = { .id = id };

	return ucma_cmd(fd, RDMA_USER_CM_CMD_DISCONNECT, &cmd, sizeof(cmd), 0);
}

/* The next event of @fd within @ms: 0, -ETIMEDOUT or -errno. */
static int wait_event(int fd, int ms, struct rdma_ucm_event_resp *ev)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	memset(ev, 0, sizeof(*ev));
	if (poll(&p, 1, ms) != 1)
		return -ETIMEDOUT;
	return get_event(fd, ev);
}

static int queue_event(int fd, uint32_t id, uint32_t reserved,
		       const struct rdma_ucm_event_resp *resp)
{
	struct rdmig_ucma_event req = { .id = id, .reserved = reserved };

	req.resp = *resp;
	return ioctl(fd, RDMIG_UCMA_IOC_QUEUE_EVENT, &req) ? -errno : 0;
}

static int set_moving(int fd, uint32_t moving)
{
	return ioctl(fd, RDMIG_UCMA_IOC_MOVING, &moving) ? -errno : 0;
}

static void hex(char *out, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* "A.B.C.D:P" into @sa (IPv4); 0 or -1. */
static int parse_sin(const char *s, struct __kernel_sockaddr_storage *sa)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;
	const char *colon = strrchr(s, ':');
	char a[64];

	memset(sa, 0, sizeof(*sa));
	if (!colon || (size_t)(colon - s) >= sizeof(a))
		return -1;
	memcpy(a, s, colon - s);
	a[colon - s] = 0;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(atoi(colon + 1));
	return inet_pton(AF_INET, a, &sin->sin_addr) == 1 ? 0 : -1;
}

/*
 * struct rdmig_ucma_conn for ID @id from its cm_id and cm_conn lines, as
 * a restore reads them; 0, or -1 if a value is missing.
 */
static int saved_conn(const char *id_line, const char *conn_line,
		      uint32_t id, struct rdmig_ucma_conn *c)
{
	static const char *const keys[] = {
		"local_comm_id", "remote_comm_id", "remote_qpn", "sq_psn",
		"rq_psn", "service_id", "pkey", "srq", "path_mtu",
		"responder_resources", "initiator_depth", "retry_count",
		"rnr_retry_count", "max_cm_retries",
		"remote_cm_response_timeout", "local_cm_response_timeout",
		"service_timeout", "target_ack_delay", "packet_life_time",
		"hop_limit",
	};
	unsigned int m[6];
	const char *role;
	size_t i;

	memset(c, 0, sizeof(*c));
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (field(conn_line, keys[i]) < 0)
			return -1;
	if (field(id_line, "qpn") < 0)
		return -1;
	if (sscanf(field_s(conn_line, "dmac"), "%x:%x:%x:%x:%x:%x",
		   &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) != 6)
		return -1;
	for (i = 0; i < 6; i++)
		c->dst_mac[i] = m[i];
	role = field_s(conn_line, "role");
	c->role = !strcmp(role, "active") ? RDMIG_UCMA_ROLE_ACTIVE :
		  !strcmp(role, "passive") ? RDMIG_UCMA_ROLE_PASSIVE : 0;
	if (!c->role || parse_sin(field_s(id_line, "src"), &c->src) ||
	    parse_sin(field_s(id_line, "dst"), &c->dst))
		return -1;
	c->id = id;
	c->hop_limit = field(conn_line, "hop_limit");
	c->qpn = field(id_line, "qpn");
	c->local_comm_id = field(conn_line, "local_comm_id");
	c->remote_comm_id = field(conn_line, "remote_comm_id");
	c->remote_qpn = field(conn_line, "remote_qpn");
	c->sq_psn = field(conn_line, "sq_psn");
	c->rq_psn = field(conn_line, "rq_psn");
	c->service_id = field(conn_line, "service_id");
	c->pkey = field(conn_line, "pkey");
	c->srq = field(conn_line, "srq");
	c->path_mtu = field(conn_line, "path_mtu");
	c->responder_resources = field(conn_line, "responder_resources");
	c->initiator_depth = field(conn_line, "initiator_depth");
	c->retry_count = field(conn_line, "retry_count");
	c->rnr_retry_count = field(conn_line, "rnr_retry_count");
	c->max_cm_retries = field(conn_line, "max_cm_retries");
	c->remote_cm_response_timeout = field(conn_line, "remote_cm_response_timeout");
	c->local_cm_response_timeout = field(conn_line, "local_cm_response_timeout");
	c->service_timeout = field(conn_line, "service_timeout");
	c->target_ack_delay = field(conn_line, "target_ack_delay");
	c->packet_life_time = field(conn_line, "packet_life_time");
	return 0;
}

static int ckpt_connect(int fd, const struct rdmig_ucma_conn *c)
{
	return ioctl(fd, RDMIG_UCMA_IOC_CONNECT, c) ? -errno : 0;
}

/*
 * Connect a new ID of @fda to the listener at @addr:@port, whose
 * connection requests come to @fdl, with the fake QPNs @qpa and @qpp;
 * the active ID in *a, the passive one in *p. 0, or -1 (a check failed).
 */
static int connect_pair(int fda, int fdl, struct in_addr addr, unsigned int port,
			uint64_t uid, uint32_t qpa, uint32_t qpp,
			uint32_t *a, uint32_t *p)
{
	struct rdma_ucm_event_resp ev = { 0 };
	int ret;

	ret = create_id(fda, uid, RDMA_PS_TCP, QPT_RC, a);
	if (!ret)
		ret = resolve_ip(fda, *a, addr, port);
	if (!ret)
		ret = wait_event(fda, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_ADDR_RESOLVED,
	      "connection 0x%llx: address resolved (%d, event %u)",
	      (unsigned long long)uid, ret, ev.event);
	if (ret)
		return -1;
	ret = resolve_route(fda, *a);
	if (!ret)
		ret = wait_event(fda, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_ROUTE_RESOLVED,
	      "connection 0x%llx: route resolved (%d, event %u)",
	      (unsigned long long)uid, ret, ev.event);
	if (ret)
		return -1;
	ret = connect_id(fda, *a, qpa);
	if (!ret)
		ret = wait_event(fdl, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_CONNECT_REQUEST,
	      "connection 0x%llx: the listener gets the request (%d, event %u)",
	      (unsigned long long)uid, ret, ev.event);
	if (ret)
		return -1;
	*p = ev.id;
	ret = accept_id(fdl, *p, uid + 1, qpp);
	if (!ret)
		ret = wait_event(fda, 5000, &ev);
	/* a user QP: the active side gets the REP as CONNECT_RESPONSE */
	CHECK(!ret && ev.event == CM_EVENT_CONNECT_RESPONSE,
	      "connection 0x%llx: accepted (%d, event %u)",
	      (unsigned long long)uid, ret, ev.event);
	if (ret)
		return -1;
	ret = accept_id(fda, *a, uid, 0);
	if (!ret)
		ret = wait_event(fdl, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_ESTABLISHED && ev.id == *p,
	      "connection 0x%llx: RTU sent, the passive side is established (%d, event %u)",
	      (unsigned long long)uid, ret, ev.event);
	return ret ? -1 : 0;
}

/*
 * The passive side of a connection moves: its listener's file (which
 * holds it) marked moving and closed, the ID recreated idle in a new file
 * from its saved lines; the active side's disconnect then reaches it.
 */
static void passive_moves(struct in_addr addr, unsigned int port)
{
	char id_line[1024], conn_line[1024];
	struct rdma_ucm_event_resp ev;
	struct rdmig_ucma_conn cp;
	int fdl, fda, fdr, ret;
	uint32_t lid, a, p;
	const char *text, *line;

	fdl = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	fda = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fdl < 0 || fda < 0)
		die(RDMA_CM_PATH);
	if (create_id(fdl, 0xb000, RDMA_PS_TCP, QPT_RC, &lid) ||
	    bind_id(fdl, lid, addr, port) || listen_id(fdl, lid, 4))
		die("listener");
	if (connect_pair(fda, fdl, addr, port, 0xb100, 0x2234, 0x2678, &a, &p))
		return;
	text = fdinfo(fdl, "connection 3, passive side");
	snprintf(id_line, sizeof(id_line), "%s", cm_id_line(text, p));
	snprintf(conn_line, sizeof(conn_line), "%s", cm_conn_line(text, p));
	CHECK(!saved_conn(id_line, conn_line, p, &cp) && cp.role == RDMIG_UCMA_ROLE_PASSIVE,
	      "connection 3: the passive side's values parse");
	ret = set_moving(fdl, 1);
	CHECK(!ret, "its file marked moving (%d)", ret);
	close(fdl);
	ret = wait_event(fda, 2000, &ev);
	CHECK(ret == -ETIMEDOUT,
	      "connection 3: the active side hears nothing within 2 s (%d, event %u)", ret, ev.event);

	fdr = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fdr < 0)
		die(RDMA_CM_PATH);
	ret = ckpt_create(fdr, p, 0xb101, RDMA_PS_TCP, QPT_RC, 1, 0);
	CHECK(!ret, "RDMIG_UCMA_IOC_CREATE_ID %u in a new file (%d)", p, ret);
	ret = ckpt_connect(fdr, &cp);
	CHECK(!ret, "RDMIG_UCMA_IOC_CONNECT of the passive side into the idle ID (%d)", ret);
	text = fdinfo(fdr, "the recreated passive side");
	line = cm_conn_line(text, p);
	CHECK(line[0] && !strcmp(strchr(line, ' '), strchr(conn_line, ' ')),
	      "its cm_conn line is the saved one:\n  %s\n  %s", line, conn_line);
	line = cm_id_line(text, p);
	CHECK(!strcmp(field_s(line, "src"), field_s(id_line, "src")) &&
	      !strcmp(field_s(line, "dev"), field_s(id_line, "dev")) &&
	      field(line, "qpn") == 0x2678,
	      "its source (the listener's port), device and QPN are the saved ones");
	ret = disconnect_id(fda, a);
	CHECK(!ret, "the active side disconnects (%d)", ret);
	ret = wait_event(fdr, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_DISCONNECTED && ev.id == p,
	      "the RECREATED passive ID gets RDMA_CM_EVENT_DISCONNECTED (%d, event %u, id %u)",
	      ret, ev.event, ev.id);
	ret = disconnect_id(fdr, p);
	ret = ret ? ret : wait_event(fda, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_DISCONNECTED && ev.id == a,
	      "its DREP reaches the active side (%d, event %u, id %u)", ret, ev.event, ev.id);
	close(fdr);
	close(fda);
}

/* The connected stage (see the top of the file). @n: a free ID number. */
static void connected_ids(struct in_addr addr, const char *addr_s,
			  unsigned int port, uint32_t n)
{
	static char resp_hex[2 * sizeof(struct rdma_ucm_event_resp) + 1];
	char want[512], a_id_line[1024], a_conn_line[1024], p_conn_line[1024];
	uint32_t lid, a1, p1, a2, p2, events;
	struct rdma_ucm_event_resp ev, q;
	struct rdmig_ucma_conn ca, cp, bad;
	int fdl, fda, fda2, fdr, fdx, ret;
	const char *text, *line;

	port += 10;
	fdl = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	fda = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	fda2 = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fdl < 0 || fda < 0 || fda2 < 0)
		die(RDMA_CM_PATH);
	if (create_id(fdl, 0xa000, RDMA_PS_TCP, QPT_RC, &lid) ||
	    bind_id(fdl, lid, addr, port) || listen_id(fdl, lid, 4))
		die("listener");
	if (connect_pair(fda, fdl, addr, port, 0xa100, 0x1234, 0x5678, &a1, &p1) ||
	    connect_pair(fda2, fdl, addr, port, 0xa200, 0x1236, 0x567a, &a2, &p2))
		return;

	/* 6. Both ends of a connection in fdinfo */
	text = fdinfo(fda, "active side of connection 1");
	snprintf(a_id_line, sizeof(a_id_line), "%s", cm_id_line(text, a1));
	snprintf(a_conn_line, sizeof(a_conn_line), "%s", cm_conn_line(text, a1));
	snprintf(want, sizeof(want), "state=connect dst=%s:%u qpn=%u events_reported=3",
		 addr_s, port, 0x1234);
	check_fields("active ID", a_id_line, want);
	snprintf(want, sizeof(want),
		 "cm_state=established role=active srq=0 remote_qpn=%u responder_resources=1 initiator_depth=1 retry_count=7 rnr_retry_count=7 pkey=0xffff",
		 0x5678);
	check_fields("active ID's connection", a_conn_line, want);
	text = fdinfo(fdl, "listener, passive sides of both connections");
	snprintf(p_conn_line, sizeof(p_conn_line), "%s", cm_conn_line(text, p1));
	snprintf(want, sizeof(want), "cm_state=established role=passive srq=0 remote_qpn=%u",
		 0x1234);
	check_fields("passive ID's connection", p_conn_line, want);
	snprintf(want, sizeof(want), "state=connect qpn=%u events_reported=1", 0x5678);
	check_fields("passive ID", cm_id_line(text, p1), want);
	CHECK(field(a_conn_line, "local_comm_id") == field(p_conn_line, "remote_comm_id") &&
	      field(a_conn_line, "remote_comm_id") == field(p_conn_line, "local_comm_id") &&
	      field(a_conn_line, "local_comm_id") > 0,
	      "comm IDs crosswise (active 0x%llx/0x%llx, passive 0x%llx/0x%llx)",
	      field(a_conn_line, "local_comm_id"), field(a_conn_line, "remote_comm_id"),
	      field(p_conn_line, "local_comm_id"), field(p_conn_line, "remote_comm_id"));
	CHECK(field(a_conn_line, "service_id") == field(p_conn_line, "service_id") &&
	      field(a_conn_line, "sq_psn") == field(p_conn_line, "rq_psn") &&
	      field(a_conn_line, "hop_limit") == field(p_conn_line, "hop_limit") &&
	      !strcmp(field_s(a_conn_line, "dmac"), field_s(p_conn_line, "dmac")),
	      "service ID, PSNs, hop limit and (loopback) MAC agree");
	CHECK(!strstr(text, "moving:"), "no moving line");

	/* 7. Events queued again */
	memset(&q, 0, sizeof(q));
	q.uid = 0xa100;
	q.id = a1;
	q.event = CM_EVENT_ESTABLISHED;
	q.param.conn.qp_num = 0x4321;
	q.param.conn.private_data_len = 3;
	memcpy(q.param.conn.private_data, "abc", 3);
	q.ece.vendor_id = 0x77;
	ret = queue_event(fda, a1, 0, &q);
	CHECK(!ret, "RDMIG_UCMA_IOC_QUEUE_EVENT (%d)", ret);
	text = fdinfo(fda, "active side, an event queued again");
	hex(resp_hex, &q, sizeof(q));
	snprintf(want, sizeof(want), "event:\tid=%u event=%u status=0 resp=", a1,
		 CM_EVENT_ESTABLISHED);
	line = line_of(text, want);
	CHECK(line[0] && !strcmp(line + strlen(want), resp_hex), "fdinfo shows it whole");
	ret = wait_event(fda, 1000, &ev);
	CHECK(!ret && !memcmp(&ev, &q, sizeof(q)), "UCMA_CMD_GET_EVENT returns it unchanged (%d)", ret);
	check_fields("active ID", cm_id_line(fdinfo(fda, "active side, the event read"), a1),
		     "events_reported=4");
	ret = queue_event(fda, a1, 1, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT with reserved != 0: EINVAL (%d)", ret);
	ret = queue_event(fda, a1 + 1, 0, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT whose resp.id is another ID: EINVAL (%d)", ret);
	q.uid = 0xbad;
	ret = queue_event(fda, a1, 0, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT with another uid: EINVAL (%d)", ret);
	q.uid = 0xa100;
	q.event = CM_EVENT_CONNECT_REQUEST;
	ret = queue_event(fda, a1, 0, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT of a connection request: EINVAL (%d)", ret);
	q.event = CM_EVENT_MULTICAST_JOIN;
	ret = queue_event(fda, a1, 0, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT of a multicast join: EINVAL (%d)", ret);
	q.event = CM_EVENT_DEVICE_REMOVAL;
	ret = queue_event(fda, a1, 0, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT of a device removal: EINVAL (%d)", ret);
	q.event = CM_EVENT_ESTABLISHED;
	q.id = p1;
	ret = queue_event(fda, p1, 0, &q);
	CHECK(ret == -EINVAL, "QUEUE_EVENT for another file's ID: EINVAL (%d)", ret);

	/* 8. RDMIG_UCMA_IOC_CONNECT's refusals */
	CHECK(!saved_conn(a_id_line, a_conn_line, a1, &ca), "the active side's values parse");
	text = fdinfo(fdl, "listener");
	CHECK(!saved_conn(cm_id_line(text, p1), p_conn_line, n + 1, &cp),
	      "the passive side's values parse");
	fdx = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fdx < 0)
		die(RDMA_CM_PATH);
	ret = ckpt_create(fdx, n + 1, 0xa300, RDMA_PS_TCP, QPT_RC, 0, 0);
	CHECK(!ret, "an idle ID %u in a new file (%d)", n + 1, ret);
	bad = cp;
	bad.reserved1[0] = 1;
	ret = ckpt_connect(fdx, &bad);
	CHECK(ret == -EINVAL, "CONNECT with reserved1 != 0: EINVAL (%d)", ret);
	bad = cp;
	bad.role = 3;
	ret = ckpt_connect(fdx, &bad);
	CHECK(ret == -EINVAL, "CONNECT with an unknown role: EINVAL (%d)", ret);
	bad = ca;
	bad.id = n + 1;
	ret = ckpt_connect(fdx, &bad);
	CHECK(ret == -EINVAL, "CONNECT of an active side into an unbound ID: EINVAL (%d)", ret);
	ret = ckpt_create(fdx, n + 2, 0xa301, RDMA_PS_UDP, QPT_UD, 0, 0);
	bad = cp;
	bad.id = n + 2;
	ret = ret ? ret : ckpt_connect(fdx, &bad);
	CHECK(ret == -EINVAL, "CONNECT of a UD ID: EINVAL (%d)", ret);
	ret = ckpt_connect(fdx, &cp);
	CHECK(ret == -EADDRINUSE,
	      "CONNECT with the comm ID of a connection that is still here: EADDRINUSE (%d)", ret);
	check_fields("the refused ID", cm_id_line(fdinfo(fdx, "the refused ID"), n + 1),
		     "state=idle dev=- src=- dst=-");
	close(fdx);

	/* 9. Without MOVING, a close disconnects the peer */
	close(fda2);
	ret = wait_event(fdl, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_DISCONNECTED && ev.id == p2,
	      "connection 2: closing the active file disconnects the passive side (%d, event %u, id %u)",
	      ret, ev.event, ev.id);

	/* 10. MOVING: the close does not */
	ret = set_moving(fda, 1);
	CHECK(!ret && strstr(fdinfo(fda, "marked moving"), "\nmoving:\t1\n"),
	      "RDMIG_UCMA_IOC_MOVING 1: fdinfo says moving (%d)", ret);
	ret = set_moving(fda, 0);
	CHECK(!ret && !strstr(fdinfo(fda, "mark cleared"), "moving:"), "MOVING 0 clears it (%d)", ret);
	ret = set_moving(fda, 1);
	CHECK(!ret, "MOVING 1 again (%d)", ret);
	close(fda);
	ret = wait_event(fdl, 2000, &ev);
	CHECK(ret == -ETIMEDOUT,
	      "connection 1: closing the moving file sends the passive side nothing within 2 s (%d, event %u)",
	      ret, ev.event);
	check_fields("passive ID after the close",
		     cm_conn_line(fdinfo(fdl, "listener after the moving close"), p1),
		     "cm_state=established");

	/* 11. The active ID recreated from its saved values */
	fdr = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fdr < 0)
		die(RDMA_CM_PATH);
	ret = ckpt_create(fdr, a1, 0xa100, RDMA_PS_TCP, QPT_RC, 4, 0);
	CHECK(!ret, "RDMIG_UCMA_IOC_CREATE_ID %u in a new file (%d)", a1, ret);
	ret = bind_id(fdr, a1, addr, ntohs(((struct sockaddr_in *)&ca.src)->sin_port));
	CHECK(!ret, "bound to the saved source %s (%d)", field_s(a_id_line, "src"), ret);
	ret = ckpt_connect(fdr, &ca);
	CHECK(!ret, "RDMIG_UCMA_IOC_CONNECT with the saved values (%d)", ret);
	text = fdinfo(fdr, "the recreated active side");
	line = cm_conn_line(text, a1);
	CHECK(line[0] && !strcmp(strchr(line, ' '), strchr(a_conn_line, ' ')),
	      "its cm_conn line is the saved one:\n  %s\n  %s", line, a_conn_line);
	snprintf(want, sizeof(want), "state=connect dst=%s qpn=%u events_reported=4",
		 field_s(a_id_line, "dst"), 0x1234);
	check_fields("recreated ID", cm_id_line(text, a1), want);
	snprintf(want, sizeof(want), "src=%s", field_s(a_id_line, "src"));
	check_fields("recreated ID", cm_id_line(text, a1), want);

	/* 12. The peer's DREQ reaches it */
	ret = disconnect_id(fdl, p1);
	CHECK(!ret, "the passive side disconnects (%d)", ret);
	ret = wait_event(fdr, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_DISCONNECTED && ev.id == a1,
	      "the RECREATED active ID gets RDMA_CM_EVENT_DISCONNECTED (%d, event %u, id %u)",
	      ret, ev.event, ev.id);
	ret = disconnect_id(fdr, a1);
	CHECK(!ret, "it answers with its disconnect (DREP) (%d)", ret);
	ret = wait_event(fdl, 5000, &ev);
	CHECK(!ret && ev.event == CM_EVENT_DISCONNECTED && ev.id == p1,
	      "the passive side gets its DISCONNECTED: the DREP came back (%d, event %u, id %u)",
	      ret, ev.event, ev.id);
	ret = destroy_id(fdr, a1, &events);
	CHECK(!ret && events == 5, "the recreated ID's events: 5 (%d, %u)", ret, events);
	close(fdr);
	close(fdl);

	passive_moves(addr, port + 1);
}


/* Drops CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE from all sets but the bounding one. */
static int drop_ckpt_caps(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	int i;

	if (syscall(SYS_capget, &h, d))
		return -1;
	for (i = 0; i < 2; i++) {
		uint32_t drop = 0;

		if (CAP_SYS_ADMIN / 32 == i)
			drop |= 1u << (CAP_SYS_ADMIN % 32);
		if (CAP_CHECKPOINT_RESTORE / 32 == i)
			drop |= 1u << (CAP_CHECKPOINT_RESTORE % 32);
		d[i].effective &= ~drop;
		d[i].permitted &= ~drop;
		d[i].inheritable &= ~drop;
	}
	return syscall(SYS_capset, &h, d);
}

/* The exit status of child_try(): the ioctl's errno, and what write() did. */
#define WRITE_EACCES 0x40
#define WRITE_OTHER 0x80

/*
 * In a child: after dropping capabilities or becoming nobody, the ioctl
 * and a CREATE_ID write on @fd. Returns the child's exit status: the
 * ioctl's errno (0 if it worked), plus WRITE_EACCES or WRITE_OTHER if
 * the write failed; 255 if the child could not change its credentials.
 */
static int child_try(int fd, int nobody, uint32_t id)
{
	int status, ioctl_err, write_err;
	uint32_t wid;
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (!pid) {
		if (nobody ? setuid(NOBODY) : drop_ckpt_caps())
			_exit(255);
		ioctl_err = -ckpt_create(fd, id, 0x5555, RDMA_PS_TCP, QPT_RC, 0, 0);
		write_err = -create_id(fd, 0x6666, RDMA_PS_TCP, QPT_RC, &wid);
		if (!write_err)
			destroy_id(fd, wid, NULL);
		_exit((ioctl_err & 0x3f) |
		      (!write_err ? 0 : write_err == EACCES ? WRITE_EACCES : WRITE_OTHER));
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		die("waitpid");
	return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
	const char *dev = "rxe0";
	struct in_addr addr = { 0 };
	unsigned int port = 7471;
	uint32_t id_a, id_b, id_c, n = 0, n2, events;
	struct rdma_ucm_event_resp ev;
	char want[512], addr_s[32];
	struct pollfd pfd;
	const char *text, *line;
	int fd1, fd2, opt, ret, one = 1;
	uint8_t tos = 32;	/* RDMA_OPTION_ID_TOS takes a u8 */

	while ((opt = getopt(argc, argv, "a:p:d:n:")) != -1) {
		switch (opt) {
		case 'a':
			if (inet_pton(AF_INET, optarg, &addr) != 1) {
				fprintf(stderr, "bad IPv4 address %s\n", optarg);
				return 2;
			}
			break;
		case 'p': port = strtoul(optarg, NULL, 0); break;
		case 'd': dev = optarg; break;
		case 'n': n = strtoul(optarg, NULL, 0); break;
		default:
			fprintf(stderr, "usage: %s -a ADDR [-p PORT] [-d DEV] [-n ID]\n", argv[0]);
			return 2;
		}
	}
	if (!addr.s_addr) {
		fprintf(stderr, "-a ADDR (an address of the rxe device) is required\n");
		return 2;
	}
	inet_ntop(AF_INET, &addr, addr_s, sizeof(addr_s));
	/* IDs are numbered from 0 across all files: far above what others use */
	if (!n)
		n = 100000 + getpid() % 100000;

	fd1 = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fd1 < 0)
		die(RDMA_CM_PATH);

	/* 1. IDs made by write(), shown in fdinfo */
	if (create_id(fd1, 0x1111, RDMA_PS_TCP, QPT_RC, &id_a) ||
	    create_id(fd1, 0x2222, RDMA_PS_UDP, QPT_UD, &id_b) ||
	    create_id(fd1, 0x4444, RDMA_PS_TCP, QPT_RC, &id_c))
		die("UCMA_CMD_CREATE_ID");
	ret = set_option(fd1, id_a, RDMA_OPTION_ID_TOS, &tos, sizeof(tos));
	CHECK(!ret, "set TOS 32 on ID %u (%d)", id_a, ret);
	ret = bind_id(fd1, id_a, addr, port);
	CHECK(!ret, "bind ID %u to %s:%u (%d)", id_a, addr_s, port, ret);
	ret = listen_id(fd1, id_a, 7);
	CHECK(!ret, "listen on ID %u, backlog 7 (%d)", id_a, ret);
	ret = set_option(fd1, id_b, RDMA_OPTION_ID_REUSEADDR, &one, sizeof(one));
	CHECK(!ret, "set REUSEADDR on ID %u (%d)", id_b, ret);
	ret = resolve_ip(fd1, id_c, addr, port);
	CHECK(!ret, "resolve ID %u to %s:%u (%d)", id_c, addr_s, port, ret);
	pfd = (struct pollfd){ .fd = fd1, .events = POLLIN };
	CHECK(poll(&pfd, 1, 5000) == 1, "an event is queued within 5 s");

	text = fdinfo(fd1, "first file, an event queued");
	CHECK(strstr(text, "rdmig_ucma:\t2\n") != NULL, "rdmig_ucma:\\t2");
	line = cm_id_line(text, id_a);
	snprintf(want, sizeof(want),
		 "uid=0x1111 ps=%u qp_type=%u state=listen dev=%s port=1 src=%s:%u dst=- backlog=7 qpn=0 events_reported=0 reuseaddr=0 afonly=1 tos=32 mc=0",
		 RDMA_PS_TCP, QPT_RC, dev, addr_s, port);
	check_fields("listening ID", line, want);
	line = cm_id_line(text, id_b);
	snprintf(want, sizeof(want),
		 "uid=0x2222 ps=%u qp_type=%u state=idle dev=- port=0 src=- dst=- backlog=0 qpn=0 events_reported=0 reuseaddr=1 afonly=0 tos=-1 mc=0",
		 RDMA_PS_UDP, QPT_UD);
	check_fields("idle ID", line, want);
	line = cm_id_line(text, id_c);
	snprintf(want, sizeof(want),
		 "uid=0x4444 state=addr_resolved dev=%s port=1 dst=%s:%u events_reported=0",
		 dev, addr_s, port);
	check_fields("resolved ID", line, want);
	snprintf(want, sizeof(want), "event:\tid=%u event=%u status=0", id_c,
		 CM_EVENT_ADDR_RESOLVED);
	CHECK(strstr(text, want) != NULL, "\"%s\" queued", want);

	ret = get_event(fd1, &ev);
	CHECK(!ret && ev.id == id_c, "UCMA_CMD_GET_EVENT reads it (%d, id %u)", ret, ev.id);
	text = fdinfo(fd1, "first file, the event read");
	CHECK(!strstr(text, "event:\t"), "no event line after it was read");
	check_fields("resolved ID", cm_id_line(text, id_c), "events_reported=1");

	/* 2. An ID at a given number on a second file */
	fd2 = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
	if (fd2 < 0)
		die(RDMA_CM_PATH);
	ret = ckpt_create(fd2, n, 0x3333, RDMA_PS_TCP, QPT_RC, 5, 0);
	CHECK(!ret, "RDMIG_UCMA_IOC_CREATE_ID at %u (%d)", n, ret);
	text = fdinfo(fd2, "second file, the ID made by the ioctl");
	snprintf(want, sizeof(want),
		 "uid=0x3333 ps=%u qp_type=%u state=idle dev=- src=- dst=- events_reported=5",
		 RDMA_PS_TCP, QPT_RC);
	check_fields("ioctl's ID", cm_id_line(text, n), want);
	CHECK(!cm_id_line(text, id_a)[0], "the second file does not show the first's IDs");
	ret = ckpt_create(fd2, n, 0x3333, RDMA_PS_TCP, QPT_RC, 5, 0);
	CHECK(ret == -EBUSY, "the same number again: EBUSY (%d)", ret);
	ret = ckpt_create(fd1, n, 0x3333, RDMA_PS_TCP, QPT_RC, 5, 0);
	CHECK(ret == -EBUSY, "the same number on the first file: EBUSY (%d)", ret);
	ret = ckpt_create(fd2, id_a, 0x3333, RDMA_PS_TCP, QPT_RC, 0, 0);
	CHECK(ret == -EBUSY, "a number that write() gave: EBUSY (%d)", ret);
	ret = ckpt_create(fd2, n + 1, 0x3333, RDMA_PS_TCP, QPT_RC, 0, 1);
	CHECK(ret == -EINVAL, "reserved0 != 0: EINVAL (%d)", ret);
	ret = ckpt_create(fd2, n + 1, 0x3333, 0x9999, QPT_RC, 0, 0);
	CHECK(ret == -EINVAL, "an unknown port space: EINVAL (%d)", ret);

	ret = bind_id(fd2, n, addr, port + 1);
	CHECK(!ret, "bind ID %u to %s:%u with write() (%d)", n, addr_s, port + 1, ret);
	ret = listen_id(fd2, n, 3);
	CHECK(!ret, "listen on ID %u with write() (%d)", n, ret);
	ret = bind_id(fd1, n, addr, port + 2);
	CHECK(ret == -EINVAL, "the first file cannot use ID %u: EINVAL (%d)", n, ret);
	text = fdinfo(fd2, "second file, the ID bound and listening");
	snprintf(want, sizeof(want),
		 "uid=0x3333 state=listen dev=%s port=1 src=%s:%u backlog=3 events_reported=5",
		 dev, addr_s, port + 1);
	check_fields("ioctl's ID", cm_id_line(text, n), want);

	/* 3. Who may use the ioctl, and write() */
	ret = child_try(fd2, 0, n + 1);
	CHECK(ret == EPERM,
	      "without CAP_SYS_ADMIN and CAP_CHECKPOINT_RESTORE: ioctl EPERM, write() works (exit %d)", ret);
	ret = child_try(fd2, 1, n + 1);
	CHECK(ret == (EPERM | WRITE_EACCES), "as nobody: ioctl EPERM, write() EACCES (exit %d)", ret);
	text = fdinfo(fd2, "second file, after the children");
	CHECK(!cm_id_line(text, n + 1)[0], "no ID %u was made", n + 1);

	/* 4. Devices aliased for a restored process */
	{
		const uint64_t alias = 0x1122334455667788ULL;
		uint64_t own = sysfs_guid(dev);
		struct rdma_ucm_query_addr_resp qa;
		int i;

		ret = query_addr(fd2, n, &qa);
		CHECK(!ret && be64toh(qa.node_guid) == own && qa.ibdev_index != UINT32_MAX,
		      "before an alias, the query gives %s's GUID and index (%d, 0x%llx, %u)",
		      dev, ret, (unsigned long long)be64toh(qa.node_guid), qa.ibdev_index);
		ret = dev_alias(fd2, own, alias);
		CHECK(!ret, "RDMIG_UCMA_IOC_DEV_ALIAS 0x%llx -> 0x%llx (%d)",
		      (unsigned long long)own, (unsigned long long)alias, ret);
		ret = query_addr(fd2, n, &qa);
		CHECK(!ret && be64toh(qa.node_guid) == alias && qa.ibdev_index == UINT32_MAX,
		      "then it gives the alias and no index (%d, 0x%llx, %u)",
		      ret, (unsigned long long)be64toh(qa.node_guid), qa.ibdev_index);
		ret = query_addr(fd1, id_a, &qa);
		CHECK(!ret && be64toh(qa.node_guid) == alias,
		      "and so does the first file: the alias is the process's (%d)", ret);
		{
			int fd3 = open(RDMA_CM_PATH, O_RDWR | O_CLOEXEC);
			uint32_t id_d = 0;
			pid_t pid;
			int st = -1;

			if (fd3 < 0)
				die(RDMA_CM_PATH);
			ret = create_id(fd3, 0x6666, RDMA_PS_TCP, QPT_RC, &id_d);
			if (!ret)
				ret = bind_id(fd3, id_d, addr, port + 3);
			if (!ret)
				ret = query_addr(fd3, id_d, &qa);
			CHECK(!ret && be64toh(qa.node_guid) == alias && qa.ibdev_index == UINT32_MAX,
			      "a file opened after the alias gives it too (%d)", ret);
			pid = fork();
			if (pid == 0) {
				/* a child: not the restored process */
				struct rdma_ucm_query_addr_resp q;

				_exit(query_addr(fd3, id_d, &q) ? 2 : be64toh(q.node_guid) == own ? 0 : 1);
			}
			if (pid > 0)
				waitpid(pid, &st, 0);
			CHECK(pid > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
			      "a child's query gives %s's own GUID (status %d)", dev, st);
			close(fd3);
		}
		text = fdinfo(fd1, "first file, its opener with an alias");
		snprintf(want, sizeof(want), "dev_alias:\tnode_guid=0x%016llx alias=0x%016llx\n",
			 (unsigned long long)own, (unsigned long long)alias);
		CHECK(strstr(text, want) != NULL, "fdinfo shows \"%.*s\"", (int)strlen(want) - 1, want);
		ret = dev_alias(fd2, own, alias + 1);
		CHECK(ret == -EEXIST, "the same device again: EEXIST (%d)", ret);
		ret = dev_alias(fd2, 0, alias);
		CHECK(ret == -EINVAL, "GUID 0: EINVAL (%d)", ret);
		for (i = 1, ret = 0; i < RDMIG_UCMA_MAX_DEV_ALIASES && !ret; i++)
			ret = dev_alias(fd2, own + i, alias + i);
		CHECK(!ret, "%d aliases in all (%d)", RDMIG_UCMA_MAX_DEV_ALIASES, ret);
		ret = dev_alias(fd2, own + i, alias + i);
		CHECK(ret == -ENOSPC, "one more: ENOSPC (%d)", ret);
	}

	ret = destroy_id(fd2, n, &events);
	CHECK(!ret && events == 5, "UCMA_CMD_DESTROY_ID of %u reports 5 events (%d, %u)", n, ret, events);
	ret = ckpt_create(fd2, n, 0x3333, RDMA_PS_UDP, QPT_UD, 0, 0);
	CHECK(!ret, "its number is free again (%d)", ret);
	ret = create_id(fd2, 0x7777, RDMA_PS_TCP, QPT_RC, &n2);
	CHECK(!ret && n2 != n, "write() still numbers new IDs itself (%d, %u)", ret, n2);

	/* 5. Where write() numbers new IDs from */
	{
		long long old_min = ucma_sysctl("id_min", -1), old_max = ucma_sysctl("id_max", -1);
		uint32_t lo = n + 100000, got = 0;

		CHECK(old_min >= 0 && old_max >= 0, "net/rdma_ucm/id_min and id_max exist (%lld, %lld)",
		      old_min, old_max);
		if (old_min >= 0 && old_max >= 0) {
			CHECK(ucma_sysctl("id_min", lo) == lo && ucma_sysctl("id_max", lo + 9) == lo + 9,
			      "set to %u-%u", lo, lo + 9);
			ret = create_id(fd2, 0x8888, RDMA_PS_TCP, QPT_RC, &got);
			CHECK(!ret && got >= lo && got <= lo + 9, "write() numbers within them (%d, %u)", ret, got);
			CHECK(ucma_sysctl("id_max", lo - 1) == lo - 1, "id_max below id_min");
			ret = create_id(fd2, 0x9999, RDMA_PS_TCP, QPT_RC, &got);
			CHECK(!ret && got >= lo, "then from id_min on (%d, %u)", ret, got);
			CHECK(ucma_sysctl("id_max", 1LL << 31) == -1 && ucma_sysctl("id_max", -1) == lo - 1,
			      "id_max above INT_MAX is refused");
			ucma_sysctl("id_max", old_max);
			ucma_sysctl("id_min", old_min);
			CHECK(ucma_sysctl("id_min", -1) == old_min && ucma_sysctl("id_max", -1) == old_max,
			      "put back to %lld-%lld", old_min, old_max);
		}
	}

	close(fd2);
	close(fd1);

	connected_ids(addr, addr_s, port, n + 10);
	printf("%d passed, %d failed\n", passes, failures);
	return failures ? 1 : 0;
}
