/* sysvsem: a System V semaphore set (key, mode 0660, three semaphores)
 * between a parent and its child: semaphore 0 holds a constant, 1 counts
 * the rounds the child did, 2 is a token the parent gives and the child,
 * blocked in semop, takes. The check wants the values (want0, the round,
 * 0), the set found by its key with the same id and mode, then gives a
 * token and waits for the child's next round. ready has id=, key= and
 * addr= (the expected constant) for a control run to change. "op ID":
 * only operate on semaphore 0 of set ID (up and down) and stay (a process
 * outside). */
#include "proto.h"
#include <sys/ipc.h>
#include <sys/sem.h>

static volatile long want0 = 5;
static key_t key;
static int id;
static long round_no = 1;

static void die(const char *what) {
	perror(what);
	exit(2);
}

/* semop is never restarted: a signal, or the freeze of a checkpoint
 * (like any ptrace attach), makes it fail with EINTR. */
static int op(short num, short delta) {
	struct sembuf b = {(unsigned short)num, delta, 0};
	int r;
	while ((r = semop(id, &b, 1)) && errno == EINTR)
		;
	return r;
}

static void child(void) {
	for (;;)
		if (op(2, -1) || op(1, 1))
			die("semop");
}

static void check(char *ok, size_t n) {
	int got = semget(key, 0, 0);
	struct semid_ds ds;
	union {
		struct semid_ds *buf;
		unsigned short *array;
	} arg = {.buf = &ds};
	if (got != id || semctl(id, 0, IPC_STAT, arg)) {
		fail("key %#x finds set %d, want %d (%s)", key, got, id, strerror(errno));
		return;
	}
	unsigned short v[3] = {0};
	arg.array = v;
	semctl(id, 0, GETALL, arg);
	if ((ds.sem_perm.mode & 0777) != 0660 || ds.sem_nsems != 3 || v[0] != want0 || v[1] != round_no || v[2] != 0) {
		fail("set %d: mode %o, %lu semaphores, values %d %d %d; want 660, 3, %ld %ld 0", id, ds.sem_perm.mode & 0777,
		     (unsigned long)ds.sem_nsems, v[0], v[1], v[2], want0, round_no);
		return;
	}
	if (op(2, 1)) {
		fail("semop: %s", strerror(errno));
		return;
	}
	round_no++;
	for (int i = 0; i < 300 && semctl(id, 1, GETVAL) != round_no; i++)
		msleep(5);
	snprintf(ok, n, "id=%d key=%#x round=%ld", id, key, round_no);
}

static void done(char *ok, size_t n) { snprintf(ok, n, "operated"); }

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc > 3 && !strcmp(argv[2], "op")) {
		id = atoi(argv[3]);
		if (op(0, 1) || op(0, -1))
			die("semop");
		proto_ready(NULL);
		proto_loop(done, NULL);
	}
	key = 0x52470000 | (getpid() & 0xffff);
	id = semget(key, 3, IPC_CREAT | IPC_EXCL | 0660);
	if (id < 0)
		die("semget");
	unsigned short v[3] = {(unsigned short)want0, 1, 0};
	union {
		struct semid_ds *buf;
		unsigned short *array;
	} arg = {.array = v};
	if (semctl(id, 0, SETALL, arg))
		die("SETALL");
	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0)
		child();
	/* The child's first semop makes it a recorded user. */
	if (op(2, 1))
		die("semop");
	for (int i = 0; i < 300 && semctl(id, 1, GETVAL) != 2; i++)
		msleep(5);
	round_no = 2;
	char buf[128];
	snprintf(buf, sizeof buf, "kid=%d\nid=%d\nkey=%#x\naddr=%p\n", kid, id, key, (void *)&want0);
	proto_ready(buf);
	proto_loop(check, NULL);
}
