// SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB
/*
 * Tests of what a restore needs from the kernel (patches 0007 and 0008),
 * run as root where our rdma_rxe (and for "creds" our ib_uverbs) is loaded:
 *
 *   rxe-restore-test offsets [-d rxe0]
 *	the ring offsets in the qp records of /dev/rxe_ctl match the
 *	mappings librxe made (/proc/self/maps), also for an SRQ, a resized
 *	CQ and the kernel's GSI QP, and sig_all is right
 *   rxe-restore-test repin [-d rxe0] [-g GID_INDEX]
 *	RXE_CTL_IOC_MR_REPIN moves an MR from buffer A to buffer B: RDMA
 *	READ, WRITE, SEND and local access use B afterwards, keys, iova and
 *	dirty log are kept, VmPin is accounted; EBUSY with a bound MW,
 *	ENOENT, EINVAL, ESRCH, EFAULT, ENODEV
 *   rxe-restore-test hollow [-d rxe0] [-g GID_INDEX]
 *	an MR expected with RXE_CTL_F_HOLLOW (patch 0034) registers on an
 *	unmapped range (which fails without it) with its expected key, counts
 *	in VmPin, refuses RDMA READ and MR_WRPROTECT (EBUSY) until MR_REPIN
 *	moves it onto the process's pages, then READ and WRITE reach them;
 *	EINVAL for other objects, VmPin back after deregistration
 *   rxe-restore-test wrprotect [-d rxe0] [-g GID_INDEX]
 *	RXE_CTL_IOC_MR_WRPROTECT (patch 0032): clear_refs leaves the pinned
 *	pages of an MR soft-dirty until they are write-protected, then clears
 *	them; a write sets the bit of that page only, and RDMA READ and WRITE
 *	still reach the process's pages; with F_LOG (patch 0033) the pages
 *	the dirty log holds become soft-dirty without a write and leave the
 *	log, and a later RDMA WRITE is logged again; counts, EINVAL, ENOENT
 *   rxe-restore-test creds [-d rxe0] [-g GID_INDEX] [-s]
 *	ibv_post_send() (librxe rings the doorbell with write()) works
 *	after the process changed its credentials to equivalent ones
 *	(capset, setgroups, PR_SET_SECUREBITS with the same values) or to
 *	ones with fewer capabilities (patch 0019: a container's restored
 *	process), and fails with EACCES after changes that grant more than
 *	the opener had (a capability it did not have, another group). With
 *	-s (stock ib_uverbs) every post after the first change must fail.
 *
 * Prints PASS/FAIL lines and "N passed, M failed"; exits 1 if a check
 * failed, 2 if the test could not run.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/capability.h>
#include <infiniband/verbs.h>

#include "rxe_ctl_abi.h"

#define PAGE		4096
#define MAX_MAPS	256

static int failures, passes;
static const char *ibdev_name;
static int gid_index;

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

static struct ibv_context *open_device(void)
{
	struct ibv_device **list = ibv_get_device_list(NULL);
	struct ibv_context *ctx = NULL;
	int i;

	if (!list)
		die("ibv_get_device_list");
	for (i = 0; list[i]; i++) {
		if (ibdev_name && strcmp(ibdev_name, ibv_get_device_name(list[i])))
			continue;
		ctx = ibv_open_device(list[i]);
		ibdev_name = strdup(ibv_get_device_name(list[i]));
		break;
	}
	ibv_free_device_list(list);
	if (!ctx) {
		fprintf(stderr, "no rdma device %s\n", ibdev_name ? ibdev_name : "");
		exit(2);
	}
	printf("device %s\n", ibdev_name);
	return ctx;
}

/* the whole status text of /dev/rxe_ctl, NUL-terminated */
static char *read_status(void)
{
	size_t len = 0, cap = 65536;
	char *text = malloc(cap);
	int fd = open("/dev/rxe_ctl", O_RDONLY);
	ssize_t n;

	if (fd < 0 || !text)
		die("/dev/rxe_ctl");
	for (;;) {
		if (len + 4096 + 1 > cap) {
			cap *= 2;
			text = realloc(text, cap);
			if (!text)
				die("realloc");
		}
		n = read(fd, text + len, 4096);
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	text[len] = 0;
	return text;
}

/* copy the status line that starts with @prefix into @line, 0 if found */
static int status_line(const char *prefix, char *line, size_t size)
{
	char *text = read_status(), *p = text;
	int found = -1;

	while (p && *p) {
		char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);

		if (!strncmp(p, prefix, strlen(prefix))) {
			snprintf(line, size, "%.*s", (int)n, p);
			found = 0;
			break;
		}
		p = nl ? nl + 1 : NULL;
	}
	free(text);
	return found;
}

/* ----- mappings of the uverbs device in this process ----- */

struct map {
	unsigned long start, end, offset;
};

static int uverbs_maps(struct map *maps, int max)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int n = 0;

	if (!f)
		die("/proc/self/maps");
	while (fgets(line, sizeof(line), f) && n < max) {
		unsigned long s, e, off;

		if (!strstr(line, "/dev/infiniband/uverbs"))
			continue;
		if (sscanf(line, "%lx-%lx %*s %lx", &s, &e, &off) != 3)
			continue;
		maps[n].start = s;
		maps[n].end = e;
		maps[n].offset = off;
		n++;
	}
	fclose(f);
	return n;
}

/* the mappings in @after that are not in @before, into @out */
static int new_maps(const struct map *before, int nb, const struct map *after,
		    int na, struct map *out)
{
	int i, j, n = 0;

	for (i = 0; i < na; i++) {
		for (j = 0; j < nb; j++)
			if (after[i].start == before[j].start &&
			    after[i].offset == before[j].offset)
				break;
		if (j == nb)
			out[n++] = after[i];
	}
	return n;
}

struct snap {
	struct map maps[MAX_MAPS];
	int n;
};

static void snap(struct snap *s)
{
	s->n = uverbs_maps(s->maps, MAX_MAPS);
}

static int since(const struct snap *before, struct map *out)
{
	struct snap now;

	snap(&now);
	return new_maps(before->maps, before->n, now.maps, now.n, out);
}

static void fmt_off(char *buf, size_t size, int have, unsigned long off)
{
	if (have)
		snprintf(buf, size, "0x%lx", off);
	else
		snprintf(buf, size, "-");
}

/* the exact qp record patch 0007 prints */
static void check_qp_line(struct ibv_qp *qp, const char *what, int has_sq,
			  unsigned long sq, int has_rq, unsigned long rq,
			  unsigned long scq, unsigned long rcq, int has_srq,
			  unsigned long srq, int sig_all)
{
	char want[512], line[512], prefix[128], o[5][32];

	fmt_off(o[0], sizeof(o[0]), has_sq, sq);
	fmt_off(o[1], sizeof(o[1]), has_rq, rq);
	fmt_off(o[2], sizeof(o[2]), 1, scq);
	fmt_off(o[3], sizeof(o[3]), 1, rcq);
	fmt_off(o[4], sizeof(o[4]), has_srq, srq);
	snprintf(want, sizeof(want),
		 "qp dev=%s index=%u qpn=%u type=rc state=reset pid=%d sq_off=%s rq_off=%s scq_off=%s rcq_off=%s srq_off=%s sig_all=%d",
		 ibdev_name, qp->qp_num, qp->qp_num, getpid(), o[0], o[1],
		 o[2], o[3], o[4], sig_all);
	snprintf(prefix, sizeof(prefix), "qp dev=%s index=%u ", ibdev_name,
		 qp->qp_num);
	if (status_line(prefix, line, sizeof(line)))
		snprintf(line, sizeof(line), "(no qp record)");
	CHECK(!strcmp(line, want), "%s: status \"%s\" (want \"%s\")", what,
	      line, want);
}

