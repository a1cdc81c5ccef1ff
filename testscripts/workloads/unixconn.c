/* unixconn: a server and its child talking over unix connections made
 * through listeners, both ends in the tree: a stream listener on a path
 * (DIR/stream.sock), a stream one on an abstract name, a seqpacket one
 * on a path (DIR/seq.sock). Between checks each side leaves bytes (two
 * messages on seqpacket) unread in its queue. A check reads the server's
 * queues and compares them with what the child must have sent, has the
 * child do the same through a control pipe, then each side sends the
 * next round's bytes; each listener also accepts a new client. ready has
 * addr= (the salt the server's expected bytes derive from) for a control
 * run to change. With "rights" as second argument, the child also leaves
 * a descriptor in flight (SCM_RIGHTS) in a fourth connection. */
#include "proto.h"
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#define NCONN 3
#define QSIZE 3000 /* child -> server, per stream round */
#define RSIZE 2000 /* server -> child */
static const int msgsize[2] = {100, 200};

static volatile unsigned long salt = 0x5eed;
static int types[NCONN] = {SOCK_STREAM, SOCK_STREAM, SOCK_SEQPACKET};
static struct sockaddr_un addrs[NCONN];
static socklen_t addrlens[NCONN];
static int listeners[NCONN], conns[NCONN];
static int ctl_out, ctl_in;
static int round_no = 1;

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void pattern(unsigned char *b, int n, int round, int conn, int dir, int part) {
	for (int i = 0; i < n; i++)
		b[i] = (unsigned char)((salt * 31 + round * 7 + conn * 13 + dir * 17 + part * 19 + i) % 251);
}

/* recv_all reads exactly n bytes (one message on seqpacket) that must be
 * queued already (a second's grace). */
static int recv_all(int fd, unsigned char *b, int n, int seq) {
	int got = 0;
	while (got < n) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 1000) != 1)
			return got;
		ssize_t r = recv(fd, b + got, n - got, MSG_DONTWAIT);
		if (r <= 0)
			return got;
		got += r;
		if (seq)
			return got;
	}
	return got;
}

/* expect reads one round's bytes from conn i in direction dir and
 * compares; returns NULL or what went wrong. */
static const char *expect(int fd, int i, int round, int dir, char *why, size_t wn) {
	unsigned char want[QSIZE], got[QSIZE];
	int parts = types[i] == SOCK_SEQPACKET ? 2 : 1;
	for (int part = 0; part < parts; part++) {
		int n = types[i] == SOCK_SEQPACKET ? msgsize[part] : dir == 0 ? QSIZE : RSIZE;
		pattern(want, n, round, i, dir, part);
		int r = recv_all(fd, got, n, types[i] == SOCK_SEQPACKET);
		if (r != n) {
			snprintf(why, wn, "connection %d round %d: %d of %d bytes queued", i, round, r, n);
			return why;
		}
		if (memcmp(want, got, n)) {
			snprintf(why, wn, "connection %d round %d: queued bytes differ", i, round);
			return why;
		}
	}
	int left = -1;
	ioctl(fd, FIONREAD, &left);
	if (left != 0) {
		snprintf(why, wn, "connection %d round %d: %d bytes more than sent", i, round, left);
		return why;
	}
	return NULL;
}

static void send_round(int fd, int i, int round, int dir) {
	unsigned char b[QSIZE];
	int parts = types[i] == SOCK_SEQPACKET ? 2 : 1;
	for (int part = 0; part < parts; part++) {
		int n = types[i] == SOCK_SEQPACKET ? msgsize[part] : dir == 0 ? QSIZE : RSIZE;
		pattern(b, n, round, i, dir, part);
		if (send(fd, b, n, 0) != n)
			die("send");
	}
}

static int dial(int i) {
	int s = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&addrs[i], addrlens[i]))
		return -1;
	return s;
}

