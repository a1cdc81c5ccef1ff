/* unixpair: a parent and its forked child talk over socketpairs, like a
 * master and its workers: a stream pair that holds unread bytes in both
 * directions at any checkpoint taken before the first check (each side
 * wrote a greeting the other has not read), and a datagram pair the
 * parent uses to wake the child, on which the child's two datagrams wait
 * unread for the parent.
 *
 * The check (parent): the first time, read the child's two datagrams,
 * wake the child with one; the child then reads the parent's greeting and
 * answers; the parent reads the child's greeting and the answer. Every check also does a round trip
 * ("ping K" -> "pong K"). With argv[2] = "mute" the child never answers
 * (the control: the check fails). */
#include "proto.h"
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>

static int sp, dp; /* the parent's ends */
static long round_trips;

/* readline reads one line from fd, waiting up to 3 s. */
static int readline(int fd, char *buf, size_t n) {
	size_t have = 0;
	while (have + 1 < n) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 3000) <= 0)
			return -1;
		if (read(fd, buf + have, 1) != 1)
			return -1;
		if (buf[have++] == '\n')
			break;
	}
	buf[have] = 0;
	return 0;
}

static void child(int s, int d, int mute) {
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	char buf[128], line[128];
	if (recv(d, buf, sizeof buf, 0) <= 0) /* woken by the first check */
		_exit(1);
	if (mute)
		for (;;)
			pause();
	if (readline(s, line, sizeof line) || strcmp(line, "hello-child\n"))
		_exit(1);
	write(s, "greeting-received\n", 18);
	for (;;) {
		long k;
		if (readline(s, line, sizeof line))
			continue; /* nothing for 3 s */
		if (sscanf(line, "ping %ld", &k) == 1) {
			snprintf(buf, sizeof buf, "pong %ld\n", k);
			write(s, buf, strlen(buf));
		}
	}
}

static void check(char *ok, size_t n) {
	char line[128];
	if (round_trips == 0) {
		char dg[64];
		for (int i = 1; i <= 2; i++) {
			char want[32];
			snprintf(want, sizeof want, "datagram-%d", i);
			/* The child sends them right after the fork: on a busy
			 * machine it may not have yet when the first check comes. */
			struct pollfd p = {.fd = dp, .events = POLLIN};
			poll(&p, 1, 5000);
			ssize_t r = recv(dp, dg, sizeof dg - 1, MSG_DONTWAIT);
			dg[r < 0 ? 0 : r] = 0;
			if (strcmp(dg, want)) {
				fail("the child's %s is lost (got \"%s\")", want, dg);
				return;
			}
		}
		send(dp, "go", 2, 0);
		if (readline(sp, line, sizeof line) || strcmp(line, "hello-parent\n")) {
			fail("the child's greeting is lost (got %s)", line);
			return;
		}
		if (readline(sp, line, sizeof line) || strcmp(line, "greeting-received\n")) {
			fail("the child did not get the parent's greeting");
			return;
		}
	}
	char ping[64];
	snprintf(ping, sizeof ping, "ping %ld\n", round_trips + 1);
	write(sp, ping, strlen(ping));
	long k = -1;
	if (readline(sp, line, sizeof line) || sscanf(line, "pong %ld", &k) != 1 || k != round_trips + 1) {
		fail("no pong for ping %ld", round_trips + 1);
		return;
	}
	round_trips++;
	snprintf(ok, n, "round trips=%ld", round_trips);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	int s[2], d[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) || socketpair(AF_UNIX, SOCK_DGRAM, 0, d))
		return 2;
	pid_t pid = fork();
	if (pid == 0) {
		close(s[0]);
		close(d[0]);
		write(s[1], "hello-parent\n", 13);
		send(d[1], "datagram-1", 10, 0);
		send(d[1], "datagram-2", 10, 0);
		child(s[1], d[1], argc > 2 && !strcmp(argv[2], "mute"));
	}
	close(s[1]);
	close(d[1]);
	sp = s[0];
	dp = d[0];
	write(sp, "hello-child\n", 12);
	char extra[32];
	snprintf(extra, sizeof extra, "child=%d\n", pid);
	proto_ready(extra);
	proto_loop(check, NULL);
}
