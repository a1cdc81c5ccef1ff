/* sharedmem: a parent and a forked child share memory three ways, as real
 * servers and Python's multiprocessing do: MAP_SHARED|MAP_ANONYMOUS (4 MiB,
 * a pattern written in some pages, others never touched), a file in
 * /dev/shm mapped shared and unlinked (what sem_open leaves), and a memfd
 * mapped shared and closed. The child echoes, in each region, the token
 * the parent writes there and counts its rounds.
 *
 * The check: in each region the parent writes a new token and wants the
 * child's echo within 3 s (two copies instead of one shared object would
 * never answer), the child's round count moves, and the pattern's checksum
 * is intact. ready has addr= (the anonymous region) for a control run to
 * change the pattern. */
#include "proto.h"
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>

#define ANON_SIZE (4 << 20)

struct region {
	volatile long token, echo, rounds;
	unsigned long long sum;
	char pattern[];
};

static struct region *regions[3];
static const char *names[3] = {"anonymous", "deleted /dev/shm file", "memfd"};
static size_t sizes[3] = {ANON_SIZE, 1 << 16, 1 << 20};
static long last_rounds[3];

static unsigned long long checksum(struct region *r, size_t size) {
	unsigned long long s = 7;
	size_t n = size - sizeof *r;
	/* Every 4th page holds data; the rest is never touched. */
	for (size_t i = 0; i < n; i += 4 * 4096)
		for (size_t k = i; k < i + 4096 && k < n; k++)
			s = s * 131 + (unsigned char)r->pattern[k];
	return s;
}

static void fill(struct region *r, size_t size, int seed) {
	size_t n = size - sizeof *r;
	for (size_t i = 0; i < n; i += 4 * 4096)
		for (size_t k = i; k < i + 4096 && k < n; k++)
			r->pattern[k] = (char)(k * 7 + seed + k / 4096);
	r->sum = checksum(r, size);
}

static void *map_fd(int fd, size_t size) {
	if (ftruncate(fd, size))
		fail("ftruncate: %s", strerror(errno));
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return p;
}

static void child_loop(void) {
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	for (;;) {
		for (int i = 0; i < 3; i++) {
			regions[i]->rounds++;
			if (regions[i]->echo != regions[i]->token)
				regions[i]->echo = regions[i]->token;
		}
		msleep(10);
	}
}

static void check(char *ok, size_t n) {
	for (int i = 0; i < 3; i++) {
		struct region *r = regions[i];
		if (checksum(r, sizes[i]) != r->sum) {
			fail("%s region: pattern checksum differs", names[i]);
			return;
		}
		long token = r->token + 1 + (random() & 0xffff);
		r->token = token;
		int waited = 0;
		while (r->echo != token && waited < 300) {
			msleep(10);
			waited++;
		}
		if (r->echo != token) {
			fail("%s region: the child did not echo token %ld (memory not shared?)", names[i], token);
			return;
		}
		if (r->rounds <= last_rounds[i]) {
			fail("%s region: the child's rounds are stuck at %ld", names[i], r->rounds);
			return;
		}
		last_rounds[i] = r->rounds;
	}
	snprintf(ok, n, "3 regions shared, rounds %ld", regions[0]->rounds);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	regions[0] = mmap(NULL, ANON_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char shm[64];
	snprintf(shm, sizeof shm, "/dev/shm/relocate-sharedmem-%d", getpid());
	int fd = open(shm, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0) {
		perror(shm);
		return 2;
	}
	regions[1] = map_fd(fd, sizes[1]);
	unlink(shm);
	regions[2] = map_fd(memfd_create("sharedmem", MFD_CLOEXEC), sizes[2]);
	for (int i = 0; i < 3; i++) {
		if (regions[i] == MAP_FAILED) {
			perror("mmap");
			return 2;
		}
		fill(regions[i], sizes[i], i);
	}
	pid_t child = fork();
	if (child == 0)
		child_loop();
	char extra[64];
	snprintf(extra, sizeof extra, "addr=%p\nchild=%d\n", (void *)regions[0]->pattern, child);
	proto_ready(extra);
	proto_loop(check, NULL);
}
