/* vforker: a parent that waits in vfork() for a child that stopped itself
 * before it could exec: the parent sits in the kernel, where no ptrace
 * interrupt reaches it, until the child runs on (SIGCONT) and exits. A
 * freeze must give up on it with a reason, not wait for ever.
 *
 * ready (written by the child, for its parent): pid= the parent, child=;
 * the parent writes it again (back=1) once vfork returned.
 * Check: the parent has come back from vfork and counts. */
#include "proto.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

static volatile long ticks, last;

static void tick(void) { ticks++; }

static void check(char *ok, size_t n) {
	if (ticks <= last)
		fail("stuck at %ld", ticks);
	last = ticks;
	snprintf(ok, n, "ticks=%ld", ticks);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	pid_t parent = getpid();
	pid_t c = vfork();
	if (c < 0) {
		perror("vforker: vfork");
		return 2;
	}
	if (c == 0) {
		/* Only system calls here: the memory is the parent's. */
		char buf[128], tmp[4096], path[4096];
		int len = snprintf(buf, sizeof buf, "pid=%d\nchild=%d\n", parent, getpid());
		snprintf(tmp, sizeof tmp, "%s/ready.tmp", argv[1]);
		snprintf(path, sizeof path, "%s/ready", argv[1]);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, buf, len) != len)
			_exit(2);
		close(fd);
		rename(tmp, path);
		raise(SIGSTOP);
		_exit(0);
	}
	int st;
	waitpid(c, &st, 0);
	proto_ready("back=1\n"); /* back from vfork */
	proto_loop(check, tick);
}
