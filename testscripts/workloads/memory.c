/* memory: every kind of mapping a checkpoint must bring back, checksummed.
 * argv[2] = MiB of heap-like data (default 64). */
#include "proto.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

struct node {
	struct node *next;
	long id;
	char text[48];
};

static struct node *nodes;
static size_t nnodes;
static unsigned char *big, *anon, *priv, *shared, *ro, *sparse, *stackcopy;
static size_t bigsz, anonsz = 1 << 20, filesz = 64 << 10, sparsesz = 16 << 20;
static const size_t reserve = 64ULL << 30;
static unsigned long long sum_big, sum_anon, sum_priv, sum_ro, sum_sparse, sum_stack;
static unsigned long long heap_sum = 0; /* heap-resident copy below */
static unsigned long long *heap_sums;
static char maps_before[65536], cmdline_before[4096];
static int sharedfd;

static size_t readfile(const char *path, char *buf, size_t n) {
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	size_t got = 0;
	ssize_t r;
	while (got < n - 1 && (r = read(fd, buf + got, n - 1 - got)) > 0)
		got += r;
	close(fd);
	buf[got] = 0;
	return got;
}

static unsigned long long walk(void) {
	unsigned long long s = 0;
	struct node *p = &nodes[0];
	for (size_t i = 0; i < nnodes; i++) {
		s = s * 1315423911ULL + (unsigned long long)p->id + p->text[3];
		p = p->next;
	}
	return s;
}

static unsigned long long deep(int n, unsigned char *out) {
	volatile unsigned char frame[4096];
	for (int i = 0; i < 4096; i++)
		frame[i] = (unsigned char)(n * 7 + i);
	if (n == 0) {
		for (int i = 0; i < 4096; i++)
			out[i] = frame[i];
		return fnv((const void *)frame, 4096);
	}
	return deep(n - 1, out) + frame[n % 4096];
}

static unsigned long long walk_sum;

static void check(char *ok, size_t n) {
	if (fnv(big, bigsz) != sum_big)
		fail("big heap buffer checksum differs");
	if (walk() != walk_sum)
		fail("linked structure differs");
	if (fnv(anon, anonsz) != sum_anon)
		fail("private anonymous mapping differs");
	if (fnv(priv, filesz) != sum_priv)
		fail("modified private file mapping differs");
	if (fnv(ro, 4096) != sum_ro)
		fail("read-only mapping differs");
	if (fnv(sparse, sparsesz) != sum_sparse)
		fail("sparse region differs");
	if (fnv(stackcopy, 4096) != sum_stack)
		fail("copy of deep stack frame differs");
	if (heap_sums[0] != sum_big || heap_sums[1] != walk_sum)
		fail("checksums kept on the heap differ");
	char disk[65536];
	if (pread(sharedfd, disk, filesz, 0) != (ssize_t)filesz || memcmp(disk, shared, filesz))
		fail("shared file mapping and file content differ");
	char maps[65536], cmd[4096];
	readfile("/proc/self/maps", maps, sizeof maps);
	if (strcmp(maps, maps_before))
		fail("/proc/self/maps changed:\n--- before\n%s--- after\n%s", maps_before, maps);
	readfile("/proc/self/cmdline", cmd, sizeof cmd);
	if (strcmp(cmd, cmdline_before) || !getenv("MEMORY_MARKER"))
		fail("cmdline or environment changed");
	/* Writing must still work everywhere it worked before. */
	shared[1]++;
	msync(shared, filesz, MS_SYNC);
	if (pread(sharedfd, disk, 2, 0) != 2 || disk[1] != (char)shared[1])
		fail("write through shared mapping did not reach the file");
	snprintf(ok, n, "big=%zuMiB nodes=%zu", bigsz >> 20, nnodes);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	size_t mib = argc > 2 ? strtoul(argv[2], 0, 10) : 64;
	bigsz = mib << 20;
	big = malloc(bigsz);
	unsigned long x = 88172645463325252UL;
	for (size_t i = 0; i < bigsz; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t v = (i / 8) % 5 == 0 ? x & 0xff : (i / 8) % 5 == 1 ? (uint64_t)(uintptr_t)big + (x & 0xfff8) : 0x2020656c707061ULL;
		memcpy(big + i, &v, 8);
	}
	nnodes = 100000;
	nodes = malloc(nnodes * sizeof *nodes);
	for (size_t i = 0; i < nnodes; i++) {
		nodes[i].next = &nodes[(i * 7919 + 1) % nnodes];
		nodes[i].id = (long)i * 31;
		snprintf(nodes[i].text, sizeof nodes[i].text, "node %zu", i);
	}
	/* Guard pages around a private anonymous region. */
	unsigned char *g = mmap(0, anonsz + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	anon = g + 4096;
	mprotect(anon, anonsz, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < anonsz; i += 64)
		anon[i] = (unsigned char)(i >> 6);
	/* A private file mapping with some pages modified. */
	char path[4096];
	snprintf(path, sizeof path, "%s/private.dat", proto_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	for (size_t i = 0; i < filesz; i++)
		write(fd, "abcdefgh" + i % 8, 1);
	priv = mmap(0, filesz, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	priv[5] = 'X', priv[4096 * 3 + 9] = 'Y';
	/* A shared file mapping written through. */
	snprintf(path, sizeof path, "%s/shared.dat", proto_dir);
	sharedfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	ftruncate(sharedfd, filesz);
	shared = mmap(0, filesz, PROT_READ | PROT_WRITE, MAP_SHARED, sharedfd, 0);
	memset(shared, 's', filesz);
	/* Read-only and executable regions. */
	ro = mmap(0, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(ro, 'r', 4096);
	mprotect(ro, 4096, PROT_READ);
	mprotect(ro + 4096, 4096, PROT_READ | PROT_EXEC);
	/* A huge sparse reservation with a few touched pages. */
	unsigned char *res = mmap(0, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	sparse = res + (1ULL << 30);
	mprotect(sparse, sparsesz, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < sparsesz; i += 1 << 20)
		sparse[i + 17] = (unsigned char)(i >> 20) + 1;
	stackcopy = malloc(4096);
	sum_stack = fnv(stackcopy, 0) ^ deep(64, stackcopy);
	sum_stack = fnv(stackcopy, 4096);
	sum_big = fnv(big, bigsz), walk_sum = walk(), sum_anon = fnv(anon, anonsz);
	sum_priv = fnv(priv, filesz), sum_ro = fnv(ro, 4096), sum_sparse = fnv(sparse, sparsesz);
	heap_sums = malloc(2 * sizeof *heap_sums);
	heap_sums[0] = sum_big, heap_sums[1] = walk_sum;
	(void)heap_sum;
	readfile("/proc/self/maps", maps_before, sizeof maps_before);
	readfile("/proc/self/cmdline", cmdline_before, sizeof cmdline_before);
	char extra[256];
	snprintf(extra, sizeof extra, "addr=%p\n", (void *)(big + bigsz / 2));
	proto_ready(extra);
	proto_loop(check, NULL);
}