static int test_offsets(void)
{
	struct ibv_context *ctx = open_device();
	struct map m[MAX_MAPS], sqm, rqm;
	unsigned long scq_off, rcq_off, srq_off, old_rcq_off;
	struct ibv_qp_init_attr attr;
	struct ibv_srq_init_attr sattr;
	struct ibv_cq *scq, *rcq;
	struct ibv_qp *qp1, *qp2;
	struct ibv_srq *srq;
	struct ibv_pd *pd;
	struct snap s;
	char line[512], prefix[64];
	int n;

	pd = ibv_alloc_pd(ctx);
	if (!pd)
		die("alloc_pd");

	snap(&s);
	scq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
	if (!scq)
		die("create_cq");
	n = since(&s, m);
	CHECK(n == 1, "send CQ: %d new uverbs mapping(s) (want 1)", n);
	scq_off = m[0].offset;

	snap(&s);
	rcq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	if (!rcq)
		die("create_cq");
	n = since(&s, m);
	CHECK(n == 1 && m[0].offset != scq_off,
	      "receive CQ: %d new mapping(s), offset %#lx (send CQ %#lx)", n,
	      m[0].offset, scq_off);
	rcq_off = m[0].offset;

	/* an RQ much larger than the SQ: the larger new mapping is the RQ */
	memset(&attr, 0, sizeof(attr));
	attr.send_cq = scq;
	attr.recv_cq = rcq;
	attr.qp_type = IBV_QPT_RC;
	attr.sq_sig_all = 1;
	attr.cap.max_send_wr = 4;
	attr.cap.max_recv_wr = 1024;
	attr.cap.max_send_sge = 1;
	attr.cap.max_recv_sge = 1;
	snap(&s);
	qp1 = ibv_create_qp(pd, &attr);
	if (!qp1)
		die("create_qp");
	n = since(&s, m);
	CHECK(n == 2, "QP with its own RQ: %d new mappings (want 2)", n);
	if (n != 2)
		return 1;
	if (m[0].end - m[0].start > m[1].end - m[1].start) {
		rqm = m[0];
		sqm = m[1];
	} else {
		rqm = m[1];
		sqm = m[0];
	}
	check_qp_line(qp1, "QP 1 (two CQs, own RQ, sig_all)", 1, sqm.offset, 1,
		      rqm.offset, scq_off, rcq_off, 0, 0, 1);

	memset(&sattr, 0, sizeof(sattr));
	sattr.attr.max_wr = 64;
	sattr.attr.max_sge = 1;
	snap(&s);
	srq = ibv_create_srq(pd, &sattr);
	if (!srq)
		die("create_srq");
	n = since(&s, m);
	CHECK(n == 1, "SRQ: %d new mapping(s) (want 1)", n);
	srq_off = m[0].offset;

	attr.srq = srq;
	attr.sq_sig_all = 0;
	snap(&s);
	qp2 = ibv_create_qp(pd, &attr);
	if (!qp2)
		die("create_qp on SRQ");
	n = since(&s, m);
	CHECK(n == 1, "QP on the SRQ: %d new mapping(s) (want 1, the SQ)", n);
	check_qp_line(qp2, "QP 2 (on the SRQ, not sig_all)", 1, m[0].offset,
		      0, 0, scq_off, rcq_off, 1, srq_off, 0);

	/* a resize maps the CQ ring at a new offset */
	old_rcq_off = rcq_off;
	snap(&s);
	if (ibv_resize_cq(rcq, 256))
		die("resize_cq");
	n = since(&s, m);
	CHECK(n == 1 && m[0].offset != old_rcq_off,
	      "resized receive CQ: %d new mapping(s) at %#lx (was %#lx)", n,
	      m[0].offset, old_rcq_off);
	rcq_off = m[0].offset;
	check_qp_line(qp1, "QP 1 after the CQ resize", 1, sqm.offset, 1,
		      rqm.offset, scq_off, rcq_off, 0, 0, 1);

	/* the kernel's GSI QP (QPN 1) has no user mappings */
	snprintf(prefix, sizeof(prefix), "qp dev=%s index=", ibdev_name);
	line[0] = 0;
	{
		char *text = read_status(), *p = text, *hit = NULL;

		while ((p = strstr(p, prefix))) {
			char *nl = strchr(p, '\n');

			if (nl)
				*nl = 0;
			if (strstr(p, " qpn=1 type=gsi ")) {
				hit = p;
				break;
			}
			if (!nl)
				break;
			p = nl + 1;
		}
		if (hit)
			snprintf(line, sizeof(line), "%s", hit);
		free(text);
	}
	CHECK(strstr(line, " pid=0 sq_off=- rq_off=- scq_off=- rcq_off=- srq_off=- sig_all=") != NULL,
	      "kernel GSI QP: \"%s\"", line);

	ibv_destroy_qp(qp2);
	ibv_destroy_qp(qp1);
	ibv_destroy_srq(srq);
	ibv_destroy_cq(rcq);
	ibv_destroy_cq(scq);
	ibv_dealloc_pd(pd);
	ibv_close_device(ctx);
	return 0;
}

/* ----- a loopback RC connection ----- */

struct conn {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qa, *qb;
};

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
	struct ibv_qp_init_attr attr = {
		.send_cq = cq,
		.recv_cq = cq,
		.qp_type = IBV_QPT_RC,
		.cap = {
			.max_send_wr = 32,
			.max_recv_wr = 32,
			.max_send_sge = 1,
			.max_recv_sge = 1,
		},
	};
	struct ibv_qp *qp = ibv_create_qp(pd, &attr);

	if (!qp)
		die("create_qp");
	return qp;
}

static void connect_qp(struct ibv_qp *qp, uint32_t dest, union ibv_gid *gid)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.port_num = 1;
	a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
			    IBV_ACCESS_REMOTE_ATOMIC;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			  IBV_QP_PORT | IBV_QP_ACCESS_FLAGS))
		die("modify INIT");

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = dest;
	a.max_dest_rd_atomic = 1;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = *gid;
	a.ah_attr.grh.sgid_index = gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = 1;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		die("modify RTR");

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 7;
	a.rnr_retry = 7;
	a.max_rd_atomic = 1;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			  IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
			  IBV_QP_MAX_QP_RD_ATOMIC))
		die("modify RTS");
}

