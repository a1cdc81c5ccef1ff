/* tree: a parent with three children: one in its own process group, one
 * in a second session with a grandchild of its own, one left as is, and a
 * fourth that exited with status 7 and is not reaped until DIR/reap
 * appears (then DIR/reaped says what waitpid reported). Each
 * descendant rewrites DIR/status-NAME every 10 ms with its ids and a
 * counter. The parent's check (the usual protocol) wants every process
 * still counting with the same pid, ppid, process group and session. */
#include "proto.h"
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#define N 4
static const char *names[N] = {"plain", "group", "session", "grandchild"};
static pid_t pids[N], ppids[N], pgids[N], sids[N];
static long seen[N];
static pid_t zombie;

static void tick(void) {
	char path[4096];
	snprintf(path, sizeof path, "%s/reap", proto_dir);
	if (!zombie || access(path, F_OK))
		return;
	int st = 0;
	pid_t got = waitpid(zombie, &st, WNOHANG);
	char out[128];
	snprintf(out, sizeof out, "pid=%d exited=%d exit=%d\n", got, WIFEXITED(st), WEXITSTATUS(st));
	proto_write("reaped", out);
	zombie = 0;
}

static void child_loop(const char *name) {
	char path[4096], tmp[4200], buf[256];
	snprintf(path, sizeof path, "%s/status-%s", proto_dir, name);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	for (long n = 1;; n++) {
		snprintf(buf, sizeof buf, "%d %d %d %d %ld\n", getpid(), getppid(), getpgrp(), getsid(0), n);
		FILE *f = fopen(tmp, "w");
		if (f) {
			fputs(buf, f);
			fclose(f);
			rename(tmp, path);
		}
		msleep(10);
	}
}

static int read_status(int i, pid_t *v, long *n) {
	char path[4096];
	snprintf(path, sizeof path, "%s/status-%s", proto_dir, names[i]);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int ok = fscanf(f, "%d %d %d %d %ld", &v[0], &v[1], &v[2], &v[3], n) == 5;
	fclose(f);
	return ok;
}

static void check(char *ok, size_t n) {
	for (int i = 0; i < N; i++) {
		pid_t v[4];
		long c = 0, first = -1;
		for (int t = 0; t < 500; t++) { /* up to 5 s for the counter to move */
			if (read_status(i, v, &c) && first < 0)
				first = c;
			if (first >= 0 && c > first)
				break;
			msleep(10);
		}
		if (first < 0 || c <= first || c <= seen[i]) {
			fail("%s is not counting", names[i]);
			continue;
		}
		seen[i] = c;
		if (v[0] != pids[i] || v[1] != ppids[i] || v[2] != pgids[i] || v[3] != sids[i])
			fail("%s: pid/ppid/pgid/sid %d/%d/%d/%d, want %d/%d/%d/%d", names[i], v[0], v[1], v[2], v[3],
			     pids[i], ppids[i], pgids[i], sids[i]);
	}
	if (getsid(0) != getpid())
		fail("parent lost its session");
	snprintf(ok, n, "processes=%d", N + 1);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	setsid();
	pid_t me = getpid();
	if ((pids[0] = fork()) == 0)
		child_loop(names[0]);
	ppids[0] = me, pgids[0] = me, sids[0] = me;
	if ((pids[1] = fork()) == 0) {
		setpgid(0, 0);
		child_loop(names[1]);
	}
	setpgid(pids[1], pids[1]);
	ppids[1] = me, pgids[1] = pids[1], sids[1] = me;
	int p[2];
	pipe(p);
	if ((pids[2] = fork()) == 0) {
		setsid();
		pid_t g = fork();
		if (g == 0)
			child_loop(names[3]);
		write(p[1], &g, sizeof g);
		child_loop(names[2]);
	}
	read(p[0], &pids[3], sizeof pids[3]);
	close(p[0]);
	close(p[1]);
	ppids[2] = me, pgids[2] = pids[2], sids[2] = pids[2];
	ppids[3] = pids[2], pgids[3] = pids[2], sids[3] = pids[2];
	if ((zombie = fork()) == 0)
		_exit(7);
	for (int i = 0; i < N; i++) {
		pid_t v[4];
		long c;
		while (!read_status(i, v, &c))
			msleep(5);
	}
	char extra[64];
	snprintf(extra, sizeof extra, "zombie=%d\n", zombie);
	proto_ready(extra);
	proto_loop(check, tick);
}
