/* execer: a process that keeps exec'ing itself, for a pre-copy that must
 * not restore what the process had before its last exec.
 *
 * argv: DIR [MIB=16] [EVERY_MS=100] [GENERATIONS=30] [THREADS=1] [GEN=0]. Each
 * generation maps MIB at the same fixed address, writes about half of its
 * pages (which ones, and what, depends on the generation), then after
 * EVERY_MS execs itself as the next generation; the last one stays. Every
 * generation after the first has the same PID and mapping address as the
 * one before, and different contents: a restore that kept pages copied
 * before an exec shows the old generation's bytes in a page this one left
 * untouched (zero) or wrote differently. The last page is never written.
 * THREADS threads keep rewriting the filled pages with what they hold, so
 * that a pre-copy goes on with rounds (and sees execs) until its round
 * limit; the exec kills them, each time.
 *
 * ready (by generation 0): addr= the region, zero= its last page.
 * final appears once the last generation has filled its pages.
 * Check: every page this generation filled holds its pattern, every other
 * page is zero. */
#include "proto.h"
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096
#define REGION ((void *)0x5a0000000000UL)

static size_t size, pages, filled;
static long every, gens, gen, threads;
static unsigned char *mem;
static struct timespec born;
static char **args;

static int wanted(size_t page) {
	uint64_t x = (page + 1) * 0x9E3779B97F4A7C15ULL ^ (uint64_t)gen * 0xC2B2AE3D27D4EB4FULL;
	return page + 1 < pages && (x >> 29) % 2 == 0;
}

static uint64_t word(size_t page) { return (uint64_t)gen << 40 | page; }

static void fill(void) {
	for (; filled < pages; filled++) {
		if (!wanted(filled))
			continue;
		uint64_t *p = (uint64_t *)(mem + filled * PAGE);
		for (size_t k = 0; k < PAGE / 8; k++)
			p[k] = word(filled);
	}
}

/* rewrite keeps the filled pages written, with the same contents. */
static void *rewrite(void *arg) {
	(void)arg;
	for (;;) {
		for (size_t i = 0; i < filled; i++) {
			if (wanted(i))
				__atomic_store_n((uint64_t *)(mem + i * PAGE), word(i), __ATOMIC_RELAXED);
		}
	}
	return NULL;
}

static void check(char *ok, size_t n) {
	for (size_t i = 0; i < pages; i++) {
		const uint64_t *p = (const uint64_t *)(mem + i * PAGE);
		uint64_t want = i < filled && wanted(i) ? word(i) : 0;
		for (size_t k = 0; k < PAGE / 8; k++) {
			if (p[k] != want) {
				fail("generation %ld: page %zu word %zu is %#llx, want %#llx", gen, i, k,
				     (unsigned long long)p[k], (unsigned long long)want);
				return;
			}
		}
	}
	snprintf(ok, n, "generation=%ld filled=%zu", gen, filled);
}

static void tick(void) {
	if (gen + 1 >= gens)
		return;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long ms = (now.tv_sec - born.tv_sec) * 1000 + (now.tv_nsec - born.tv_nsec) / 1000000;
	if (ms < every)
		return;
	char next[32];
	snprintf(next, sizeof next, "%ld", gen + 1);
	args[6] = next;
	execv("/proc/self/exe", args);
	perror("execer: exec");
	exit(2);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	size = (size_t)(argc > 2 ? atol(argv[2]) : 16) << 20;
	/* Not scaled in a slow guest: the more execs fall in a dump, the
	 * better, and every moment of the process passes its check. */
	every = argc > 3 ? atol(argv[3]) : 100;
	gens = argc > 4 ? atol(argv[4]) : 30;
	threads = argc > 5 ? atol(argv[5]) : 1;
	gen = argc > 6 ? atol(argv[6]) : 0;
	if (size < 2 * PAGE || every < 1 || gens < 1 || threads < 1 || threads > 64) {
		fprintf(stderr, "execer: bad arguments\n");
		return 2;
	}
	pages = size / PAGE;
	mem = mmap(REGION, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (mem != REGION) {
		perror("execer: mmap");
		return 2;
	}
	char *a[] = {argv[0], argv[1], NULL, NULL, NULL, NULL, NULL, NULL};
	char sz[32], ev[32], gs[32], th[32];
	snprintf(sz, sizeof sz, "%zu", size >> 20);
	snprintf(ev, sizeof ev, "%ld", every);
	snprintf(gs, sizeof gs, "%ld", gens);
	snprintf(th, sizeof th, "%ld", threads);
	a[2] = sz, a[3] = ev, a[4] = gs, a[5] = th;
	args = a;
	fill();
	for (long i = 0; i < threads; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, rewrite, NULL) != 0) {
			fprintf(stderr, "execer: pthread_create failed\n");
			return 2;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &born);
	if (gen == 0) {
		char extra[256];
		snprintf(extra, sizeof extra, "addr=%p\nzero=%p\n", (void *)mem, (void *)(mem + size - PAGE));
		proto_ready(extra);
	}
	if (gen + 1 >= gens)
		proto_write("final", "");
	proto_loop(check, tick);
}