static void conn_open(struct conn *c)
{
	union ibv_gid gid;

	c->ctx = open_device();
	c->pd = ibv_alloc_pd(c->ctx);
	c->cq = ibv_create_cq(c->ctx, 128, NULL, NULL, 0);
	if (!c->pd || !c->cq)
		die("pd/cq");
	if (ibv_query_gid(c->ctx, 1, gid_index, &gid))
		die("query_gid");
	c->qa = create_qp(c->pd, c->cq);
	c->qb = create_qp(c->pd, c->cq);
	connect_qp(c->qa, c->qb->qp_num, &gid);
	connect_qp(c->qb, c->qa->qp_num, &gid);
}

static void conn_close(struct conn *c)
{
	ibv_destroy_qp(c->qa);
	ibv_destroy_qp(c->qb);
	ibv_destroy_cq(c->cq);
	ibv_dealloc_pd(c->pd);
	ibv_close_device(c->ctx);
}

/* wait for @n successful completions */
static int wait_cq(struct ibv_cq *cq, int n)
{
	struct ibv_wc wc;
	long tries = 0;

	while (n > 0) {
		int got = ibv_poll_cq(cq, 1, &wc);

		if (got < 0)
			die("poll_cq");
		if (!got) {
			if (++tries > 20000000) {
				fprintf(stderr, "completion timeout\n");
				return -1;
			}
			continue;
		}
		if (wc.status != IBV_WC_SUCCESS) {
			fprintf(stderr, "completion error %s (opcode %d)\n",
				ibv_wc_status_str(wc.status), wc.opcode);
			return -1;
		}
		n--;
	}
	return 0;
}

/* post one signaled work request; returns ibv_post_send()'s result */
static int post(struct ibv_qp *qp, enum ibv_wr_opcode op, uint64_t laddr,
		uint32_t len, uint32_t lkey, uint64_t raddr, uint32_t rkey)
{
	struct ibv_sge sge = {
		.addr = laddr,
		.length = len,
		.lkey = lkey,
	};
	struct ibv_send_wr wr = {
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = op,
		.send_flags = IBV_SEND_SIGNALED,
	}, *bad;

	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	return ibv_post_send(qp, &wr, &bad);
}

static void post_recv(struct ibv_qp *qp, uint64_t addr, uint32_t len,
		      uint32_t lkey)
{
	struct ibv_sge sge = { .addr = addr, .length = len, .lkey = lkey };
	struct ibv_recv_wr wr = { .sg_list = &sge, .num_sge = 1 }, *bad;

	if (ibv_post_recv(qp, &wr, &bad))
		die("post_recv");
}

/* ----- MR_REPIN ----- */

static void fill(unsigned char *p, size_t len, unsigned int seed)
{
	size_t i;

	for (i = 0; i < len; i++)
		p[i] = (unsigned char)(seed * 131 + i * 7 + (i >> 8));
}

static long vm_pin_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	if (!f)
		die("/proc/self/status");
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int repin(int ctl, const char *dev, uint32_t index, int32_t pid,
		 uint64_t va, uint32_t flags, uint64_t *npages)
{
	struct rxe_ctl_mr_repin req;

	memset(&req, 0, sizeof(req));
	snprintf(req.ibdev, sizeof(req.ibdev), "%s", dev);
	req.index = index;
	req.pid = pid;
	req.va = va;
	req.flags = flags;
	if (ioctl(ctl, RXE_CTL_IOC_MR_REPIN, &req))
		return -errno;
	if (npages)
		*npages = req.npages;
	return 0;
}

static void mr_record(struct ibv_mr *mr, char *line, size_t size)
{
	char prefix[128];

	snprintf(prefix, sizeof(prefix), "mr dev=%s index=%u ", ibdev_name,
		 mr->lkey >> 8);
	if (status_line(prefix, line, size))
		snprintf(line, size, "(no mr record)");
}

static const char *err_name(int err)
{
	static char buf[32];

	if (!err)
		return "0";
	snprintf(buf, sizeof(buf), "%s", strerrorname_np(-err) ?: "?");
	return buf;
}

/* /dev/rxe_ctl, once a check says whether the driver has all of @features */
static int ctl_with(uint32_t features, const char *names)
{
	struct rxe_ctl_version ver;
	int ctl = open("/dev/rxe_ctl", O_RDWR);

	if (ctl < 0)
		die("/dev/rxe_ctl");
	CHECK(!ioctl(ctl, RXE_CTL_IOC_VERSION, &ver) &&
	      (ver.features & features) == features,
	      "VERSION features %#x has %s", ver.features, names);
	return ctl;
}

/* ----- MR_WRPROTECT ----- */

/* bit 55 of the page's /proc/self/pagemap entry */
static int soft_dirty(const void *addr)
{
	uint64_t e;
	int fd = open("/proc/self/pagemap", O_RDONLY);

	if (fd < 0)
		die("/proc/self/pagemap");
	if (pread(fd, &e, sizeof(e), (uintptr_t)addr / PAGE * sizeof(e)) !=
	    sizeof(e))
		die("pagemap");
	close(fd);
	return (int)((e >> 55) & 1);
}

static void clear_refs(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);

	if (fd < 0 || write(fd, "4", 1) != 1)
		die("/proc/self/clear_refs");
	close(fd);
}

/* soft-dirty bits of pages 0..n-1 of p, as a bit mask */
static unsigned int dirty_mask(const unsigned char *p, int n)
{
	unsigned int m = 0;
	int i;

	for (i = 0; i < n; i++)
		m |= (unsigned int)soft_dirty(p + i * PAGE) << i;
	return m;
}

static int wrprotect(int ctl, const char *dev, uint32_t index, int32_t pid,
		     uint32_t flags, struct rxe_ctl_mr_wrprotect *out)
{
	struct rxe_ctl_mr_wrprotect req;

	memset(&req, 0, sizeof(req));
	snprintf(req.ibdev, sizeof(req.ibdev), "%s", dev);
	req.index = index;
	req.pid = pid;
	req.flags = flags;
	if (ioctl(ctl, RXE_CTL_IOC_MR_WRPROTECT, &req))
		return -errno;
	if (out)
		*out = req;
	return 0;
}

/* the dirty log of MR m (its first 64 pages), without clearing it */
static uint64_t mr_log(int ctl, const struct ibv_mr *m)
{
	struct rxe_ctl_dirty dirty;
	uint64_t bits = 0;

	memset(&dirty, 0, sizeof(dirty));
	snprintf(dirty.ibdev, sizeof(dirty.ibdev), "%s", ibdev_name);
	dirty.index = m->lkey >> 8;
	dirty.npages = 64;
	dirty.bitmap = (uintptr_t)&bits;
	if (ioctl(ctl, RXE_CTL_IOC_DIRTY, &dirty))
		die("DIRTY");
	return bits;
}

