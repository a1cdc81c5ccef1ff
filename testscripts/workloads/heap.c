/* heap: a heap-like process for migration benchmarks and pre-copy tests.
 * argv[2] = MiB of malloc'd memory (default 64), argv[3] = MiB of it that
 * a thread keeps rewriting (the hot set, default 16), argv[4] = pages the
 * thread writes per millisecond (default 64, about 256 MB/s; 0: as fast as
 * it can), argv[5] = N > 0 to churn mappings: every N ms another thread
 * replaces one of 8 separately mapped 256 KiB slots with a fresh mapping
 * at the same address, filling a seed-dependent number of its pages (the
 * rest stays zero, never touched).
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
#include <sys/mman.h>

#define PAGE 4096

static unsigned char *mem;
static size_t memsz, hotsz, coldsz;
static long rate;
static unsigned long long cold_sum;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long total, last_total;
static unsigned long long writes;
static int churn;
#define SLOTS 8
#define SLOTSZ (256 << 10)
static unsigned char *slots; /* SLOTS slots of SLOTSZ */
static uint64_t slot_seed[SLOTS];
static unsigned long long churned;

/* slot_fill: the first (seed % 64) + 1 pages hold words of the seed. */
static void slot_fill(int i, uint64_t seed) {
	uint64_t *w = (uint64_t *)(slots + (size_t)i * SLOTSZ);
	size_t n = ((seed % 64) + 1) * PAGE / 8;
	for (size_t k = 0; k < n; k++)
		w[k] = seed * 0x9E3779B97F4A7C15ULL + k;
}

static int slot_ok(int i) {
	uint64_t seed = slot_seed[i], *w = (uint64_t *)(slots + (size_t)i * SLOTSZ);
	size_t n = ((seed % 64) + 1) * PAGE / 8;
	for (size_t k = 0; k < SLOTSZ / 8; k++)
		if (w[k] != (k < n ? seed * 0x9E3779B97F4A7C15ULL + k : 0))
			return 0;
	return 1;
}

static void *churner(void *arg) {
	(void)arg;
	for (uint64_t n = 1;; n++) {
		int i = (int)(n % SLOTS);
		pthread_mutex_lock(&mu);
		void *at = slots + (size_t)i * SLOTSZ;
		if (mmap(at, SLOTSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != at) {
			perror("mmap");
			exit(2);
		}
		slot_seed[i] = n * 0x2545F4914F6CDD1DULL ^ (n >> 3);
		slot_fill(i, slot_seed[i]);
		churned++;
		pthread_mutex_unlock(&mu);
		msleep(churn);
	}
	return NULL;
}

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
	int badslot = -1;
	for (int i = 0; churn && i < SLOTS; i++)
		if (badslot < 0 && !slot_ok(i))
			badslot = i;
	unsigned long long ch = churned;
	pthread_mutex_unlock(&mu);
	if (badslot >= 0)
		fail("churned slot %d does not hold what seed %llx made", badslot, (unsigned long long)slot_seed[badslot]);
	if (!bad && sum != t)
		fail("hot stamps add up to %llu, the total is %llu", sum, t);
	if (t <= last_total)
		fail("the writer is stuck at %llu", t);
	last_total = t;
	unsigned long long c = sum64(mem, coldsz);
	if (c != cold_sum)
		fail("cold part checksum %llx, was %llx", c, cold_sum);
	snprintf(ok, n, "cold=%zuMiB hot=%zuMiB writes=%llu churned=%llu", coldsz >> 20, hotsz >> 20, t, ch);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	memsz = (size_t)(argc > 2 ? atol(argv[2]) : 64) << 20;
	hotsz = (size_t)(argc > 3 ? atol(argv[3]) : 16) << 20;
	rate = argc > 4 ? atol(argv[4]) : 64;
	churn = argc > 5 ? atoi(argv[5]) : 0;
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
	slots = mmap(NULL, SLOTS * SLOTSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (slots == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	for (int i = 0; i < SLOTS; i++) {
		slot_seed[i] = next();
		slot_fill(i, slot_seed[i]);
	}
	pthread_t t;
	if (churn && pthread_create(&t, NULL, churner, NULL)) {
		fprintf(stderr, "heap: pthread_create failed\n");
		return 2;
	}
	if (pthread_create(&t, NULL, writer, NULL)) {
		fprintf(stderr, "heap: pthread_create failed\n");
		return 2;
	}
	/* Ready once the writer runs: on a slow machine (a TCG guest) the
	 * first check could otherwise come before its first write. */
	for (;;) {
		pthread_mutex_lock(&mu);
		unsigned long long t = total;
		pthread_mutex_unlock(&mu);
		if (t > 0)
			break;
		msleep(1);
	}
	char extra[64];
	snprintf(extra, sizeof extra, "addr=%p\n", (void *)(mem + coldsz / 2));
	proto_ready(extra);
	proto_loop(check, NULL);
}
