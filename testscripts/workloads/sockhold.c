/* sockhold: a counter that also holds an established TCP connection (to
 * itself, over loopback), which a checkpoint must refuse while leaving the
 * process running. */
#include "proto.h"
#include <netinet/in.h>
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
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1) || getsockname(s, (struct sockaddr *)&a, &len))
		return 1;
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&a, len))
		return 1;
	int conn = accept(s, NULL, NULL);
	if (conn < 0)
		return 1;
	char extra[32];
	snprintf(extra, sizeof extra, "fd=%d\n", c);
	proto_ready(extra);
	proto_loop(check, tick);
}