static int test_wrprotect(void)
{
	const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			   IBV_ACCESS_REMOTE_READ;
	struct rxe_ctl_mr_wrprotect w;
	unsigned char *a, *l, *other;
	struct ibv_mr *m, *ml;
	struct conn c;
	pid_t child;
	int ctl, ret;

	conn_open(&c);
	ctl = ctl_with(RXE_CTL_FEAT_MR_WRPROTECT | RXE_CTL_FEAT_MR_WRPROTECT_LOG,
		       "RXE_CTL_FEAT_MR_WRPROTECT and _LOG");

	a = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	other = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	l = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || other == MAP_FAILED || l == MAP_FAILED)
		die("mmap");
	/* 4 KiB pages: a huge page would be skipped (and the checks below fail) */
	madvise(a, 4 * PAGE, MADV_NOHUGEPAGE);
	fill(a, 4 * PAGE, 4);
	memset(other, 1, PAGE);
	memset(l, 0, PAGE);
	ml = ibv_reg_mr(c.pd, l, PAGE, access);
	m = ibv_reg_mr(c.pd, a, 4 * PAGE, access);
	if (!ml || !m)
		die("reg_mr");

	/* what Linux 6.1 does without the ioctl */
	clear_refs();
	CHECK(dirty_mask(a, 4) == 0xf && !soft_dirty(other),
	      "clear_refs leaves the pinned MR pages soft-dirty (mask %#x), not others (%d)",
	      dirty_mask(a, 4), soft_dirty(other));

	ret = wrprotect(ctl, ibdev_name, m->lkey >> 8, getpid(), 0, &w);
	CHECK(!ret && w.npages == 4 && w.protected == 4 && w.skipped == 0,
	      "MR_WRPROTECT -> %s: %llu pages, %llu protected, %llu skipped (want 4, 4, 0)",
	      err_name(ret), (unsigned long long)w.npages,
	      (unsigned long long)w.protected, (unsigned long long)w.skipped);
	clear_refs();
	CHECK(dirty_mask(a, 4) == 0, "after MR_WRPROTECT clear_refs cleans them (mask %#x)",
	      dirty_mask(a, 4));

	/* the process writes page 1: that page only is dirty, in place */
	a[PAGE + 7] = 0x5a;
	CHECK(dirty_mask(a, 4) == 0x2, "a write to page 1 makes it (only) soft-dirty (mask %#x)",
	      dirty_mask(a, 4));
	ret = post(c.qa, IBV_WR_RDMA_READ, (uintptr_t)l, 64, ml->lkey,
		   (uintptr_t)a + PAGE, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, a + PAGE, 64) &&
	      l[7] == 0x5a,
	      "RDMA READ of page 1 sees the process's write: the MR kept the page");
	fill(l, 32, 9);
	ret = post(c.qa, IBV_WR_RDMA_WRITE, (uintptr_t)l, 32, ml->lkey,
		   (uintptr_t)a + 2 * PAGE + 100, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(a + 2 * PAGE + 100, l, 32),
	      "RDMA WRITE to page 2 lands in the process's memory");
	CHECK(!soft_dirty(a + 2 * PAGE),
	      "rxe's write leaves page 2 clean to soft-dirty (the dirty log has it)");

	CHECK(mr_log(ctl, m) == 1ull << 2, "the dirty log holds page 2 only (%#llx)",
	      (unsigned long long)mr_log(ctl, m));

	/*
	 * only page 1 is writable again; with F_LOG the log's page 2 becomes
	 * soft-dirty, without a write, and leaves the log
	 */
	ret = wrprotect(ctl, ibdev_name, m->lkey >> 8, getpid(),
			RXE_CTL_MR_WRPROTECT_F_LOG, &w);
	CHECK(!ret && w.protected == 1 && w.skipped == 0 && w.logged == 1,
	      "MR_WRPROTECT with F_LOG -> %s: %llu protected (want 1, page 1), %u logged (want 1, page 2)",
	      err_name(ret), (unsigned long long)w.protected, w.logged);
	CHECK(dirty_mask(a, 4) == 0x6 && mr_log(ctl, m) == 0,
	      "pages 1 (written) and 2 (logged) are soft-dirty (mask %#x), the log is empty (%#llx)",
	      dirty_mask(a, 4), (unsigned long long)mr_log(ctl, m));
	CHECK(!memcmp(a + 2 * PAGE + 100, l, 32) && a[PAGE + 7] == 0x5a,
	      "marking changed no data");
	clear_refs();
	CHECK(dirty_mask(a, 4) == 0, "the next clear_refs cleans both (mask %#x)",
	      dirty_mask(a, 4));
	ret = wrprotect(ctl, ibdev_name, m->lkey >> 8, getpid(),
			RXE_CTL_MR_WRPROTECT_F_LOG, &w);
	CHECK(!ret && w.protected == 0 && w.logged == 0 && dirty_mask(a, 4) == 0,
	      "F_LOG with an empty log -> %s: %llu protected, %u logged, mask %#x (want 0, 0, 0)",
	      err_name(ret), (unsigned long long)w.protected, w.logged,
	      dirty_mask(a, 4));
	/* a page rxe writes after the move is logged again */
	fill(l, 32, 11);
	ret = post(c.qa, IBV_WR_RDMA_WRITE, (uintptr_t)l, 32, ml->lkey,
		   (uintptr_t)a + 3 * PAGE, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && mr_log(ctl, m) == 1ull << 3 &&
	      !soft_dirty(a + 3 * PAGE),
	      "an RDMA WRITE to page 3 afterwards is logged again (%#llx), not soft-dirty",
	      (unsigned long long)mr_log(ctl, m));

	/* errors */
	ret = wrprotect(ctl, ibdev_name, m->lkey >> 8, getpid(), 1u << 1, NULL);
	CHECK(ret == -EINVAL, "MR_WRPROTECT with an unknown flag -> %s (want EINVAL)", err_name(ret));
	ret = wrprotect(ctl, ibdev_name, m->lkey >> 8, 0, 0, NULL);
	CHECK(ret == -EINVAL, "MR_WRPROTECT for pid 0 -> %s (want EINVAL)", err_name(ret));
	ret = wrprotect(ctl, ibdev_name, 500000, getpid(), 0, NULL);
	CHECK(ret == -ENOENT, "MR_WRPROTECT of a missing MR -> %s (want ENOENT)", err_name(ret));
	child = fork();
	if (child < 0)
		die("fork");
	if (!child) {
		pause();
		_exit(0);
	}
	ret = wrprotect(ctl, ibdev_name, m->lkey >> 8, child, 0, NULL);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	CHECK(ret == -EINVAL, "MR_WRPROTECT naming another process -> %s (want EINVAL)",
	      err_name(ret));

	ibv_dereg_mr(m);
	ibv_dereg_mr(ml);
	close(ctl);
	conn_close(&c);
	return 0;
}

/* ----- hollow MRs (EXPECT with RXE_CTL_F_HOLLOW) ----- */

/* EXPECT object @obj at @index with @flags (and @key with RXE_CTL_F_KEY) */
static int expect(int ctl, uint32_t obj, uint32_t index, uint32_t key,
		  uint32_t flags)
{
	struct rxe_ctl_expect e;

	memset(&e, 0, sizeof(e));
	e.obj = obj;
	e.flags = flags;
	e.index = index;
	e.key = key;
	snprintf(e.ibdev, sizeof(e.ibdev), "%s", ibdev_name);
	if (ioctl(ctl, RXE_CTL_IOC_EXPECT, &e))
		return -errno;
	return 0;
}

