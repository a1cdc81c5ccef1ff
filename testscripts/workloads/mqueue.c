/* mqueue: POSIX message queues held by a parent and its child.
 *
 * Q, named (ready: name=), room for 8 messages of 128 bytes, mode 0640,
 * owner 1234:5678, is open three ways: A read-write non-blocking, C a dup
 * of A (one description), B read-only and blocking (another description
 * of the same queue); the child, forked after, shares A and B. U is a
 * second queue, unlinked at once (ready: uname=), 4 messages of 32
 * bytes, mode 0600, open read-write.
 *
 * Between checks Q holds the six messages of the next round (priorities
 * 1, 5, 1, 9, 5, 0, texts of several sizes, one empty) and U two
 * (priorities 3, 7). The check takes them all and wants them in receive
 * order (highest priority first, in order of sending within one) with
 * their texts, which derive from the round and a salt (ready: addr=, for
 * a control run to change); it wants the attributes (capacity, message
 * size, O_NONBLOCK of A and not of B, mode, owner), A and C one
 * description, B another, the child's A and B the parent's, Q found by
 * its name and U by none; it sends a message through A and takes it
 * through B; then it sends the next round (whatever went wrong, so that
 * the check after a control run passes again).
 *
 * Other modes, argv[2]: "notify" holds a queue on which it registered a
 * notification (mq_notify); "open NAME" holds the queue NAME open (a
 * process outside); "take NAME" takes one message of it and exits;
 * "create NAME" creates it and exits; "unlink NAME" unlinks it;
 * "probe NAME" prints present or absent. */
#include "proto.h"
#include <fcntl.h>
#include <linux/kcmp.h>
#include <mqueue.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#define NQ 6
#define NU 2
static const unsigned qprio[NQ] = {1, 5, 1, 9, 5, 0};
static const int qsize[NQ] = {1, 128, 40, 7, 90, 0};
static const int qorder[NQ] = {3, 1, 4, 0, 2, 5}; /* receive order */
static const unsigned uprio[NU] = {3, 7};
static const int usize[NU] = {32, 5};
static const int uorder[NU] = {1, 0};

static volatile unsigned long salt = 0x5eed;
static char name[64], uname[64];
static mqd_t qa, qb, qc, qu;
static pid_t kid;
static long round_no = 1;

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void fill(char *text, int queue, long round, int i, int size) {
	for (int j = 0; j < size; j++)
		text[j] = (char)((salt + queue * 31 + round * 7 + i * 13 + j) % 251);
}

static void send_round(long round) {
	char text[128];
	for (int i = 0; i < NQ; i++) {
		fill(text, 0, round, i, qsize[i]);
		if (mq_send(qa, text, qsize[i], qprio[i]))
			fail("send round %ld message %d to %s: %s", round, i, name, strerror(errno));
	}
	for (int i = 0; i < NU; i++) {
		fill(text, 1, round, i, usize[i]);
		if (mq_send(qu, text, usize[i], uprio[i]))
			fail("send round %ld message %d to unlinked %s: %s", round, i, uname, strerror(errno));
	}
}

/* take takes a message without waiting, whatever the description's
 * O_NONBLOCK (a timeout already passed). */
static ssize_t take(mqd_t q, char *buf, unsigned *prio) {
	struct timespec past = {0, 0};
	return mq_timedreceive(q, buf, 128, prio, &past);
}

/* take_round takes every message of q and compares them with round's, in
 * receive order. */
static void take_round(mqd_t q, const char *what, int n, const unsigned *prio, const int *size, const int *order,
		       int queue) {
	char got[16][128], want[128];
	ssize_t len[16];
	unsigned gprio[16];
	int m = 0;
	while (m < 16 && (len[m] = take(q, got[m], &gprio[m])) >= 0)
		m++;
	if (m < 16 && errno != EAGAIN && errno != ETIMEDOUT)
		fail("%s: mq_receive: %s", what, strerror(errno));
	if (m != n) {
		fail("round %ld: %s holds %d messages, want %d", round_no, what, m, n);
		return;
	}
	for (int k = 0; k < n; k++) {
		int i = order[k];
		fill(want, queue, round_no, i, size[i]);
		if (len[k] != size[i] || gprio[k] != prio[i] || memcmp(got[k], want, size[i])) {
			fail("round %ld: %s message %d: %zd bytes of priority %u, want %d of priority %u%s", round_no, what, k,
			     len[k], gprio[k], size[i], prio[i],
			     len[k] == size[i] && gprio[k] == prio[i] ? " (text differs)" : "");
			return;
		}
	}
}

static void attrs(mqd_t q, const char *what, long maxmsg, long msgsize, long flags, unsigned mode, uid_t uid,
		  gid_t gid) {
	struct mq_attr a;
	struct stat st;
	if (mq_getattr(q, &a) || fstat(q, &st)) {
		fail("%s: %s", what, strerror(errno));
		return;
	}
	if (a.mq_maxmsg != maxmsg || a.mq_msgsize != msgsize || (a.mq_flags & O_NONBLOCK) != flags)
		fail("%s: room for %ld messages of %ld bytes, flags %#lx; want %ld of %ld, %#lx", what, a.mq_maxmsg,
		     a.mq_msgsize, a.mq_flags, maxmsg, msgsize, flags);
	if ((st.st_mode & 07777) != mode || st.st_uid != uid || st.st_gid != gid)
		fail("%s: mode %o owner %d:%d, want %o %d:%d", what, st.st_mode & 07777, st.st_uid, st.st_gid, mode, uid,
		     gid);
}

static int same(pid_t p1, int fd1, pid_t p2, int fd2) { return syscall(SYS_kcmp, p1, p2, KCMP_FILE, fd1, fd2) == 0; }

