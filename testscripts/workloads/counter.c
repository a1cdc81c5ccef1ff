/* counter: counts one step per loop round (every 10 ms) and writes the
 * count to DIR/count every tenth round (every 100 ms or so). A running
 * checksum of every step is kept in a second variable. The check wants the
 * counter to have moved since the last check and the checksum to match a
 * recomputation from 1 to count. ready has addr= (the checksum's address)
 * for a control run to change. */
#include "proto.h"

static volatile long count;
static volatile unsigned long long shadow = 7;
static long last_checked = -1;

static void tick(void) {
	count++;
	shadow = shadow * 31 + (unsigned long long)count;
	if (count % 10)
		return;
	char buf[64];
	snprintf(buf, sizeof buf, "%ld\n", count);
	proto_write("count", buf);
}

static void check(char *ok, size_t n) {
	unsigned long long s = 7;
	for (long i = 1; i <= count; i++)
		s = s * 31 + (unsigned long long)i;
	if (s != shadow)
		fail("checksum of %ld steps differs", count);
	if (count <= last_checked)
		fail("counter stuck at %ld", count);
	last_checked = count;
	snprintf(ok, n, "count=%ld", count);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	char extra[64];
	snprintf(extra, sizeof extra, "addr=%p\n", (void *)&shadow);
	proto_ready(extra);
	proto_loop(check, tick);
}