static int test_hollow(void)
{
	const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			   IBV_ACCESS_REMOTE_READ;
	const size_t off = 100, len = 3 * PAGE;	/* 4 pages */
	struct rxe_ctl_mr_wrprotect w;
	struct ibv_qp *qc, *qd;
	unsigned char *r, *l;
	struct ibv_mr *m, *ml, *probe;
	uint32_t index, key;
	union ibv_gid gid;
	long pin0, pin1;
	struct conn c;
	uint64_t npages = 0;
	int ctl, ret;

	conn_open(&c);
	ctl = ctl_with(RXE_CTL_FEAT_MR_HOLLOW, "RXE_CTL_FEAT_MR_HOLLOW");

	l = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (l == MAP_FAILED || r == MAP_FAILED)
		die("mmap");
	memset(l, 0, PAGE);
	ml = ibv_reg_mr(c.pd, l, PAGE, access);
	/* a number and key to expect: those of an MR registered and gone */
	probe = ibv_reg_mr(c.pd, r, PAGE, access);
	if (!ml || !probe)
		die("reg_mr");
	index = probe->lkey >> 8;
	key = probe->lkey & 0xff;
	ibv_dereg_mr(probe);
	/* the MR's range is not mapped: only a hollow MR can be registered */
	munmap(r, 4 * PAGE);
	probe = ibv_reg_mr(c.pd, r + off, len, access);
	CHECK(!probe, "REG_MR on an unmapped range fails without F_HOLLOW (%s)",
	      probe ? "it did not" : strerror(errno));
	if (probe)
		ibv_dereg_mr(probe);

	ret = expect(ctl, RXE_CTL_OBJ_MR, index, key,
		     RXE_CTL_F_KEY | RXE_CTL_F_HOLLOW);
	CHECK(!ret, "EXPECT MR %u with F_HOLLOW -> %s", index, err_name(ret));
	pin0 = vm_pin_kb();
	m = ibv_reg_mr(c.pd, r + off, len, access);
	pin1 = vm_pin_kb();
	CHECK(m && m->lkey == (index << 8 | key),
	      "with F_HOLLOW it succeeds, with the expected lkey (%#x, want %#x)",
	      m ? m->lkey : 0, index << 8 | key);
	if (!m)
		die("hollow reg_mr");
	CHECK(pin1 - pin0 == 16, "VmPin %ld kB -> %ld kB: counted as 4 pinned pages",
	      pin0, pin1);
	ret = wrprotect(ctl, ibdev_name, index, getpid(), 0, &w);
	CHECK(ret == -EBUSY, "MR_WRPROTECT of a hollow MR -> %s (want EBUSY)",
	      err_name(ret));
	ret = post(c.qa, IBV_WR_RDMA_READ, (uintptr_t)l, 64, ml->lkey,
		   (uintptr_t)r + off, m->rkey);
	CHECK(!ret && wait_cq(c.cq, 1) == -1,
	      "RDMA READ of the hollow MR fails (the completion error above)");

	/* the process's memory arrives, the MR moves onto it */
	r = mmap(r, 4 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (r == MAP_FAILED)
		die("mmap fixed");
	fill(r, 4 * PAGE, 5);
	ret = repin(ctl, ibdev_name, index, getpid(), (uintptr_t)r + off, 0,
		    &npages);
	CHECK(!ret && npages == 4 && vm_pin_kb() == pin1,
	      "MR_REPIN onto the process's pages -> %s, %llu pages, VmPin %ld kB (want 0, 4, %ld)",
	      err_name(ret), (unsigned long long)npages, vm_pin_kb(), pin1);

	/* new QPs in the same PD: the first pair is in the error state */
	if (ibv_query_gid(c.ctx, 1, gid_index, &gid))
		die("query_gid");
	qc = create_qp(c.pd, c.cq);
	qd = create_qp(c.pd, c.cq);
	connect_qp(qc, qd->qp_num, &gid);
	connect_qp(qd, qc->qp_num, &gid);
	/* across the boundary of pages 1 and 2: every page's place in the map */
	ret = post(qc, IBV_WR_RDMA_READ, (uintptr_t)l, 256, ml->lkey,
		   (uintptr_t)r + 2 * PAGE - 128, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, r + 2 * PAGE - 128, 256),
	      "RDMA READ now reads the process's pages, across a page boundary");
	fill(l, 64, 6);
	ret = post(qc, IBV_WR_RDMA_WRITE, (uintptr_t)l, 64, ml->lkey,
		   (uintptr_t)r + off + 2 * PAGE, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, r + off + 2 * PAGE, 64),
	      "RDMA WRITE lands in them");
	ret = wrprotect(ctl, ibdev_name, index, getpid(), 0, &w);
	CHECK(!ret && w.npages == 4, "MR_WRPROTECT takes it now -> %s, %llu pages",
	      err_name(ret), (unsigned long long)w.npages);

	ret = expect(ctl, RXE_CTL_OBJ_QP, 100, 0, RXE_CTL_F_HOLLOW);
	CHECK(ret == -EINVAL, "EXPECT of a QP with F_HOLLOW -> %s (want EINVAL)",
	      err_name(ret));
	ibv_dereg_mr(m);
	CHECK(vm_pin_kb() == pin0, "deregistered: VmPin %ld kB (want %ld)",
	      vm_pin_kb(), pin0);

	ibv_destroy_qp(qc);
	ibv_destroy_qp(qd);
	ibv_dereg_mr(ml);
	close(ctl);
	conn_close(&c);
	return 0;
}

/* ----- EXPECT with F_STOPPED ----- */

/* QP_QUERY (or another QP_* command) of QP @qpn into @q; 0 or -errno */
static int qp_cmd(int ctl, unsigned long cmd, uint32_t qpn, uint32_t flags,
		  struct rxe_ctl_qp *q)
{
	memset(q, 0, sizeof(*q));
	snprintf(q->ibdev, sizeof(q->ibdev), "%s", ibdev_name);
	q->qpn = qpn;
	q->flags = flags;
	if (ioctl(ctl, cmd, q))
		return -errno;
	return 0;
}

