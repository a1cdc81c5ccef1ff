/* tcpserver: accepts one client and greets it, then reads nothing until
 * asked: at a checkpoint the client's bytes sit unread in the receive
 * queue. The check reads what the client sent (waiting up to 10 s, times
 * RELOCATE_WAIT_SCALE, for retransmissions) and whether EOF follows,
 * answers, and checks the reply went out. argv[2], if given, is the IPv4
 * address to listen on (default 127.0.0.1). Later clients wait in the
 * accept queue until DIR/accept-more appears; then each is accepted,
 * greeted ("hello-extra") and DIR/extra written; the next check says
 * "bye-extra" to it and closes it. */
#include "proto.h"
#include "inet.h"
#include <fcntl.h>
#include <poll.h>

static int lfd, conn = -1, extra = -1;
static char want[256];

static void tick(void) {
	if (conn < 0) {
		conn = accept(lfd, NULL, NULL);
		if (conn < 0)
			return;
		const char hello[] = "hello-from-server\n";
		write(conn, hello, sizeof hello - 1);
		proto_write("accepted", "1\n");
		return;
	}
	snprintf(want, sizeof want, "%s/accept-more", proto_dir);
	if (extra >= 0 || access(want, F_OK) != 0)
		return;
	extra = accept(lfd, NULL, NULL);
	if (extra >= 0) {
		const char hi[] = "hello-extra\n";
		write(extra, hi, sizeof hi - 1);
		proto_write("extra", "1\n");
	}
}

static void check(char *ok, size_t n) {
	if (conn < 0) {
		fail("no client");
		return;
	}
	snprintf(want, sizeof want, "%s/expect", proto_dir);
	FILE *f = fopen(want, "r");
	char expect[128] = "";
	if (!f || !fgets(expect, sizeof expect, f)) {
		fail("no expect file");
		if (f)
			fclose(f);
		return;
	}
	fclose(f);
	expect[strcspn(expect, "\n")] = 0; /* e.g. "hello-from-client|more" */
	for (char *p = expect; *p; p++)
		if (*p == '|')
			*p = '\n';
	strcat(expect, "\n");
	char got[256] = "";
	size_t have = 0, need = strlen(expect);
	while (have < need) {
		struct pollfd p = {.fd = conn, .events = POLLIN};
		if (poll(&p, 1, proto_scaled(10000)) <= 0)
			break;
		ssize_t r = read(conn, got + have, need - have);
		if (r <= 0) {
			fail("connection: %s", r < 0 ? strerror(errno) : "closed by the peer");
			return;
		}
		have += r;
	}
	if (have != need || memcmp(got, expect, need))
		fail("received %zu bytes %.*s", have, (int)have, got);
	char c;
	int eof = recv(conn, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0; /* the client shut down its side */
	const char reply[] = "reply-after-restore\n";
	if (write(conn, reply, sizeof reply - 1) != sizeof reply - 1)
		fail("reply: %s", strerror(errno));
	snprintf(ok, n, "received %zu bytes%s", have, eof ? ", then EOF" : "");
	if (extra >= 0) {
		const char bye[] = "bye-extra\n";
		if (write(extra, bye, sizeof bye - 1) != sizeof bye - 1)
			fail("bye to the extra client: %s", strerror(errno));
		close(extra);
		extra = -1;
		strncat(ok, ", said bye to an extra client", n - strlen(ok) - 1);
	}
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	lfd = inet_ready(SOCK_STREAM, argc, argv);
	fcntl(lfd, F_SETFL, O_NONBLOCK);
	proto_loop(check, tick);
}
