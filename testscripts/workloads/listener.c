/* listener: listening sockets of each kind and a bound UDP socket. The
 * check connects to every listener from inside the process, accepts,
 * exchanges bytes both ways and closes, and sends itself a datagram. */
#include "proto.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static int tcp4, tcp6, upath, uabs, udp;
static struct sockaddr_storage a4, a6, apath, aabs, audp;
static socklen_t l4, l6, lpath, lab, ludp;

static int roundtrip(int lfd, struct sockaddr_storage *a, socklen_t len, const char *what) {
	int c = socket(a->ss_family, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)a, len)) {
		fail("%s: connect: %s", what, strerror(errno));
		return -1;
	}
	struct pollfd p = {.fd = lfd, .events = POLLIN};
	poll(&p, 1, 5000); /* the listener may be non-blocking */
	int s = accept(lfd, NULL, NULL);
	if (s < 0) {
		fail("%s: accept: %s", what, strerror(errno));
		close(c);
		return -1;
	}
	char b[8] = "";
	if (write(c, "ping", 4) != 4 || read(s, b, 4) != 4 || memcmp(b, "ping", 4) ||
	    write(s, "pong", 4) != 4 || read(c, b, 4) != 4 || memcmp(b, "pong", 4))
		fail("%s: bytes did not cross", what);
	close(s);
	close(c);
	return 0;
}

static void check(char *ok, size_t n) {
	roundtrip(tcp4, &a4, l4, "tcp4");
	roundtrip(tcp6, &a6, l6, "tcp6");
	roundtrip(upath, &apath, lpath, "unix path");
	roundtrip(uabs, &aabs, lab, "unix abstract");
	int one = 0;
	socklen_t ol = sizeof one;
	getsockopt(tcp4, SOL_SOCKET, SO_REUSEADDR, &one, &ol);
	if (!one)
		fail("SO_REUSEADDR lost");
	if (!(fcntl(tcp4, F_GETFL) & O_NONBLOCK))
		fail("O_NONBLOCK lost on the listener");
	int c = socket(AF_INET, SOCK_DGRAM, 0);
	char b[8] = "";
	if (sendto(c, "dgram", 5, 0, (struct sockaddr *)&audp, ludp) != 5 || recv(udp, b, sizeof b, 0) != 5 || memcmp(b, "dgram", 5))
		fail("udp: datagram did not arrive");
	close(c);
	snprintf(ok, n, "port=%d", ntohs(((struct sockaddr_in *)&a4)->sin_port));
}

static int listen_on(int fam, struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out, socklen_t *outlen) {
	int fd = socket(fam, SOCK_STREAM, 0), one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, sa, len) || listen(fd, 16)) {
		perror("bind/listen");
		exit(2);
	}
	*outlen = sizeof *out;
	getsockname(fd, (struct sockaddr *)out, outlen);
	return fd;
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	tcp4 = listen_on(AF_INET, (struct sockaddr *)&s4, sizeof s4, &a4, &l4);
	fcntl(tcp4, F_SETFL, fcntl(tcp4, F_GETFL) | O_NONBLOCK);
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_addr = in6addr_loopback};
	tcp6 = listen_on(AF_INET6, (struct sockaddr *)&s6, sizeof s6, &a6, &l6);
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	snprintf(su.sun_path, sizeof su.sun_path, "%s/listen.sock", proto_dir);
	upath = listen_on(AF_UNIX, (struct sockaddr *)&su, sizeof su, &apath, &lpath);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int alen = snprintf(sa.sun_path + 1, sizeof sa.sun_path - 1, "relocate-test-%d", getpid()) + 1;
	uabs = listen_on(AF_UNIX, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + alen, &aabs, &lab);
	udp = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in su4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	bind(udp, (struct sockaddr *)&su4, sizeof su4);
	ludp = sizeof audp;
	getsockname(udp, (struct sockaddr *)&audp, &ludp);
	char extra[64];
	snprintf(extra, sizeof extra, "port=%d\n", ntohs(((struct sockaddr_in *)&a4)->sin_port));
	proto_ready(extra);
	proto_loop(check, NULL);
}