static int test_stopped(void)
{
	const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
	unsigned char *r, *l, zero[64];
	struct ibv_mr *mr, *ml;
	struct ibv_qp *probe, *qs, *qp;
	struct ibv_qp_attr attr;
	struct ibv_qp_init_attr init;
	struct rxe_ctl_qp q;
	union ibv_gid gid;
	struct conn c;
	uint32_t qpn;
	int ctl, ret, i;

	conn_open(&c);
	ctl = ctl_with(RXE_CTL_FEAT_QP_STOPPED, "RXE_CTL_FEAT_QP_STOPPED");
	if (ibv_query_gid(c.ctx, 1, gid_index, &gid))
		die("query_gid");

	ret = expect(ctl, RXE_CTL_OBJ_MR, 100, 0, RXE_CTL_F_STOPPED);
	CHECK(ret == -EINVAL, "EXPECT of an MR with F_STOPPED -> %s (want EINVAL)",
	      err_name(ret));

	/* a number to expect: that of a QP created and gone */
	probe = create_qp(c.pd, c.cq);
	qpn = probe->qp_num;
	ibv_destroy_qp(probe);
	ret = expect(ctl, RXE_CTL_OBJ_QP, qpn, 0, RXE_CTL_F_STOPPED);
	CHECK(!ret, "EXPECT QP %u with F_STOPPED -> %s", qpn, err_name(ret));
	qs = create_qp(c.pd, c.cq);
	qp = create_qp(c.pd, c.cq);
	CHECK(qs->qp_num == qpn, "the QP gets number %u (want %u)", qs->qp_num,
	      qpn);
	connect_qp(qs, qp->qp_num, &gid);
	connect_qp(qp, qs->qp_num, &gid);
	ret = qp_cmd(ctl, RXE_CTL_IOC_QP_QUERY, qs->qp_num, 0, &q);
	CHECK(!ret && (q.state & RXE_CTL_QP_S_STOPPED),
	      "connected, it is stopped (QP_QUERY -> %s, state %#x)",
	      err_name(ret), q.state);

	l = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (l == MAP_FAILED || r == MAP_FAILED)
		die("mmap");
	memset(r, 0, PAGE);
	memset(zero, 0, sizeof(zero));
	fill(l, 64, 9);
	ml = ibv_reg_mr(c.pd, l, PAGE, access);
	mr = ibv_reg_mr(c.pd, r, PAGE, access);
	if (!ml || !mr)
		die("reg_mr");

	/* its peer writes to it: an invalid rkey, executed, would be an error */
	ret = post(qp, IBV_WR_RDMA_WRITE, (uintptr_t)l, 64, ml->lkey,
		   (uintptr_t)r, mr->rkey ^ 0x1);
	if (!ret)
		ret = post(qp, IBV_WR_RDMA_WRITE, (uintptr_t)l, 64, ml->lkey,
			   (uintptr_t)r, mr->rkey);
	CHECK(!ret, "the peer posts two RDMA WRITEs to it (a bad rkey first)");
	for (i = 0; i < 200; i++) {
		if (qp_cmd(ctl, RXE_CTL_IOC_QP_QUERY, qs->qp_num, 0, &q))
			break;
		if (q.pauses_sent)
			break;
		usleep(10000);
	}
	CHECK(q.pauses_sent > 0 && (q.state & RXE_CTL_QP_S_STOPPED),
	      "it answers them with PAUSE (%u sent) and stays stopped",
	      q.pauses_sent);
	CHECK(!memcmp(r, zero, sizeof(zero)), "nothing was written");
	memset(&attr, 0, sizeof(attr));
	ret = ibv_query_qp(qs, &attr, IBV_QP_STATE, &init);
	CHECK(!ret && attr.qp_state == IBV_QPS_RTS,
	      "it stays in RTS (state %d, want %d): the bad rkey did not move it to the error state",
	      attr.qp_state, IBV_QPS_RTS);

	ret = qp_cmd(ctl, RXE_CTL_IOC_QP_RESUME, qs->qp_num, RXE_CTL_QP_F_LOCAL,
		     &q);
	CHECK(!ret, "QP_RESUME -> %s", err_name(ret));
	ret = qp_cmd(ctl, RXE_CTL_IOC_QP_QUERY, qs->qp_num, 0, &q);
	CHECK(!ret && !(q.state & RXE_CTL_QP_S_STOPPED),
	      "then it is not stopped (state %#x)", q.state);

	/* a QP created without the flag (the expectation was used) is not */
	probe = create_qp(c.pd, c.cq);
	connect_qp(probe, qp->qp_num, &gid);
	ret = qp_cmd(ctl, RXE_CTL_IOC_QP_QUERY, probe->qp_num, 0, &q);
	CHECK(!ret && !(q.state & RXE_CTL_QP_S_STOPPED),
	      "the next QP is not stopped (state %#x)", q.state);

	ibv_destroy_qp(probe);
	ibv_destroy_qp(qs);
	ibv_destroy_qp(qp);
	ibv_dereg_mr(mr);
	ibv_dereg_mr(ml);
	munmap(l, PAGE);
	munmap(r, PAGE);
	close(ctl);
	conn_close(&c);
	return 0;
}

