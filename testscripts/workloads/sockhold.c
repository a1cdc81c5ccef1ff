/* sockhold: a counter that also holds a connected unix socket pair, which a
 * checkpoint must refuse while leaving the process running. */
#include "proto.h"
#include <sys/socket.h>

static volatile long count, last_checked = -1;
static void tick(void) { count++; }
static void check(char *ok, size_t n) {
	if (count <= last_checked)
		fail("loop stuck at %ld", count);
	last_checked = count;
	snprintf(ok, n, "count=%ld", count);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return 1;
	int c = sv[0];
	char extra[32];
	snprintf(extra, sizeof extra, "fd=%d\n", c);
	proto_ready(extra);
	proto_loop(check, tick);
}
