/* files: descriptors of every supported kind, checked after restore.
 *
 * At setup: DIR/regular.txt ("0123456789") open O_RDWR at offset 5; an
 * O_APPEND log; an O_CLOEXEC descriptor; DIR/deleted.txt written and
 * unlinked while open; /dev/null, /dev/zero, /dev/urandom; a pipe holding
 * 1000 bytes, both ends open, and a FIFO in DIR opened O_RDWR holding 6
 * bytes, both read ends O_NONBLOCK; /dev/null again at fd 100 (a gap in the
 * numbers); cwd DIR/sub; RLIMIT_NOFILE's soft limit lowered to 200; a
 * memfd "relocate-files" holding 16 bytes and sealed against writes,
 * growing and shrinking, and a memfd made without sealing.
 *
 * The check wants: the offset still 5 and read() going on from there with
 * "56"; appends landing at the end; the close-on-exec flags as they were;
 * the deleted file's content, its /proc/self/fd link ending in
 * " (deleted)"; zeros from /dev/zero; exactly the 1000 bytes from the pipe
 * and the 6 from the FIFO (put back afterwards for the next check); fd 100;
 * the cwd; the rlimit; each memfd's name, contents and seals (and a
 * write to the sealed one refused). A control run can change regular.txt
 * from outside. */
#include "proto.h"
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>

static int memfd_sealed, memfd_plain;
static int reg, logfd, cloexec, deleted, devnull, devzero, urandom, pipefd[2], fifo, gapfd = 100;
static char subdir[4096];
static off_t reg_pos;
static const char deleted_text[] = "contents of a file deleted while open\n";

static void check(char *ok, size_t n) {
	off_t pos = lseek(reg, 0, SEEK_CUR);
	if (pos != reg_pos)
		fail("regular file offset %lld, want %lld", (long long)pos, (long long)reg_pos);
	char b[64] = "";
	ssize_t got = read(reg, b, 2);
	if (got != 2 || memcmp(b, "56", 2) || lseek(reg, 0, SEEK_CUR) != reg_pos + 2)
		fail("regular file: read at offset %lld gave %zd bytes \"%.2s\"", (long long)pos, got, b);
	lseek(reg, reg_pos, SEEK_SET);
	if (pread(reg, b, 10, 0) != 10 || memcmp(b, "0123456789", 10))
		fail("regular file content differs: %.10s", b);
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
	if (!(fcntl(pipefd[0], F_GETFL) & O_NONBLOCK) || !(fcntl(fifo, F_GETFL) & O_NONBLOCK))
		fail("O_NONBLOCK lost on the pipe or the FIFO");
	got = read(pipefd[0], buf, sizeof buf);
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
	struct stat st;
	if (fstat(gapfd, &st) || !S_ISCHR(st.st_mode))
		fail("fd %d is gone or no longer /dev/null", gapfd);
	char cwd[4096];
	if (!getcwd(cwd, sizeof cwd) || strcmp(cwd, subdir))
		fail("cwd is %s, want %s", cwd, subdir);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != 200)
		fail("RLIMIT_NOFILE soft limit is %lu", (unsigned long)rl.rlim_cur);
	char mb[32] = "";
	snprintf(p, sizeof p, "/proc/self/fd/%d", memfd_sealed);
	memset(link, 0, sizeof link);
	readlink(p, link, sizeof link - 1);
	if (strncmp(link, "/memfd:relocate-files", 21))
		fail("memfd is linked as %s", link);
	if (pread(memfd_sealed, mb, 16, 0) != 16 || memcmp(mb, "sealed contents\n", 16))
		fail("memfd contents differ: %.16s", mb);
	int want = F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK;
	if (fcntl(memfd_sealed, F_GET_SEALS) != want)
		fail("memfd seals %#x, want %#x", fcntl(memfd_sealed, F_GET_SEALS), want);
	if (pwrite(memfd_sealed, "x", 1, 0) != -1 || errno != EPERM)
		fail("a write to the sealed memfd was not refused");
	if (fcntl(memfd_plain, F_GET_SEALS) != F_SEAL_SEAL)
		fail("unsealable memfd has seals %#x", fcntl(memfd_plain, F_GET_SEALS));
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
	memfd_sealed = memfd_create("relocate-files", MFD_ALLOW_SEALING);
	write(memfd_sealed, "sealed contents\n", 16);
	fcntl(memfd_sealed, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK);
	memfd_plain = memfd_create("plain", 0);
	write(memfd_plain, "plain", 5);
	devnull = open("/dev/null", O_WRONLY);
	devzero = open("/dev/zero", O_RDONLY);
	urandom = open("/dev/urandom", O_RDONLY);
	if (pipe(pipefd) || fcntl(pipefd[0], F_SETFL, O_NONBLOCK))
		exit(2);
	char buf[1000];
	for (int i = 0; i < 1000; i++)
		buf[i] = (char)('a' + i % 26);
	write(pipefd[1], buf, 1000);
	snprintf(path, sizeof path, "%s/fifo", proto_dir);
	mkfifo(path, 0600);
	fifo = open(path, O_RDWR | O_NONBLOCK);
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
