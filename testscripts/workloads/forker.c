/* forker: a process that forks all the time, each child exiting at once,
 * so that a freeze finds a child exiting under its hands.
 *
 * argv: DIR [MIB=8]. MIB of memory is filled with a pattern at setup; then
 * the process forks and reaps children for most of every 10 ms. ready has
 * addr= (the memory, for a control). Check: the memory's checksum is as
 * set up and the number of children reaped moves. */
#include "proto.h"
#include <sys/mman.h>
#include <sys/wait.h>

static unsigned char *mem;
static size_t size;
static unsigned long long sum;
static volatile unsigned long long reaped;

static void tick(void) {
	struct timespec start, now;
	clock_gettime(CLOCK_MONOTONIC, &start);
	do {
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid > 0 && waitpid(pid, NULL, 0) == pid)
			reaped++;
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while ((now.tv_sec - start.tv_sec) * 1000000000L + now.tv_nsec - start.tv_nsec < 8000000L);
}

static void check(char *ok, size_t n) {
	if (fnv(mem, size) != sum) {
		fail("memory checksum differs");
		return;
	}
	unsigned long long before = reaped;
	tick();
	if (reaped == before) {
		fail("no child reaped (stuck at %llu)", before);
		return;
	}
	snprintf(ok, n, "reaped=%llu", reaped);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	size = (size_t)(argc > 2 ? atol(argv[2]) : 8) << 20;
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		perror("forker: mmap");
		return 2;
	}
	for (size_t i = 0; i < size; i++)
		mem[i] = (unsigned char)(i * 31 + i / 4096);
	sum = fnv(mem, size);
	char extra[64];
	snprintf(extra, sizeof extra, "addr=%p\n", (void *)mem);
	proto_ready(extra);
	proto_loop(check, tick);
}