static void child(int in, int out, int rights) {
	for (int i = 0; i < NCONN; i++) {
		close(listeners[i]);
		if ((conns[i] = dial(i)) < 0)
			die("connect");
		send_round(conns[i], i, 1, 0);
	}
	if (rights) {
		int s = dial(0);
		int passed = open("/dev/null", O_RDONLY | O_CLOEXEC);
		char byte = 'F', cbuf[CMSG_SPACE(sizeof(int))] = {0};
		struct iovec iov = {&byte, 1};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &passed, sizeof(int));
		if (s < 0 || sendmsg(s, &m, 0) != 1)
			die("SCM_RIGHTS");
	}
	for (int round = 1;; round++) {
		char b;
		if (read(in, &b, 1) != 1)
			exit(0);
		char why[256] = "+";
		for (int i = 0; i < NCONN; i++) {
			char w[200];
			if (expect(conns[i], i, round, 1, w, sizeof w)) {
				snprintf(why, sizeof why, "-%s", w);
				break;
			}
		}
		for (int i = 0; i < NCONN; i++)
			send_round(conns[i], i, round + 1, 0);
		if (write(out, why, strlen(why)) < 0)
			exit(2);
	}
}

static void check(char *ok, size_t n) {
	char why[256];
	for (int i = 0; i < NCONN; i++)
		if (expect(conns[i], i, round_no, 0, why, sizeof why)) {
			fail("server: %s", why);
			return;
		}
	if (write(ctl_out, "c", 1) != 1) {
		fail("control pipe: %s", strerror(errno));
		return;
	}
	struct pollfd p = {ctl_in, POLLIN, 0};
	char reply[257] = "";
	if (poll(&p, 1, 3000) != 1 || read(ctl_in, reply, 256) <= 0) {
		fail("the child does not answer");
		return;
	}
	if (reply[0] != '+') {
		fail("child: %s", reply + 1);
		return;
	}
	round_no++;
	for (int i = 0; i < NCONN; i++)
		send_round(conns[i], i, round_no, 1);
	/* Each listener still takes new clients. */
	for (int i = 0; i < NCONN; i++) {
		int c = dial(i), a = -1;
		char x = 0;
		struct pollfd lp = {listeners[i], POLLIN, 0};
		if (c < 0 || poll(&lp, 1, 1000) != 1 || (a = accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC)) < 0 ||
		    write(c, "x", 1) != 1 || read(a, &x, 1) != 1 || x != 'x')
			fail("listener %d: a new client: %s", i, strerror(errno));
		close(c);
		close(a);
	}
	snprintf(ok, n, "round=%d", round_no);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	int rights = argc > 2 && !strcmp(argv[2], "rights");
	for (int i = 0; i < NCONN; i++) {
		struct sockaddr_un *a = &addrs[i];
		a->sun_family = AF_UNIX;
		if (i == 1) {
			int len = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "relocate-unixconn-%d", getpid());
			addrlens[i] = offsetof(struct sockaddr_un, sun_path) + 1 + len;
		} else {
			snprintf(a->sun_path, sizeof a->sun_path, "%s/%s", proto_dir, i == 0 ? "stream.sock" : "seq.sock");
			unlink(a->sun_path);
			addrlens[i] = sizeof *a;
		}
		listeners[i] = socket(AF_UNIX, types[i] | SOCK_CLOEXEC, 0);
		if (listeners[i] < 0 || bind(listeners[i], (struct sockaddr *)a, addrlens[i]) || listen(listeners[i], 8))
			die("listen");
	}
	int down[2], up[2];
	if (pipe2(down, O_CLOEXEC) || pipe2(up, O_CLOEXEC))
		die("pipe");
	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		close(down[1]);
		close(up[0]);
		child(down[0], up[1], rights);
	}
	close(down[0]);
	close(up[1]);
	ctl_out = down[1];
	ctl_in = up[0];
	for (int i = 0; i < NCONN; i++) {
		if ((conns[i] = accept4(listeners[i], NULL, NULL, SOCK_CLOEXEC)) < 0)
			die("accept");
		send_round(conns[i], i, 1, 1);
	}
	int extra = -1;
	if (rights && (extra = accept4(listeners[0], NULL, NULL, SOCK_CLOEXEC)) < 0)
		die("accept");
	char buf[128];
	snprintf(buf, sizeof buf, "kid=%d\naddr=%p\n", kid, (void *)&salt);
	proto_ready(buf);
	proto_loop(check, NULL);
}
