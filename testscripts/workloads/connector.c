/* connector: a thread connects, blocking, to 127.0.0.1:argv[2] and then
 * reads the server's greeting; the main loop follows the protocol. At a
 * checkpoint the connect may still be under way (its SYNs unanswered).
 * The check reports "connected: GREETING" once the thread got through
 * (it writes DIR/done then), "connecting" before. */
#include "proto.h"
#include "inet.h"
#include <pthread.h>

static int port;
static volatile int done;
static char greeting[64], err[128];

static void *connector(void *arg) {
	(void)arg;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
		snprintf(err, sizeof err, "connect: %s", strerror(errno));
		done = 1;
		return NULL;
	}
	ssize_t n = read(fd, greeting, sizeof greeting - 1);
	if (n <= 0)
		snprintf(err, sizeof err, "read: %s", n < 0 ? strerror(errno) : "EOF");
	else
		greeting[strcspn(greeting, "\n")] = 0;
	done = 1;
	proto_write("done", "1\n");
	return NULL;
}

static void check(char *ok, size_t n) {
	if (!done)
		snprintf(ok, n, "connecting");
	else if (err[0])
		fail("%s", err);
	else
		snprintf(ok, n, "connected: %s", greeting);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: connector STATEDIR PORT\n");
		return 2;
	}
	port = atoi(argv[2]);
	pthread_t t;
	pthread_create(&t, NULL, connector, NULL);
	proto_ready("");
	proto_loop(check, NULL);
}