static int test_repin(void)
{
	const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			   IBV_ACCESS_REMOTE_READ | IBV_ACCESS_MW_BIND;
	const size_t off = 100, len = 3 * PAGE;	/* 4 pages */
	unsigned char *a, *b, *l, *hole, want[256];
	struct rxe_ctl_dirty dirty;
	char before[512], after[512];
	struct ibv_mr *m, *ml;
	struct ibv_mw *mw;
	struct ibv_mw_bind bind;
	uint64_t iova, npages = 0, bits;
	long pin0, pin1, pin2, pin3;
	struct conn c;
	pid_t child;
	int ctl, ret;

	conn_open(&c);
	ctl = ctl_with(RXE_CTL_FEAT_MR_REPIN, "RXE_CTL_FEAT_MR_REPIN");

	a = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	l = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED || l == MAP_FAILED)
		die("mmap");
	fill(a, 8 * PAGE, 1);
	fill(b, 8 * PAGE, 2);
	memset(l, 0, 4 * PAGE);

	ml = ibv_reg_mr(c.pd, l, 4 * PAGE, IBV_ACCESS_LOCAL_WRITE |
			IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
	if (!ml)
		die("reg_mr");
	pin0 = vm_pin_kb();
	m = ibv_reg_mr(c.pd, a + off, len, access);
	if (!m)
		die("reg_mr");
	pin1 = vm_pin_kb();
	iova = (uintptr_t)(a + off);
	CHECK(pin1 - pin0 == 16, "VmPin %ld kB -> %ld kB after registering 4 pages",
	      pin0, pin1);

	/* before: the MR reads A */
	ret = post(c.qa, IBV_WR_RDMA_READ, (uintptr_t)l, 64, ml->lkey,
		   iova + 10, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, a + off + 10, 64),
	      "RDMA READ from the MR reads buffer A");

	/* a write before the move, its dirty bit must survive */
	fill(l + PAGE, 8, 3);
	ret = post(c.qa, IBV_WR_RDMA_WRITE, (uintptr_t)l + PAGE, 8, ml->lkey,
		   iova + 2 * PAGE - off + 5, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(a + 2 * PAGE + 5, l + PAGE, 8),
	      "RDMA WRITE to MR page 2 lands in A");

	/* a bound MW holds the MR: EBUSY, and the MR stays usable */
	mw = ibv_alloc_mw(c.pd, IBV_MW_TYPE_1);
	if (!mw)
		die("alloc_mw");
	memset(&bind, 0, sizeof(bind));
	bind.wr_id = 7;
	bind.send_flags = IBV_SEND_SIGNALED;
	bind.bind_info.mr = m;
	bind.bind_info.addr = iova;
	bind.bind_info.length = PAGE;
	bind.bind_info.mw_access_flags = IBV_ACCESS_REMOTE_READ;
	ret = ibv_bind_mw(c.qa, mw, &bind);
	CHECK(!ret && !wait_cq(c.cq, 1), "bind a type 1 MW to the MR");
	ret = repin(ctl, ibdev_name, m->lkey >> 8, 0, (uintptr_t)(b + off), 0,
		    NULL);
	CHECK(ret == -EBUSY, "MR_REPIN with a bound MW -> %s (want EBUSY)",
	      err_name(ret));
	memset(l, 0, 64);
	ret = post(c.qa, IBV_WR_RDMA_READ, (uintptr_t)l, 64, ml->lkey,
		   iova + 10, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, a + off + 10, 64),
	      "after EBUSY the MR still works and reads A");
	ibv_dealloc_mw(mw);

	/* errors */
	ret = repin(ctl, ibdev_name, 500000, 0, (uintptr_t)(b + off), 0, NULL);
	CHECK(ret == -ENOENT, "MR_REPIN of a missing MR -> %s (want ENOENT)",
	      err_name(ret));
	ret = repin(ctl, "nosuchdev", m->lkey >> 8, 0, (uintptr_t)(b + off), 0,
		    NULL);
	CHECK(ret == -ENODEV, "MR_REPIN on a missing device -> %s (want ENODEV)",
	      err_name(ret));
	ret = repin(ctl, ibdev_name, m->lkey >> 8, 0, (uintptr_t)(b + off + 1),
		    0, NULL);
	CHECK(ret == -EINVAL, "MR_REPIN to another offset in the page -> %s (want EINVAL)",
	      err_name(ret));
	ret = repin(ctl, ibdev_name, m->lkey >> 8, 0, (uintptr_t)(b + off), 1,
		    NULL);
	CHECK(ret == -EINVAL, "MR_REPIN with flags -> %s (want EINVAL)",
	      err_name(ret));
	ret = repin(ctl, ibdev_name, m->lkey >> 8, -1, (uintptr_t)(b + off), 0,
		    NULL);
	CHECK(ret == -ESRCH, "MR_REPIN for pid -1 -> %s (want ESRCH)",
	      err_name(ret));
	ret = repin(ctl, ibdev_name, m->lkey >> 8, 0x3fffffff,
		    (uintptr_t)(b + off), 0, NULL);
	CHECK(ret == -ESRCH, "MR_REPIN for a missing pid -> %s (want ESRCH)",
	      err_name(ret));
	/* an address range that was just unmapped */
	hole = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (hole == MAP_FAILED || munmap(hole, 8 * PAGE))
		die("mmap");
	ret = repin(ctl, ibdev_name, m->lkey >> 8, 0, (uintptr_t)(hole + off),
		    0, NULL);
	CHECK(ret == -EFAULT, "MR_REPIN to unmapped pages -> %s (want EFAULT)",
	      err_name(ret));
	child = fork();
	if (child < 0)
		die("fork");
	if (!child) {
		pause();
		_exit(0);
	}
	ret = repin(ctl, ibdev_name, m->lkey >> 8, child, (uintptr_t)(b + off),
		    0, NULL);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	CHECK(ret == -EINVAL, "MR_REPIN to pages of another process -> %s (want EINVAL)",
	      err_name(ret));
	CHECK(vm_pin_kb() == pin1, "failed attempts leave VmPin at %ld kB (now %ld)",
	      pin1, vm_pin_kb());

	/* the move */
	mr_record(m, before, sizeof(before));
	ret = repin(ctl, ibdev_name, m->lkey >> 8, 0, (uintptr_t)(b + off), 0,
		    &npages);
	CHECK(!ret && npages == 4, "MR_REPIN to buffer B -> %s, %llu pages",
	      err_name(ret), (unsigned long long)npages);
	pin2 = vm_pin_kb();
	CHECK(pin2 == pin1, "VmPin after the move %ld kB (want %ld: old pages released)",
	      pin2, pin1);
	mr_record(m, after, sizeof(after));
	CHECK(!strcmp(before, after) && strstr(after, " pages=4 dirty=1"),
	      "status record unchanged (keys, iova, length, dirty=1): \"%s\"",
	      after);

	memset(&dirty, 0, sizeof(dirty));
	snprintf(dirty.ibdev, sizeof(dirty.ibdev), "%s", ibdev_name);
	dirty.index = m->lkey >> 8;
	dirty.npages = 64;
	dirty.bitmap = (uintptr_t)&bits;
	ret = ioctl(ctl, RXE_CTL_IOC_DIRTY, &dirty);
	CHECK(!ret && bits == 1ull << 2 && dirty.va == (uintptr_t)b &&
	      dirty.iova == (iova & ~(uint64_t)(PAGE - 1)) &&
	      dirty.lkey == m->lkey && dirty.mr_pages == 4,
	      "DIRTY after the move: bits %#llx va %#llx (B %p) iova %#llx lkey %#x",
	      (unsigned long long)bits, (unsigned long long)dirty.va, b,
	      (unsigned long long)dirty.iova, dirty.lkey);

	/* remote READ now reads B */
	memset(l, 0, 64);
	ret = post(c.qa, IBV_WR_RDMA_READ, (uintptr_t)l, 64, ml->lkey,
		   iova + 10, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, b + off + 10, 64),
	      "RDMA READ with the old rkey %#x reads buffer B", m->rkey);

	/* remote WRITE lands in B, A stays */
	fill(l + PAGE, 32, 4);
	memcpy(want, a + off + PAGE, 32);
	ret = post(c.qa, IBV_WR_RDMA_WRITE, (uintptr_t)l + PAGE, 32, ml->lkey,
		   iova + PAGE, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(b + off + PAGE, l + PAGE, 32) &&
	      !memcmp(a + off + PAGE, want, 32),
	      "RDMA WRITE lands in B, A unchanged");

	/* SEND into a receive buffer of the MR lands in B */
	post_recv(c.qb, iova + 2 * PAGE, 48, m->lkey);
	fill(l + 2 * PAGE, 48, 5);
	ret = post(c.qa, IBV_WR_SEND, (uintptr_t)l + 2 * PAGE, 48, ml->lkey, 0,
		   0);
	CHECK(!ret && !wait_cq(c.cq, 2) &&
	      !memcmp(b + off + 2 * PAGE, l + 2 * PAGE, 48),
	      "SEND into a receive buffer of the MR (old lkey) lands in B");

	/* the MR as a local source reads B */
	memset(l + 3 * PAGE, 0, 64);
	ret = post(c.qa, IBV_WR_RDMA_WRITE, iova + 3 * PAGE - 64, 64, m->lkey,
		   (uintptr_t)l + 3 * PAGE, ml->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) &&
	      !memcmp(l + 3 * PAGE, b + off + 3 * PAGE - 64, 64),
	      "RDMA WRITE from the MR (old lkey) sends the data of B");

	/* and back to A, naming the process explicitly */
	ret = repin(ctl, ibdev_name, m->lkey >> 8, getpid(),
		    (uintptr_t)(a + off), 0, &npages);
	memset(l, 0, 64);
	if (!ret)
		ret = post(c.qa, IBV_WR_RDMA_READ, (uintptr_t)l, 64, ml->lkey,
			   iova + 2 * PAGE - off, m->rkey);
	CHECK(!ret && !wait_cq(c.cq, 1) && !memcmp(l, a + 2 * PAGE, 64),
	      "MR_REPIN back to A with pid = getpid(): READ reads A again");
	pin3 = vm_pin_kb();
	CHECK(pin3 == pin1, "VmPin after moving back %ld kB (want %ld)", pin3,
	      pin1);

	ibv_dereg_mr(m);
	CHECK(vm_pin_kb() == pin0, "VmPin after deregistering %ld kB (want %ld)",
	      vm_pin_kb(), pin0);

	ibv_dereg_mr(ml);
	close(ctl);
	conn_close(&c);
	return 0;
}

