/* pipewriter: writes one numbered line ("N\n", N = 1, 2, ...) to stdout
 * every loop round (10 ms), one write(2) per line, whatever stdout is (a
 * pipe to a process outside the checkpoint, typically). SIGPIPE is
 * ignored. The check wants lines to have been written since the last
 * check and every write since then to have succeeded whole. */
#include <signal.h>
#include "proto.h"

static long count, last_checked, failed_at;
static int failed_errno;

static void tick(void) {
	char buf[32];
	int n = snprintf(buf, sizeof buf, "%ld\n", count + 1);
	ssize_t w = write(1, buf, n);
	if (w != n) {
		if (!failed_at) {
			failed_at = count + 1;
			failed_errno = w < 0 ? errno : 0;
		}
		return;
	}
	count++;
}

static void check(char *ok, size_t n) {
	if (failed_at)
		fail("writing line %ld to stdout: %s", failed_at, failed_errno ? strerror(failed_errno) : "short write");
	else if (count <= last_checked)
		fail("no line written since %ld", last_checked);
	failed_at = 0;
	last_checked = count;
	snprintf(ok, n, "lines=%ld", count);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	proto_ready(NULL);
	proto_loop(check, tick);
}
