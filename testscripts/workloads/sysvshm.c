/* sysvshm: System V shared memory shared by a parent and its child. A
 * segment with a key (mode 0640, 1 MiB + 123 bytes, a few pages written)
 * is attached by the parent, part of that attach made read-only, and by
 * the child twice (inherited, and again read-only); a second segment,
 * IPC_PRIVATE, is removed (IPC_RMID) while the parent keeps it attached.
 * The check wants: the key to find the same id, mode, size and attach
 * count as before; the contents' checksum; the removed segment still
 * there with its contents; and the child to answer a token through the
 * segment, reading it through its read-only attach too. ready has
 * id=, key=, seg= (the parent's attach, for a control run to change).
 * "attach ID": only attach segment ID and hold it (a process outside). */
#include "proto.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>

#define SIZE ((1 << 20) + 123)
#define PRIV 8192
#define TOKEN 4096	/* parent writes a token here */
#define ANSWER 4104	/* the child answers token + 1 here */
static const long pages[] = {0, 3, 100, 255};

static key_t key;
static int id, priv;
static unsigned char *seg, *pseg;
static unsigned long long want_sum, want_psum;
static unsigned long want_nattch;

static void die(const char *what) {
	perror(what);
	exit(2);
}

/* sum hashes the segment but for the token page. */
static unsigned long long sum(const unsigned char *b, size_t n) {
	return fnv(b, TOKEN) ^ fnv(b + 2 * TOKEN, n - 2 * TOKEN);
}

static void child(void) {
	unsigned char *ro = shmat(id, NULL, SHM_RDONLY);
	if (ro == (void *)-1)
		die("child shmat");
	volatile long *tok = (volatile long *)(seg + TOKEN), *ans = (volatile long *)(seg + ANSWER);
	volatile long *rotok = (volatile long *)(ro + TOKEN);
	for (;;) {
		long t = *tok;
		if (t && *ans != t + 1 && *rotok == t)
			*ans = t + 1;
		msleep(5);
	}
}

static void check(char *ok, size_t n) {
	int got = shmget(key, 0, 0);
	if (got != id) {
		fail("key %#x finds segment %d, want %d (%s)", key, got, id, strerror(errno));
		return;
	}
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds)) {
		fail("IPC_STAT: %s", strerror(errno));
		return;
	}
	if ((ds.shm_perm.mode & 0777) != 0640 || ds.shm_segsz != SIZE || ds.shm_nattch != want_nattch)
		fail("segment %d: mode %o, %zu bytes, %lu attaches; want 640, %d, %lu", id, ds.shm_perm.mode & 0777,
		     ds.shm_segsz, (unsigned long)ds.shm_nattch, SIZE, want_nattch);
	if (sum(seg, SIZE) != want_sum)
		fail("segment %d: checksum differs", id);
	struct shmid_ds pds;
	if (shmctl(priv, IPC_STAT, &pds) || !(pds.shm_perm.mode & SHM_DEST) || pds.shm_perm.__key != IPC_PRIVATE)
		fail("removed segment %d: %s, mode %o", priv, strerror(errno), pds.shm_perm.mode);
	if (fnv(pseg, PRIV) != want_psum)
		fail("removed segment %d: checksum differs", priv);
	static long t = 1000;
	t++;
	*(volatile long *)(seg + TOKEN) = t;
	volatile long *ans = (volatile long *)(seg + ANSWER);
	for (int i = 0; i < 200 && *ans != t + 1; i++)
		msleep(5);
	if (*ans != t + 1)
		fail("the child did not answer token %ld through the segment", t);
	snprintf(ok, n, "id=%d key=%#x nattch=%lu", id, key, (unsigned long)ds.shm_nattch);
}

static void holding(char *ok, size_t n) { snprintf(ok, n, "attached"); }

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc > 3 && !strcmp(argv[2], "attach")) {
		if (shmat(atoi(argv[3]), NULL, SHM_RDONLY) == (void *)-1)
			die("shmat");
		proto_ready(NULL);
		proto_loop(holding, NULL);
	}
	key = 0x52450000 | (getpid() & 0xffff);
	id = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0640);
	if (id < 0)
		die("shmget");
	seg = shmat(id, NULL, 0);
	if (seg == (void *)-1)
		die("shmat");
	for (size_t i = 0; i < sizeof pages / sizeof *pages; i++)
		for (int j = 0; j < 4096; j++)
			seg[pages[i] * 4096 + j] = (unsigned char)(pages[i] * 7 + j);
	seg[SIZE - 1] = 0x5a;
	want_sum = sum(seg, SIZE);
	/* The last page read-only: the attach is two mappings now. */
	if (mprotect(seg + 256 * 4096, 4096, PROT_READ))
		die("mprotect");

	priv = shmget(IPC_PRIVATE, PRIV, IPC_CREAT | 0600);
	pseg = shmat(priv, NULL, 0);
	if (priv < 0 || pseg == (void *)-1)
		die("private segment");
	for (int j = 0; j < PRIV; j++)
		pseg[j] = (unsigned char)(j * 13);
	want_psum = fnv(pseg, PRIV);
	if (shmctl(priv, IPC_RMID, NULL))
		die("IPC_RMID");

	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0) {
		shmdt(pseg);
		child();
	}
	/* An attach per mapping: the parent's two, the child's two inherited
	 * and its own. */
	want_nattch = 5;
	struct shmid_ds ds;
	for (int i = 0; i < 400 && !shmctl(id, IPC_STAT, &ds) && ds.shm_nattch != want_nattch; i++)
		msleep(5);
	char buf[256];
	snprintf(buf, sizeof buf, "kid=%d\nid=%d\nkey=%#x\nseg=%p\n", kid, id, key, (void *)seg);
	proto_ready(buf);
	proto_loop(check, NULL);
}
