/* udpserver: a UDP socket bound to 127.0.0.1 (or argv[2]) that reads
 * nothing until asked: at a checkpoint the datagrams sent to it wait in
 * its receive queue. The check reads every waiting datagram, answers each
 * sender with "re:" and the datagram, and reports them in order as
 * "got N: DATA@SENDER|...". */
#include "proto.h"
#include "inet.h"

static int fd;

static void check(char *ok, size_t n) {
	char buf[256], line[1900] = "";
	int count = 0;
	for (;;) {
		struct sockaddr_in from;
		socklen_t flen = sizeof from;
		ssize_t r = recvfrom(fd, buf, sizeof buf - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &flen);
		if (r < 0)
			break;
		buf[r] = 0;
		count++;
		char reply[300];
		int rl = snprintf(reply, sizeof reply, "re:%s", buf);
		if (sendto(fd, reply, rl, 0, (struct sockaddr *)&from, flen) != rl)
			fail("reply to datagram %d: %s", count, strerror(errno));
		char who[64];
		inet_ntop(AF_INET, &from.sin_addr, who, sizeof who);
		size_t used = strlen(line);
		if (used < sizeof line - 400)
			snprintf(line + used, sizeof line - used, "%s%.255s@%.63s:%d", count > 1 ? "|" : "", buf, who, ntohs(from.sin_port));
	}
	snprintf(ok, n, "got %d: %s", count, line);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	fd = inet_ready(SOCK_DGRAM, argc, argv);
	proto_loop(check, NULL);
}
