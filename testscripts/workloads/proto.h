/* The self-check protocol every workload follows.
 *
 * argv[1] is a state directory. After setting up, a workload writes
 * DIR/ready ("pid=N" plus its own key=value lines), then polls for DIR/check
 * every 10 ms. When DIR/check appears it runs its self-check, writes
 * DIR/verdict ("OK ..." or "FAIL ...") atomically and removes DIR/check.
 * It never exits on a failed check: the test reads the verdict. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *proto_dir;
static char proto_msg[4096];
static int proto_failed;

/* fail records the first failure of a check round. */
static void fail(const char *fmt, ...) {
	if (proto_failed++)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(proto_msg, sizeof proto_msg, fmt, ap);
	va_end(ap);
}

static void proto_write(const char *name, const char *text) {
	char tmp[4096], path[4096];
	snprintf(tmp, sizeof tmp, "%s/%s.tmp", proto_dir, name);
	snprintf(path, sizeof path, "%s/%s", proto_dir, name);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		perror(tmp);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

static void proto_ready(const char *extra) {
	char buf[4096];
	snprintf(buf, sizeof buf, "pid=%d\n%s", getpid(), extra ? extra : "");
	proto_write("ready", buf);
}

static void msleep(long ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* proto_scaled stretches one of a workload's own bounds, in ms, by
 * RELOCATE_WAIT_SCALE as the tests stretch theirs (an emulated guest runs
 * some ten times slower). */
__attribute__((unused)) static int proto_scaled(int ms) {
	const char *s = getenv("RELOCATE_WAIT_SCALE");
	int n = s ? atoi(s) : 1;
	return n > 1 && n < 1000 ? ms * n : ms;
}

/* proto_loop polls for DIR/check forever; tick runs every round. */
static void proto_loop(void (*check)(char *ok, size_t n), void (*tick)(void)) {
	char path[4096];
	snprintf(path, sizeof path, "%s/check", proto_dir);
	for (;;) {
		if (tick)
			tick();
		if (access(path, F_OK) == 0) {
			char ok[2048] = "";
			proto_failed = 0;
			check(ok, sizeof ok);
			char out[8192];
			if (proto_failed)
				snprintf(out, sizeof out, "FAIL %s\n", proto_msg);
			else
				snprintf(out, sizeof out, "OK %s\n", ok);
			proto_write("verdict", out);
			unlink(path);
		}
		msleep(10);
	}
}

static void proto_init(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: %s STATEDIR [args]\n", argv[0]);
		exit(2);
	}
	/* Absolute, so that workloads may chdir. */
	proto_dir = realpath(argv[1], NULL);
	if (!proto_dir) {
		perror(argv[1]);
		exit(2);
	}
}

/* fnv1a hashes memory for checksums. */
__attribute__((unused)) static unsigned long long fnv(const void *p, size_t n) {
	const unsigned char *b = p;
	unsigned long long h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}