/* ----- uverbs write() after credential changes ----- */

static struct __user_cap_header_struct cap_hdr = {
	.version = _LINUX_CAPABILITY_VERSION_3,
};

static void caps_get(struct __user_cap_data_struct d[2])
{
	if (syscall(SYS_capget, &cap_hdr, d))
		die("capget");
}

static void caps_set(struct __user_cap_data_struct d[2])
{
	if (syscall(SYS_capset, &cap_hdr, d))
		die("capset");
}

struct creds_ctx {
	struct conn c;
	struct ibv_mr *mr;
	char *buf;
	int pending;	/* posted work requests without completion */
	int stock;	/* expect stock behaviour */
	int changed;	/* credentials changed since open */
};

/* post an RDMA WRITE; on success wait for everything posted so far */
static int creds_post(struct creds_ctx *x)
{
	int ret = post(x->c.qa, IBV_WR_RDMA_WRITE, (uintptr_t)x->buf, 64,
		       x->mr->lkey, (uintptr_t)x->buf + PAGE, x->mr->rkey);

	/* librxe queues the WQE before it rings the doorbell */
	x->pending++;
	if (ret)
		return ret;
	if (wait_cq(x->c.cq, x->pending))
		return -1;
	x->pending = 0;
	return 0;
}

static void creds_expect(struct creds_ctx *x, int allowed, const char *what)
{
	int ret, want_ok = allowed && !(x->stock && x->changed);

	ret = creds_post(x);
	/* librxe returns errno of the failed write(), or -1 with errno set */
	if (ret == -1 && errno == EACCES)
		ret = EACCES;
	CHECK(want_ok ? ret == 0 : ret == EACCES,
	      "%s: ibv_post_send -> %s (want %s)", what,
	      ret ? (ret > 0 ? strerror(ret) : "completion failed") : "0",
	      want_ok ? "0" : "EACCES");
}

static int test_creds(int stock)
{
	struct __user_cap_data_struct full[2], caps[2], less[2];
	struct creds_ctx x = { .stock = stock };
	gid_t groups[64], more[65];
	int ngroups, bits;

	/* The file is opened without CAP_NET_RAW in the effective set, so
	 * that raising it later grants the writer more than the opener. */
	caps_get(full);
	memcpy(caps, full, sizeof(caps));
	caps[CAP_TO_INDEX(CAP_NET_RAW)].effective &= ~CAP_TO_MASK(CAP_NET_RAW);
	caps_set(caps);
	conn_open(&x.c);
	x.buf = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x.buf == MAP_FAILED)
		die("mmap");
	x.mr = ibv_reg_mr(x.c.pd, x.buf, 2 * PAGE, IBV_ACCESS_LOCAL_WRITE |
			  IBV_ACCESS_REMOTE_WRITE);
	if (!x.mr)
		die("reg_mr");
	printf("expecting %s ib_uverbs\n", stock ? "stock" : "rdmig's");

	creds_expect(&x, 1, "credentials of the open");

	caps_set(caps);
	x.changed = 1;
	creds_expect(&x, 1, "capset() with the same capabilities");

	ngroups = getgroups(64, groups);
	if (ngroups < 0)
		die("getgroups");
	if (setgroups(ngroups, groups))
		die("setgroups");
	creds_expect(&x, 1, "setgroups() with the same groups");

	bits = prctl(PR_GET_SECUREBITS);
	if (bits < 0 || prctl(PR_SET_SECUREBITS, bits))
		die("PR_SET_SECUREBITS");
	creds_expect(&x, 1, "PR_SET_SECUREBITS with the same bits");

	caps_set(full);
	creds_expect(&x, 0, "CAP_NET_RAW raised in the effective set (the opener had not)");
	memcpy(less, caps, sizeof(less));
	less[CAP_TO_INDEX(CAP_SYS_ADMIN)].effective &= ~CAP_TO_MASK(CAP_SYS_ADMIN);
	less[CAP_TO_INDEX(CAP_SYS_ADMIN)].permitted &= ~CAP_TO_MASK(CAP_SYS_ADMIN);
	caps_set(less);
	creds_expect(&x, 1, "CAP_SYS_ADMIN dropped (fewer than the opener's, as in a container)");
	/* A permitted capability once dropped cannot come back: the rest
	 * runs with fewer, which the previous check showed is accepted. */

	memcpy(more, groups, ngroups * sizeof(gid_t));
	more[ngroups] = 4242;
	if (setgroups(ngroups + 1, more))
		die("setgroups");
	creds_expect(&x, 0, "one more supplementary group");
	if (setgroups(ngroups, groups))
		die("setgroups");
	creds_expect(&x, 1, "the old supplementary groups again");

	/* refused doorbells may leave WQEs behind, destroying the QPs is fine */
	ibv_dereg_mr(x.mr);
	conn_close(&x.c);
	return 0;
}

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s offsets|repin|hollow|stopped|wrprotect|creds [-d ibdev] [-g gid_index] [-s]\n",
		prog);
	exit(2);
}

int main(int argc, char **argv)
{
	const char *cmd;
	int opt, stock = 0;

	if (argc < 2)
		usage(argv[0]);
	cmd = argv[1];
	optind = 2;
	while ((opt = getopt(argc, argv, "d:g:s")) != -1) {
		switch (opt) {
		case 'd':
			ibdev_name = optarg;
			break;
		case 'g':
			gid_index = atoi(optarg);
			break;
		case 's':
			stock = 1;
			break;
		default:
			usage(argv[0]);
		}
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	if (!strcmp(cmd, "offsets"))
		test_offsets();
	else if (!strcmp(cmd, "repin"))
		test_repin();
	else if (!strcmp(cmd, "hollow"))
		test_hollow();
	else if (!strcmp(cmd, "stopped"))
		test_stopped();
	else if (!strcmp(cmd, "wrprotect"))
		test_wrprotect();
	else if (!strcmp(cmd, "creds"))
		test_creds(stock);
	else
		usage(argv[0]);

	printf("%d passed, %d failed\n", passes, failures);
	return failures ? 1 : 0;
}
