// SPDX-License-Identifier: GPL-2.0 OR Linux-OpenIB
/*
 * Smoke test of the rdmig rdma_rxe patches, run as root on a host (or VM)
 * with the patched rdma_rxe loaded and an rxe device:
 *
 *   rxe-ctl-smoke [-d rxe0] [-g GID_INDEX]
 *
 * Checks the last_qpn/last_mrn sysctls, reservations, exact QP, MR, MW
 * and AH numbers, and the MR dirty log for RDMA WRITE, SEND, atomics and
 * RDMA READ responses on a loopback RC connection. Prints the status of
 * /dev/rxe_ctl at the end. Exits 1 if a check failed.
 *
 * The numbers it asks for (QPN 80, 1000, 3000-3010, MR 65 and 2000,
 * AH 300, MW 524300) must be free, so run it with no other rxe users.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <infiniband/verbs.h>

#include "rxe_ctl_abi.h"

#define PAGE		4096
#define SYSCTL_DIR	"/proc/sys/net/rdma_rxe/"

static int failures, passes;
static const char *ibdev_name;

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
	} while (0)

static void die(const char *what)
{
	perror(what);
	exit(2);
}

static void write_sysctl(const char *name, unsigned int val)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), SYSCTL_DIR "%s", name);
	f = fopen(path, "w");
	if (!f)
		die(path);
	fprintf(f, "%u\n", val);
	if (fclose(f))
		die(path);
}

static unsigned int read_sysctl(const char *name)
{
	char path[128];
	unsigned int val;
	FILE *f;

	snprintf(path, sizeof(path), SYSCTL_DIR "%s", name);
	f = fopen(path, "r");
	if (!f || fscanf(f, "%u", &val) != 1)
		die(path);
	fclose(f);
	return val;
}

static int expect(int ctl, __u32 obj, __u32 index, int key)
{
	struct rxe_ctl_expect req = {
		.obj = obj,
		.index = index,
	};

	if (key >= 0) {
		req.flags |= RXE_CTL_F_KEY;
		req.key = key;
	}
	snprintf(req.ibdev, sizeof(req.ibdev), "%s", ibdev_name);
	return ioctl(ctl, RXE_CTL_IOC_EXPECT, &req) ? -errno : 0;
}

static int dirty(int ctl, struct ibv_mr *mr, int clear, __u64 *bits,
		 struct rxe_ctl_dirty *out)
{
	struct rxe_ctl_dirty req = {
		.index = mr->lkey >> 8,
		.flags = clear ? RXE_CTL_DIRTY_F_CLEAR : 0,
		.npages = 64,
		.bitmap = (uintptr_t)bits,
	};

	snprintf(req.ibdev, sizeof(req.ibdev), "%s", ibdev_name);
	if (ioctl(ctl, RXE_CTL_IOC_DIRTY, &req))
		return -errno;
	if (out)
		*out = req;
	return 0;
}

static struct ibv_qp *create_qp(struct ibv_pd *pd, struct ibv_cq *cq)
{
	struct ibv_qp_init_attr attr = {
		.send_cq = cq,
		.recv_cq = cq,
		.qp_type = IBV_QPT_RC,
		.cap = {
			.max_send_wr = 16,
			.max_recv_wr = 16,
			.max_send_sge = 1,
			.max_recv_sge = 1,
		},
	};

	return ibv_create_qp(pd, &attr);
}

static void connect_qp(struct ibv_qp *qp, uint32_t dest, union ibv_gid *gid,
		       int gid_index)
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

static void wait_cq(struct ibv_cq *cq, int n)
{
	struct ibv_wc wc;
	int tries = 0;

	while (n > 0) {
		int got = ibv_poll_cq(cq, 1, &wc);

		if (got < 0)
			die("poll_cq");
		if (!got) {
			if (++tries > 5000000) {
				fprintf(stderr, "completion timeout\n");
				exit(2);
			}
			continue;
		}
		if (wc.status != IBV_WC_SUCCESS) {
			fprintf(stderr, "completion error %s (opcode %d)\n",
				ibv_wc_status_str(wc.status), wc.opcode);
			exit(2);
		}
		n--;
	}
}

static void post(struct ibv_qp *qp, enum ibv_wr_opcode op, void *laddr,
		 uint32_t len, struct ibv_mr *lmr, uint64_t raddr,
		 uint32_t rkey)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)laddr,
		.length = len,
		.lkey = lmr->lkey,
	};
	struct ibv_send_wr wr = {
		.sg_list = &sge,
		.num_sge = 1,
		.opcode = op,
		.send_flags = IBV_SEND_SIGNALED,
	}, *bad;

	if (op == IBV_WR_ATOMIC_FETCH_AND_ADD) {
		wr.wr.atomic.remote_addr = raddr;
		wr.wr.atomic.rkey = rkey;
		wr.wr.atomic.compare_add = 1;
	} else {
		wr.wr.rdma.remote_addr = raddr;
		wr.wr.rdma.rkey = rkey;
	}
	if (ibv_post_send(qp, &wr, &bad))
		die("post_send");
}

static void print_status(void)
{
	char buf[4096];
	ssize_t n;
	int fd = open("/dev/rxe_ctl", O_RDONLY);

	if (fd < 0)
		die("/dev/rxe_ctl");
	printf("---- /dev/rxe_ctl status\n");
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, n, stdout);
	close(fd);
}

static int status_has(const char *needle)
{
	char *text = NULL;
	size_t len = 0, cap = 0;
	ssize_t n;
	int fd = open("/dev/rxe_ctl", O_RDONLY), found;

	if (fd < 0)
		die("/dev/rxe_ctl");
	do {
		if (len + 4096 + 1 > cap) {
			cap = cap ? 2 * cap : 65536;
			text = realloc(text, cap);
			if (!text)
				die("realloc");
		}
		n = read(fd, text + len, 4096);
		if (n > 0)
			len += n;
	} while (n > 0);
	close(fd);
	text[len] = 0;
	found = strstr(text, needle) != NULL;
	free(text);
	return found;
}

int main(int argc, char **argv)
{
	const int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			   IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
	struct ibv_device **list;
	struct ibv_context *ctx = NULL;
	struct ibv_pd *pd;
	struct ibv_cq *cq;
	struct ibv_qp *qa, *qb, *q;
	struct ibv_mr *ma, *mb, *m;
	struct ibv_mw *mw;
	struct ibv_ah *ah;
	struct ibv_ah_attr ah_attr;
	struct rxe_ctl_version ver;
	struct rxe_ctl_reserve resv;
	struct rxe_ctl_drop drop;
	struct rxe_ctl_dirty info;
	union ibv_gid gid;
	__u64 bits[1];
	char line[128];
	char *a, *b;
	int gid_index = 0, ctl, ctl2, ret, i, opt;

	while ((opt = getopt(argc, argv, "d:g:")) != -1) {
		switch (opt) {
		case 'd':
			ibdev_name = optarg;
			break;
		case 'g':
			gid_index = atoi(optarg);
			break;
		default:
			fprintf(stderr, "usage: %s [-d ibdev] [-g gid_index]\n",
				argv[0]);
			return 2;
		}
	}

	list = ibv_get_device_list(NULL);
	if (!list)
		die("ibv_get_device_list");
	for (i = 0; list[i]; i++) {
		if (ibdev_name && strcmp(ibdev_name, ibv_get_device_name(list[i])))
			continue;
		ctx = ibv_open_device(list[i]);
		ibdev_name = ibv_get_device_name(list[i]);
		break;
	}
	if (!ctx) {
		fprintf(stderr, "no rdma device %s\n", ibdev_name ? ibdev_name : "");
		return 2;
	}
	printf("device %s\n", ibdev_name);

	ctl = open("/dev/rxe_ctl", O_RDWR);
	if (ctl < 0)
		die("/dev/rxe_ctl (is the patched rdma_rxe loaded?)");

	ret = ioctl(ctl, RXE_CTL_IOC_VERSION, &ver);
	CHECK(!ret && ver.abi_version == RXE_CTL_ABI_VERSION,
	      "VERSION abi=%u features=%#x page_shift=%u dirty_log=%u",
	      ver.abi_version, ver.features, ver.page_shift, ver.dirty_log);

	pd = ibv_alloc_pd(ctx);
	cq = ibv_create_cq(ctx, 64, NULL, NULL, 0);
	if (!pd || !cq)
		die("pd/cq");
	if (posix_memalign((void **)&a, PAGE, 4 * PAGE) ||
	    posix_memalign((void **)&b, PAGE, 16 * PAGE))
		die("posix_memalign");
	memset(a, 0, 4 * PAGE);
	memset(b, 0, 16 * PAGE);

	/* MigrOS sysctls: offset from the pool minimum */
	write_sysctl("last_qpn", 64);
	q = create_qp(pd, cq);
	CHECK(q && q->qp_num == 80, "last_qpn=64 -> QPN %u (want 80)",
	      q ? q->qp_num : 0);
	CHECK(read_sysctl("last_qpn") == 65, "last_qpn reads %u (want 65)",
	      read_sysctl("last_qpn"));
	if (q)
		ibv_destroy_qp(q);

	write_sysctl("last_mrn", 64);
	m = ibv_reg_mr(pd, a, PAGE, IBV_ACCESS_LOCAL_WRITE);
	CHECK(m && m->lkey >> 8 == 65, "last_mrn=64 -> MR index %u (want 65)",
	      m ? m->lkey >> 8 : 0);
	CHECK(read_sysctl("last_mrn") == 65, "last_mrn reads %u (want 65)",
	      read_sysctl("last_mrn"));
	if (m)
		ibv_dereg_mr(m);

	/* exact numbers */
	CHECK(expect(ctl, RXE_CTL_OBJ_QP, 1000, -1) == 0, "EXPECT qp 1000");
	qa = create_qp(pd, cq);
	CHECK(qa && qa->qp_num == 1000, "expected QP got QPN %u",
	      qa ? qa->qp_num : 0);
	if (!qa)
		die("create_qp");

	CHECK(expect(ctl, RXE_CTL_OBJ_QP, 1000, -1) == 0, "EXPECT qp 1000 again");
	q = create_qp(pd, cq);
	CHECK(!q && errno == EBUSY, "QPN in use -> %s (want EBUSY)",
	      q ? "created" : strerror(errno));
	if (q)
		ibv_destroy_qp(q);

	CHECK(expect(ctl, RXE_CTL_OBJ_QP, 5, -1) == -ERANGE,
	      "EXPECT qp 5 -> ERANGE");
	CHECK(expect(ctl, RXE_CTL_OBJ_QP, 1001, 7) == -EINVAL,
	      "EXPECT qp with key -> EINVAL");

	CHECK(expect(ctl, RXE_CTL_OBJ_MR, 2000, 0x5a) == 0,
	      "EXPECT mr 2000 key 0x5a");
	mb = ibv_reg_mr(pd, b, 16 * PAGE, access);
	CHECK(mb && mb->lkey == (2000u << 8 | 0x5a) && mb->rkey == mb->lkey,
	      "expected MR lkey %#x rkey %#x (want %#x)", mb ? mb->lkey : 0,
	      mb ? mb->rkey : 0, 2000u << 8 | 0x5a);
	if (!mb)
		die("reg_mr");
	ma = ibv_reg_mr(pd, a, 4 * PAGE, access);
	if (!ma)
		die("reg_mr");

	CHECK(expect(ctl, RXE_CTL_OBJ_MW, 524300, 0x11) == 0,
	      "EXPECT mw 524300 key 0x11");
	mw = ibv_alloc_mw(pd, IBV_MW_TYPE_1);
	CHECK(mw && mw->rkey == (524300u << 8 | 0x11), "expected MW rkey %#x",
	      mw ? mw->rkey : 0);
	if (mw)
		ibv_dealloc_mw(mw);

	if (ibv_query_gid(ctx, 1, gid_index, &gid))
		die("query_gid");

	CHECK(expect(ctl, RXE_CTL_OBJ_AH, 300, -1) == 0, "EXPECT ah 300");
	memset(&ah_attr, 0, sizeof(ah_attr));
	ah_attr.is_global = 1;
	ah_attr.grh.dgid = gid;
	ah_attr.grh.sgid_index = gid_index;
	ah_attr.grh.hop_limit = 1;
	ah_attr.port_num = 1;
	ah = ibv_create_ah(pd, &ah_attr);
	snprintf(line, sizeof(line), "ah dev=%s index=300 pid=%d handle=",
		 ibdev_name, getpid());
	CHECK(ah && status_has(line), "expected AH has index 300");
	/* patch 12: the address vector, to recreate the AH */
	snprintf(line, sizeof(line), " port=1 sgid_index=%d dgid=", gid_index);
	CHECK(ah && status_has(line), "AH status shows its port and GID index");
	/* ib_core resolves the hop limit of a RoCE AH from the route */
	CHECK(ah && status_has(" hop_limit="), "AH status shows its hop limit");
	if (ah)
		ibv_destroy_ah(ah);

	/* reservations */
	memset(&resv, 0, sizeof(resv));
	resv.obj = RXE_CTL_OBJ_QP;
	resv.first = 3000;
	resv.last = 3009;
	CHECK(!ioctl(ctl, RXE_CTL_IOC_RESERVE, &resv) && resv.id,
	      "RESERVE qp 3000-3009 id %u nbusy %u", resv.id, resv.nbusy);
	write_sysctl("last_qpn", 3000 - 16);
	q = create_qp(pd, cq);
	CHECK(q && q->qp_num == 3010, "reserved range skipped -> QPN %u (want 3010)",
	      q ? q->qp_num : 0);
	if (q)
		ibv_destroy_qp(q);
	CHECK(expect(ctl, RXE_CTL_OBJ_QP, 3005, -1) == 0, "EXPECT qp 3005 (reserved)");
	q = create_qp(pd, cq);
	CHECK(q && q->qp_num == 3005, "expected QP in a reserved range -> QPN %u",
	      q ? q->qp_num : 0);
	if (q)
		ibv_destroy_qp(q);
	memset(&drop, 0, sizeof(drop));
	drop.id = resv.id;
	CHECK(ioctl(ctl, RXE_CTL_IOC_DROP, &drop) == 1, "DROP reservation");

	ctl2 = open("/dev/rxe_ctl", O_RDWR);
	memset(&resv, 0, sizeof(resv));
	resv.obj = RXE_CTL_OBJ_MR;
	resv.first = 4000;
	resv.last = 4001;
	ret = ioctl(ctl2, RXE_CTL_IOC_RESERVE, &resv);
	CHECK(!ret && status_has("obj=mr first=4000 last=4001"),
	      "RESERVE on a second fd is listed");
	close(ctl2);
	CHECK(!status_has("obj=mr first=4000 last=4001"),
	      "closing the fd dropped its reservation");

	/* dirty log on a loopback RC connection: a -> b */
	qb = create_qp(pd, cq);
	if (!qb)
		die("create_qp");
	connect_qp(qa, qb->qp_num, &gid, gid_index);
	connect_qp(qb, qa->qp_num, &gid, gid_index);

	CHECK(dirty(ctl, mb, 1, bits, NULL) == 0, "DIRTY reset");
	post(qa, IBV_WR_RDMA_WRITE, a, 100, ma, (uintptr_t)b + 3 * PAGE + 10,
	     mb->rkey);
	post(qa, IBV_WR_RDMA_WRITE, a, 200, ma, (uintptr_t)b + 8 * PAGE - 100,
	     mb->rkey);
	wait_cq(cq, 2);
	ret = dirty(ctl, mb, 0, bits, &info);
	CHECK(!ret && bits[0] == (1ull << 3 | 1ull << 7 | 1ull << 8) &&
	      info.ndirty == 3, "RDMA WRITE dirty bits %#llx ndirty %llu",
	      (unsigned long long)bits[0], (unsigned long long)info.ndirty);
	CHECK(info.mr_pages == 16 && info.va == (uintptr_t)b &&
	      info.lkey == mb->lkey && info.page_shift == 12 && info.npages == 16,
	      "DIRTY info mr_pages %llu npages %llu va %#llx",
	      (unsigned long long)info.mr_pages,
	      (unsigned long long)info.npages, (unsigned long long)info.va);
	dirty(ctl, mb, 1, bits, NULL);
	ret = dirty(ctl, mb, 0, bits, &info);
	CHECK(!ret && bits[0] == 0, "DIRTY clear");

	{
		struct ibv_sge sge = {
			.addr = (uintptr_t)b + 10 * PAGE,
			.length = 64,
			.lkey = mb->lkey,
		};
		struct ibv_recv_wr wr = { .sg_list = &sge, .num_sge = 1 }, *bad;

		if (ibv_post_recv(qb, &wr, &bad))
			die("post_recv");
	}
	post(qa, IBV_WR_SEND, a, 64, ma, 0, 0);
	wait_cq(cq, 2);
	post(qa, IBV_WR_ATOMIC_FETCH_AND_ADD, a + PAGE, 8, ma,
	     (uintptr_t)b + 12 * PAGE, mb->rkey);
	wait_cq(cq, 1);
	ret = dirty(ctl, mb, 1, bits, NULL);
	CHECK(!ret && bits[0] == (1ull << 10 | 1ull << 12),
	      "SEND + atomic dirty bits %#llx", (unsigned long long)bits[0]);

	dirty(ctl, ma, 1, bits, NULL);
	post(qa, IBV_WR_RDMA_READ, a + 2 * PAGE, 64, ma,
	     (uintptr_t)b + 14 * PAGE, mb->rkey);
	wait_cq(cq, 1);
	ret = dirty(ctl, ma, 1, bits, NULL);
	CHECK(!ret && bits[0] == 1ull << 2,
	      "RDMA READ response dirty bits %#llx on the requester MR",
	      (unsigned long long)bits[0]);
	ret = dirty(ctl, mb, 0, bits, NULL);
	CHECK(!ret && bits[0] == 0, "RDMA READ does not dirty the responder MR");

	print_status();

	ibv_destroy_qp(qa);
	ibv_destroy_qp(qb);
	ibv_dereg_mr(ma);
	ibv_dereg_mr(mb);
	ibv_destroy_cq(cq);
	ibv_dealloc_pd(pd);
	ibv_close_device(ctx);
	ibv_free_device_list(list);
	close(ctl);

	printf("%d passed, %d failed\n", passes, failures);
	return failures ? 1 : 0;
}
