/* sockhold: a counter connected to a unix socket served by another
 * process (argv[2] is its path), like a client of journald or D-Bus: a
 * checkpoint must refuse it while leaving the process running, or, opted
 * in, bring it back closed. The check reports whether the connection is
 * open (nothing to read yet) or closed (EOF). */
#include "proto.h"
#include <sys/socket.h>
#include <sys/un.h>

static volatile long count, last_checked = -1;
static int conn;
static void tick(void) { count++; }
static void check(char *ok, size_t n) {
	if (count <= last_checked)
		fail("loop stuck at %ld", count);
	last_checked = count;
	char c;
	ssize_t r = recv(conn, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	const char *state = r == 0 ? "closed" : r < 0 && errno == EAGAIN ? "open" : "odd";
	snprintf(ok, n, "count=%ld peer=%s", count, state);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: sockhold STATEDIR SOCKETPATH\n");
		return 2;
	}
	int c = conn = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", argv[2]);
	if (connect(c, (struct sockaddr *)&a, sizeof a)) {
		perror(argv[2]);
		return 2;
	}
	char extra[32];
	snprintf(extra, sizeof extra, "fd=%d\n", c);
	proto_ready(extra);
	proto_loop(check, tick);
}
