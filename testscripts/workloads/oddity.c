/* oddity: holds one kind of kernel object relocate does not carry, named
 * by argv[2]: sysvshm (shmget+shmat), sysvsem (semop), sysvmsg (msgsnd),
 * pidfd, fanotify, userfaultfd, iouring, perf (a software perf_event), bpf
 * (a BPF array map). Its check only wants a counter that moves: a refused
 * dump must leave it running untouched. */
#include "proto.h"
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <sys/fanotify.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>

static volatile long ticks, last;
static int shmid = -1, semid = -1, msqid = -1;

static void tick(void) { ticks++; }

static void check(char *ok, size_t n) {
	if (ticks <= last)
		fail("stuck at %ld", ticks);
	last = ticks;
	snprintf(ok, n, "ticks=%ld", ticks);
}

static void cleanup(void) {
	if (shmid >= 0)
		shmctl(shmid, IPC_RMID, NULL);
	if (semid >= 0)
		semctl(semid, 0, IPC_RMID);
	if (msqid >= 0)
		msgctl(msqid, IPC_RMID, NULL);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	const char *kind = argc > 2 ? argv[2] : "";
	long fd = 0;
	if (!strcmp(kind, "sysvshm")) {
		shmid = shmget(IPC_PRIVATE, 1 << 16, IPC_CREAT | 0600);
		char *p = shmat(shmid, NULL, 0);
		if (p == (void *)-1)
			fd = -1;
		else
			p[0] = 1;
		shmctl(shmid, IPC_RMID, NULL); /* gone when detached */
		shmid = -1;
	} else if (!strcmp(kind, "sysvsem")) {
		semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
		struct sembuf op = {0, 1, SEM_UNDO};
		fd = semid < 0 ? -1 : semop(semid, &op, 1);
	} else if (!strcmp(kind, "sysvmsg")) {
		msqid = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
		struct {
			long type;
			char text[8];
		} m = {1, "queued"};
		fd = msqid < 0 ? -1 : msgsnd(msqid, &m, sizeof m.text, 0);
	} else if (!strcmp(kind, "pidfd")) {
		fd = syscall(SYS_pidfd_open, getppid(), 0);
	} else if (!strcmp(kind, "fanotify")) {
		fd = fanotify_init(FAN_CLASS_NOTIF, O_RDONLY);
	} else if (!strcmp(kind, "userfaultfd")) {
		fd = syscall(SYS_userfaultfd, O_CLOEXEC);
	} else if (!strcmp(kind, "iouring")) {
		struct io_uring_params p = {0};
		fd = syscall(SYS_io_uring_setup, 4, &p);
	} else if (!strcmp(kind, "perf")) {
		struct perf_event_attr a = {.type = PERF_TYPE_SOFTWARE, .size = sizeof a,
			.config = PERF_COUNT_SW_TASK_CLOCK, .exclude_kernel = 1};
		fd = syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
	} else if (!strcmp(kind, "bpf")) {
		union bpf_attr a = {.map_type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 4};
		fd = syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof a);
	} else {
		fprintf(stderr, "oddity: unknown kind %s\n", kind);
		return 2;
	}
	if (fd < 0) {
		fprintf(stderr, "oddity %s: %s\n", kind, strerror(errno));
		cleanup();
		return 2;
	}
	atexit(cleanup);
	signal(SIGTERM, exit); /* the objects outlive the process otherwise */
	proto_ready(NULL);
	proto_loop(check, tick);
}