static void check(char *ok, size_t n) {
	attrs(qa, "A", 8, 128, O_NONBLOCK, 0640, 1234, 5678);
	attrs(qb, "B", 8, 128, 0, 0640, 1234, 5678);
	attrs(qu, "U", 4, 32, 0, 0600, 0, 0);
	if (!same(getpid(), qa, getpid(), qc) || same(getpid(), qa, getpid(), qb))
		fail("A and C are %s description, A and B %s; want one and two", same(getpid(), qa, getpid(), qc) ? "one" : "two",
		     same(getpid(), qa, getpid(), qb) ? "one" : "two");
	if (!same(getpid(), qa, kid, qa) || !same(getpid(), qb, kid, qb) || !same(getpid(), qu, kid, qu))
		fail("the child's descriptors are not the parent's descriptions");
	struct stat sa, sn;
	mqd_t byname = mq_open(name, O_RDONLY);
	if (byname < 0 || fstat(byname, &sn) || fstat(qa, &sa) || sa.st_ino != sn.st_ino)
		fail("%s by name: %s", name, byname < 0 ? strerror(errno) : "another queue");
	if (byname >= 0)
		mq_close(byname);
	if (mq_open(uname, O_RDONLY) >= 0 || errno != ENOENT)
		fail("unlinked %s is there by name", uname);
	if (!proto_failed) {
		take_round(qa, "Q", NQ, qprio, qsize, qorder, 0);
		take_round(qu, "U", NU, uprio, usize, uorder, 1);
	}
	char buf[128];
	unsigned prio = 0;
	while (take(qa, buf, &prio) >= 0 || take(qu, buf, &prio) >= 0)
		; /* what a failed check left */
	/* A new message flows: sent through A, taken through B. */
	if (mq_send(qa, "ping", 4, 31) || mq_receive(qb, buf, sizeof buf, &prio) != 4 || prio != 31 || memcmp(buf, "ping", 4))
		fail("ping through A and B: %s", strerror(errno));
	round_no++;
	send_round(round_no);
	snprintf(ok, n, "name=%s round=%ld", name, round_no);
}

static void holding(char *ok, size_t n) { snprintf(ok, n, "holding"); }

static void setup(void) {
	snprintf(name, sizeof name, "/relocate-mq-%d", getpid());
	snprintf(uname, sizeof uname, "/relocate-mqu-%d", getpid());
	struct mq_attr a = {.mq_maxmsg = 8, .mq_msgsize = 128};
	qa = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0640, &a);
	if (qa < 0)
		die("mq_open Q");
	if (fchown(qa, 1234, 5678))
		die("fchown Q");
	qb = mq_open(name, O_RDONLY);
	qc = dup(qa);
	struct mq_attr u = {.mq_maxmsg = 4, .mq_msgsize = 32};
	qu = mq_open(uname, O_RDWR | O_CREAT | O_EXCL, 0600, &u);
	if (qb < 0 || qc < 0 || qu < 0)
		die("mq_open");
	mq_unlink(uname);
	send_round(round_no);
	if (proto_failed) {
		fprintf(stderr, "%s\n", proto_msg);
		exit(2);
	}
}

static void cleanup(void) {
	if (name[0])
		mq_unlink(name);
}

/* One-shot modes on the queue NAME. */
static int oneshot(const char *mode, const char *q) {
	if (!strcmp(mode, "take")) {
		struct mq_attr a;
		mqd_t fd = mq_open(q, O_RDONLY | O_NONBLOCK);
		char *buf = fd < 0 || mq_getattr(fd, &a) ? NULL : malloc(a.mq_msgsize);
		ssize_t n = buf ? mq_receive(fd, buf, a.mq_msgsize, NULL) : -1;
		if (n < 0)
			die("take");
		printf("took %zd bytes\n", n);
	} else if (!strcmp(mode, "create")) {
		if (mq_open(q, O_RDWR | O_CREAT | O_EXCL, 0600, NULL) < 0)
			die("create");
	} else if (!strcmp(mode, "unlink")) {
		if (mq_unlink(q))
			die("unlink");
	} else if (!strcmp(mode, "probe")) {
		mqd_t fd = mq_open(q, O_RDONLY);
		if (fd < 0 && errno != ENOENT)
			die("probe");
		printf("%s\n", fd < 0 ? "absent" : "present");
	} else {
		return -1;
	}
	return 0;
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc > 3 && !oneshot(argv[2], argv[3]))
		return 0;
	if (argc > 3 && !strcmp(argv[2], "open")) {
		if (mq_open(argv[3], O_RDONLY) < 0)
			die("mq_open");
		proto_ready(NULL);
		proto_loop(holding, NULL);
	}
	if (argc > 2 && !strcmp(argv[2], "notify")) {
		snprintf(name, sizeof name, "/relocate-mqn-%d", getpid());
		mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL, 0600, NULL);
		struct sigevent ev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1};
		if (q < 0 || mq_notify(q, &ev))
			die("mq_notify");
		atexit(cleanup);
		signal(SIGTERM, exit);
		char buf[128];
		snprintf(buf, sizeof buf, "name=%s\n", name);
		proto_ready(buf);
		proto_loop(holding, NULL);
	}
	setup();
	atexit(cleanup);
	signal(SIGTERM, exit);
	kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		name[0] = 0; /* the parent's to unlink */
		for (;;)
			pause();
	}
	char buf[256];
	snprintf(buf, sizeof buf, "kid=%d\nname=%s\nuname=%s\naddr=%p\n", kid, name, uname, (void *)&salt);
	proto_ready(buf);
	proto_loop(check, NULL);
}
