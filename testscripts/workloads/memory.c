/* memory: every kind of mapping a checkpoint must bring back, checksummed.
 * argv[2] = MiB of heap-like data (default 64).
 *
 * At setup: a big malloc'd buffer of pseudo-random but compressible data,
 * 100000 separately malloc'd nodes linked in a scrambled ring, a private
 * anonymous region, a private file mapping with some pages modified, a
 * shared file mapping written through, read-only and executable pages,
 * PROT_NONE guard pages between them, a 64 GiB PROT_NONE reservation with
 * 16 MiB made writable and a few scattered pages touched, and a stack grown
 * once by deep recursion. Checksums are kept in static globals and again in
 * a heap block.
 *
 * The check recomputes every checksum, walks the ring, compares the shared
 * file on disk with the mapping, runs the code in the executable page,
 * rereads the deepest stack frame (below the stack pointer now), and wants
 * /proc/self/maps, /proc/self/cmdline and /proc/self/environ exactly as
 * they were (but for the device and inode of mapped files: on another host
 * the same path lives on another file system). ready has addr= (a word in the middle of the big buffer) for
 * a control run to change. */
#include "proto.h"
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#define PAGE 4096
#define FRAME 4096
#define DEPTH 64

struct node {
	struct node *next;
	long id;
	char text[40];
};

static struct node *ring;
static const size_t nnodes = 100000;
static unsigned char *big, *anon, *priv, *shared, *ro, *rx, *sparse;
static size_t bigsz;
static const size_t anonsz = 1 << 20, filesz = 64 << 10, sparsesz = 16 << 20;
static const size_t reserve = 64ULL << 30;
static uintptr_t deep_frame; /* the deepest frame of the recursion, below sp now */
static int sharedfd;

struct sums {
	unsigned long long big, ring, anon, priv, ro, rx, sparse, frame;
};
static struct sums sums;     /* the checksums taken at setup... */
static struct sums *heap_sums; /* ...and a copy on the heap */

/* Large buffers are static: the check must not use the stack deep enough
 * to overwrite the frame it rereads. */
static char maps_before[1 << 16], cmdline_before[1 << 12], environ_before[1 << 16];
static char maps_now[1 << 16], cmdline_now[1 << 12], environ_now[1 << 16], disk[64 << 10];

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
	struct node *p = ring;
	for (size_t i = 0; i < nnodes; i++) {
		s = s * 1315423911ULL + (unsigned long long)p->id + (unsigned char)p->text[5];
		p = p->next;
	}
	if (p != ring)
		s ^= 1; /* the ring no longer closes */
	return s;
}

/* deep recurses n frames of FRAME bytes and leaves the deepest one's
 * address in deep_frame. */
static unsigned long long deep(int n) {
	volatile unsigned char frame[FRAME];
	for (int i = 0; i < FRAME; i++)
		frame[i] = (unsigned char)(n * 7 + i * 13);
	if (n == 0) {
		deep_frame = (uintptr_t)frame;
		return fnv((const void *)frame, FRAME);
	}
	return deep(n - 1) + frame[n];
}

static struct sums compute(void) {
	struct sums s;
	s.big = fnv(big, bigsz);
	s.ring = walk();
	s.anon = fnv(anon, anonsz);
	s.priv = fnv(priv, filesz);
	s.ro = fnv(ro, PAGE);
	s.rx = fnv(rx, PAGE);
	s.sparse = fnv(sparse, sparsesz);
	s.frame = fnv((const void *)deep_frame, FRAME);
	return s;
}

static int run_rx(void) {
#if defined(__x86_64__)
	return ((int (*)(void))rx)();
#else
	return 42;
#endif
}

/* readmaps reads /proc/self/maps without the device and inode columns. */
static void readmaps(char *out, size_t n) {
	static char raw[1 << 16];
	readfile("/proc/self/maps", raw, sizeof raw);
	size_t used = 0;
	out[0] = 0;
	for (char *line = strtok(raw, "\n"); line; line = strtok(NULL, "\n")) {
		char range[64], perms[8], off[32];
		int end = 0;
		if (sscanf(line, "%63s %7s %31s %*s %*s%n", range, perms, off, &end) != 3)
			fail("bad maps line %s", line);
		while (line[end] == ' ')
			end++;
		used += snprintf(out + used, n - used, "%s %s %s %s\n", range, perms, off, line + end);
		if (used >= n)
			fail("maps too long");
	}
}

