/* files: descriptors of every supported kind, checked after restore. */
#include "proto.h"
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>

static int reg, logfd, cloexec, deleted, devnull, devzero, urandom, pipefd[2], fifo, gapfd = 100;
static char subdir[4096];
static off_t reg_pos;
static const char deleted_text[] = "contents of a file deleted while open\n";

static void check(char *ok, size_t n) {
	off_t pos = lseek(reg, 0, SEEK_CUR);
	if (pos != reg_pos)
		fail("regular file offset %lld, want %lld", (long long)pos, (long long)reg_pos);
	char b[64];
	if (pread(reg, b, 4, reg_pos) != 4 || memcmp(b, "5678", 4))
		fail("regular file content differs");
	if (write(logfd, "line\n", 5) != 5 || lseek(logfd, 0, SEEK_CUR) != lseek(logfd, 0, SEEK_END))
		fail("O_APPEND log broken");
	if (!(fcntl(logfd, F_GETFL) & O_APPEND))
		fail("O_APPEND flag lost");
	if (!(fcntl(cloexec, F_GETFD) & FD_CLOEXEC) || (fcntl(reg, F_GETFD) & FD_CLOEXEC))
		fail("close-on-exec flags changed");
	char d[128] = "";
	if (pread(deleted, d, sizeof d - 1, 0) != (ssize_t)strlen(deleted_text) || strcmp(d, deleted_text))
		fail("deleted file content differs: %s", d);
	char link[4096] = "", p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", deleted);
	readlink(p, link, sizeof link - 1);
	if (!strstr(link, "(deleted)"))
		fail("deleted file is linked as %s", link);
	if (write(devnull, "x", 1) != 1)
		fail("/dev/null not writable");
	char z[16] = {1};
	if (read(devzero, z, sizeof z) != sizeof z || z[0] || z[15])
		fail("/dev/zero does not read zeros");
	if (read(urandom, z, sizeof z) != sizeof z)
		fail("/dev/urandom unreadable");
	char buf[2048];
	ssize_t got = read(pipefd[0], buf, sizeof buf);
	int pipe_ok = got == 1000;
	for (int i = 0; pipe_ok && i < 1000; i++)
		pipe_ok = buf[i] == (char)('a' + i % 26);
	if (!pipe_ok)
		fail("pipe held %zd bytes, not the 1000 written", got);
	/* Refill, so a second check sees the same. */
	for (int i = 0; i < 1000; i++)
		buf[i] = (char)('a' + i % 26);
	write(pipefd[1], buf, 1000);
	got = read(fifo, buf, sizeof buf);
	if (got != 6 || memcmp(buf, "fifo!\n", 6))
		fail("FIFO held %zd bytes", got);
	write(fifo, "fifo!\n", 6);
	if (fcntl(gapfd, F_GETFD) < 0)
		fail("fd %d is gone", gapfd);
	char cwd[4096];
	if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, subdir))
		fail("cwd is %s, want %s", cwd, subdir);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != 200)
		fail("RLIMIT_NOFILE soft limit is %lu", (unsigned long)rl.rlim_cur);
	snprintf(ok, n, "pos=%lld", (long long)pos);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	char path[4096];
	snprintf(path, sizeof path, "%s/regular.txt", proto_dir);
	reg = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	write(reg, "0123456789", 10);
	reg_pos = lseek(reg, 5, SEEK_SET);
	snprintf(path, sizeof path, "%s/append.log", proto_dir);
	logfd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	write(logfd, "start\n", 6);
	cloexec = open("/dev/null", O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof path, "%s/deleted.txt", proto_dir);
	deleted = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	write(deleted, deleted_text, strlen(deleted_text));
	unlink(path);
	devnull = open("/dev/null", O_WRONLY);
	devzero = open("/dev/zero", O_RDONLY);
	urandom = open("/dev/urandom", O_RDONLY);
	pipe(pipefd);
	char buf[1000];
	for (int i = 0; i < 1000; i++)
		buf[i] = (char)('a' + i % 26);
	write(pipefd[1], buf, 1000);
	snprintf(path, sizeof path, "%s/fifo", proto_dir);
	mkfifo(path, 0600);
	fifo = open(path, O_RDWR);
	write(fifo, "fifo!\n", 6);
	dup2(devnull, gapfd);
	snprintf(subdir, sizeof subdir, "%s/sub", proto_dir);
	mkdir(subdir, 0755);
	chdir(subdir);
	getcwd(subdir, sizeof subdir);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = 200;
	setrlimit(RLIMIT_NOFILE, &rl);
	proto_ready(NULL);
	proto_loop(check, NULL);
}
