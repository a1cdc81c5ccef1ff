/* Helpers for the network workloads (after proto.h). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* inet_ready makes a socket of type bound to an ephemeral port of argv[2]
 * (default 127.0.0.1), listening if it is a stream socket, and writes the
 * ready file with "port=N". It exits with 2 if that fails. */
__attribute__((unused)) static int inet_ready(int type, int argc, char **argv) {
	int fd = socket(AF_INET, type, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (argc > 2 && inet_pton(AF_INET, argv[2], &a.sin_addr) != 1) {
		fprintf(stderr, "bad address %s\n", argv[2]);
		exit(2);
	}
	socklen_t len = sizeof a;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) || (type == SOCK_STREAM && listen(fd, 4)) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		perror("bind");
		exit(2);
	}
	char extra[32];
	snprintf(extra, sizeof extra, "port=%d\n", ntohs(a.sin_port));
	proto_ready(extra);
	return fd;
}