static void check(char *ok, size_t n) {
	struct sums now = compute();
	if (now.big != sums.big)
		fail("big heap buffer checksum differs");
	if (now.ring != sums.ring)
		fail("linked structure of %zu malloc'd nodes differs", nnodes);
	if (now.anon != sums.anon)
		fail("private anonymous mapping differs");
	if (now.priv != sums.priv)
		fail("modified private file mapping differs");
	if (now.ro != sums.ro)
		fail("read-only page differs");
	if (now.rx != sums.rx || run_rx() != 42)
		fail("executable page differs or does not run");
	if (now.sparse != sums.sparse)
		fail("sparse region differs");
	if (now.frame != sums.frame)
		fail("stack frame %d calls deep differs", DEPTH);
	if (memcmp(heap_sums, &sums, sizeof sums))
		fail("checksums kept on the heap differ from the static ones");
	if (pread(sharedfd, disk, filesz, 0) != (ssize_t)filesz || memcmp(disk, shared, filesz))
		fail("shared file mapping and file content differ");
	readmaps(maps_now, sizeof maps_now);
	if (strcmp(maps_now, maps_before))
		fail("/proc/self/maps changed:\n--- before\n%s--- after\n%s", maps_before, maps_now);
	readfile("/proc/self/cmdline", cmdline_now, sizeof cmdline_now);
	if (strcmp(cmdline_now, cmdline_before))
		fail("/proc/self/cmdline changed: %s", cmdline_now);
	size_t envn = readfile("/proc/self/environ", environ_now, sizeof environ_now);
	if (!envn || memcmp(environ_now, environ_before, envn + 1))
		fail("/proc/self/environ changed (%zu bytes)", envn);
	/* Writing must still work where it worked before. */
	shared[1]++;
	if (msync(shared, filesz, MS_SYNC) || pread(sharedfd, disk, 2, 0) != 2 || disk[1] != (char)shared[1])
		fail("a write through the shared mapping did not reach the file");
	volatile unsigned char *w = anon + anonsz - 1;
	*w = *w;
	w = sparse + sparsesz - 1;
	*w = *w;
	snprintf(ok, n, "big=%zuMiB nodes=%zu", bigsz >> 20, nnodes);
}

static int mkfile(const char *name) {
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", proto_dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		perror(path);
		exit(2);
	}
	return fd;
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	bigsz = (argc > 2 ? strtoul(argv[2], 0, 10) : 64) << 20;
	if (!bigsz)
		bigsz = 1 << 20;

	/* Heap-like data: pointers, small numbers and text; LZ4 gets ~50%. */
	big = malloc(bigsz);
	uint64_t x = 88172645463325252ULL;
	for (size_t i = 0; i < bigsz; i += 8) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t v;
		switch ((i / 8) % 5) {
		case 0: v = x & 0xff; break;
		case 1: v = (uint64_t)(uintptr_t)big + (x & 0xfff8); break;
		default: v = 0x2020656c707061ULL; /* "apple  " */
		}
		memcpy(big + i, &v, 8);
	}

	/* Separately malloc'd nodes, linked in a scrambled order. */
	struct node **all = malloc(nnodes * sizeof *all);
	for (size_t i = 0; i < nnodes; i++) {
		all[i] = malloc(sizeof **all);
		all[i]->id = (long)i * 31;
		snprintf(all[i]->text, sizeof all[i]->text, "node %zu", i);
	}
	for (size_t i = 0; i < nnodes; i++) /* 7919 is prime: one cycle */
		all[(i * 7919) % nnodes]->next = all[((i + 1) * 7919) % nnodes];
	ring = all[0];
	free(all);

	/* One arena, carved with PROT_NONE guard pages between the regions:
	 * guard | anon rw (1 MiB) | guard | ro | rx | guard */
	size_t arenasz = PAGE + anonsz + PAGE + 2 * PAGE + PAGE;
	unsigned char *arena = mmap(0, arenasz, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	anon = arena + PAGE;
	ro = anon + anonsz + PAGE;
	rx = ro + PAGE;
	mprotect(anon, anonsz, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < anonsz; i += 64)
		anon[i] = (unsigned char)(i >> 6);
	mprotect(ro, 2 * PAGE, PROT_READ | PROT_WRITE);
	memset(ro, 'r', PAGE);
	/* mov eax, 42; ret */
	static const unsigned char code[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};
	memset(rx, 0xcc, PAGE);
	memcpy(rx, code, sizeof code);
	mprotect(ro, PAGE, PROT_READ);
	mprotect(rx, PAGE, PROT_READ | PROT_EXEC);

	/* A private file mapping with two pages modified (copied on write). */
	int fd = mkfile("private.dat");
	for (size_t i = 0; i < filesz; i += 8)
		if (write(fd, "abcdefgh", 8) != 8)
			exit(2);
	priv = mmap(0, filesz, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	priv[5] = 'X', priv[PAGE * 3 + 9] = 'Y';

	/* A shared file mapping, written through. */
	sharedfd = mkfile("shared.dat");
	if (ftruncate(sharedfd, filesz))
		exit(2);
	shared = mmap(0, filesz, PROT_READ | PROT_WRITE, MAP_SHARED, sharedfd, 0);
	memset(shared, 's', filesz);

	/* A huge sparse reservation: 16 MiB of it writable, a page touched
	 * every MiB. */
	unsigned char *res = mmap(0, reserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (arena == MAP_FAILED || priv == MAP_FAILED || shared == MAP_FAILED || res == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	sparse = res + (1ULL << 30);
	mprotect(sparse, sparsesz, PROT_READ | PROT_WRITE);
	for (size_t i = 0; i < sparsesz; i += 1 << 20)
		sparse[i + 17 * (i >> 20)] = (unsigned char)(i >> 20) + 1;

	/* Grow the stack once: DEPTH frames of FRAME bytes. */
	deep(DEPTH);

	sums = compute();
	heap_sums = malloc(sizeof *heap_sums);
	*heap_sums = sums;
	readmaps(maps_before, sizeof maps_before);
	readfile("/proc/self/cmdline", cmdline_before, sizeof cmdline_before);
	memset(environ_before, 0, sizeof environ_before);
	readfile("/proc/self/environ", environ_before, sizeof environ_before);
	char extra[256];
	snprintf(extra, sizeof extra, "addr=%p\nbytes=%zu\n", (void *)(big + bigsz / 2), bigsz);
	proto_ready(extra);
	proto_loop(check, NULL);
}
