/* heap: a heap-like process for migration benchmarks and pre-copy tests.
 * argv[2] = MiB of malloc'd memory (default 64), argv[3] = MiB of it that
 * a thread keeps rewriting (the hot set, default 16), argv[4] = pages the
 * thread writes per millisecond (default 64, about 256 MB/s; 0: as fast as
 * it can).
 *
 * The memory is filled with text-like compressible content (words of a
 * small vocabulary, pseudo-randomly chosen). The cold part's checksum is
 * taken at setup. Each hot page holds a stamp and content derived from it
 * and its index; the writer rewrites pages in order, under a mutex, and adds
 * each page's stamp increment to a total.
 *
 * The check recomputes the cold checksum, wants every hot page to match its
 * own stamp (a page copied at another moment than its neighbours' stamps
 * or torn mid-write fails), the stamps to add up to the total, and the
 * total to have grown since the last check (the writer runs). ready has
 * addr= (a word of the cold part) for a control run to change. */
#include "proto.h"
#include <pthread.h>
#include <stdint.h>

#define PAGE 4096

static unsigned char *mem;
static size_t memsz, hotsz, coldsz;
static long rate;
static unsigned long long cold_sum;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long total, last_total;
static unsigned long long writes;

static unsigned long long sum64(const unsigned char *p, size_t n) {
	const uint64_t *w = (const uint64_t *)p;
	unsigned long long h = 1469598103934665603ULL;
	for (size_t i = 0; i < n / 8; i++)
		h = (h ^ w[i]) * 1099511628211ULL;
	return h;
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t next(void) {
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static const char *words[] = {"the ", "process ", "memory ", "moves ", "alive ", "to ", "another ",
                              "machine ", "over ", "ssh ", "and ", "keeps ", "its ", "state ", "page ",
                              "frozen ", "for ", "a ", "few ", "milliseconds ", "while ", "copy ", "runs ",
                              "checkpoint ", "restore ", "kernel ", "thread ", "signal ", "heap ", "stack ",
                              "lorem ", "ipsum\n"};

static void fill_text(unsigned char *p, size_t n) {
	size_t i = 0;
	while (i < n) {
		const char *w = words[next() % (sizeof words / sizeof *words)];
		for (; *w && i < n; w++)
			p[i++] = (unsigned char)*w;
	}
}

/* hot page content: 8-byte stamp, then words chosen by (index, stamp). */
static void hot_fill(size_t page, uint64_t stamp) {
	unsigned char *p = mem + coldsz + page * PAGE;
	uint64_t x = (page + 1) * 0x9E3779B97F4A7C15ULL ^ stamp;
	for (size_t i = 8; i < PAGE; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t v = (x & 0x1f1f1f1f1f1f1f1fULL) | 0x6060606060606060ULL; /* lowercase-ish */
		memcpy(p + i, &v, 8);
	}
	memcpy(p, &stamp, 8);
}

static int hot_ok(size_t page) {
	unsigned char *p = mem + coldsz + page * PAGE;
	uint64_t stamp;
	memcpy(&stamp, p, 8);
	uint64_t x = (page + 1) * 0x9E3779B97F4A7C15ULL ^ stamp;
	for (size_t i = 8; i < PAGE; i += 8) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		uint64_t v = (x & 0x1f1f1f1f1f1f1f1fULL) | 0x6060606060606060ULL;
		if (memcmp(p + i, &v, 8))
			return 0;
	}
	return 1;
}

static void *writer(void *arg) {
	(void)arg;
	size_t pages = hotsz / PAGE, i = 0;
	for (;;) {
		long batch = rate > 0 ? rate : 256;
		pthread_mutex_lock(&mu);
		for (long k = 0; k < batch; k++, i = (i + 1) % pages) {
			uint64_t stamp;
			memcpy(&stamp, mem + coldsz + i * PAGE, 8);
			hot_fill(i, stamp + 1);
			total++;
		}
		writes += batch;
		pthread_mutex_unlock(&mu);
		if (rate > 0)
			msleep(1);
	}
	return NULL;
}

static void check(char *ok, size_t n) {
	pthread_mutex_lock(&mu);
	unsigned long long sum = 0, t = total;
	size_t bad = 0, pages = hotsz / PAGE;
	for (size_t i = 0; i < pages; i++) {
		uint64_t stamp;
		memcpy(&stamp, mem + coldsz + i * PAGE, 8);
		sum += stamp;
		if (!hot_ok(i) && !bad++)
			fail("hot page %zu (stamp %llu) does not match its stamp", i, (unsigned long long)stamp);
	}
	pthread_mutex_unlock(&mu);
	if (!bad && sum != t)
		fail("hot stamps add up to %llu, the total is %llu", sum, t);
	if (t <= last_total)
		fail("the writer is stuck at %llu", t);
	last_total = t;
	unsigned long long c = sum64(mem, coldsz);
	if (c != cold_sum)
		fail("cold part checksum %llx, was %llx", c, cold_sum);
	snprintf(ok, n, "cold=%zuMiB hot=%zuMiB writes=%llu", coldsz >> 20, hotsz >> 20, t);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	memsz = (size_t)(argc > 2 ? atol(argv[2]) : 64) << 20;
	hotsz = (size_t)(argc > 3 ? atol(argv[3]) : 16) << 20;
	rate = argc > 4 ? atol(argv[4]) : 64;
	if (hotsz > memsz || hotsz < PAGE) {
		fprintf(stderr, "heap: hot set must be 1 page to the whole size\n");
		return 2;
	}
	coldsz = memsz - hotsz;
	/* Page-aligned so that a hot page is a whole page. */
	unsigned char *raw = malloc(memsz + PAGE);
	if (!raw) {
		perror("malloc");
		return 2;
	}
	mem = (unsigned char *)(((uintptr_t)raw + PAGE - 1) & ~(uintptr_t)(PAGE - 1));
	fill_text(mem, coldsz);
	cold_sum = sum64(mem, coldsz);
	for (size_t i = 0; i < hotsz / PAGE; i++)
		hot_fill(i, 0);
	pthread_t t;
	if (pthread_create(&t, NULL, writer, NULL)) {
		fprintf(stderr, "heap: pthread_create failed\n");
		return 2;
	}
	char extra[64];
	snprintf(extra, sizeof extra, "addr=%p\n", (void *)(mem + coldsz / 2));
	proto_ready(extra);
	proto_loop(check, NULL);
}
