/* fidelity: per-process and per-thread state a program sets once and
 * expects to keep: a pipe enlarged with F_SETPIPE_SZ (with bytes in it),
 * a periodic ITIMER_REAL (20 ms: it expires while the tree is frozen), the main thread's nice value and
 * scheduling policy (SCHED_BATCH), CPU affinity and I/O priority, a second
 * thread under SCHED_FIFO, oom_score_adj, personality (ADDR_NO_RANDOMIZE),
 * child-subreaper, dumpable off, and a child's PR_SET_PDEATHSIG (the child
 * answers through shared memory). The check compares each with the value
 * it set, kept in want[]; ready lists each want's address (w_NAME=) for a
 * control run to change. */
#include "proto.h"
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>

enum { PIPESZ, ITIMER, NICE, POLICY, RTPRIO, CPU, IOPRIO, OOM, PERS, PDEATH, SUBREAPER, DUMPABLE, NWANT };
static const char *names[NWANT] = {"pipesz", "itimer", "nice", "policy", "rtprio", "cpu", "ioprio",
				   "oom", "personality", "pdeathsig", "subreaper", "dumpable"};
static volatile long want[NWANT];

static int pfd[2];
static volatile pid_t rt_tid;
static volatile long alarms;
static struct shared {
	volatile int req, ack, pdeath;
} *sh;

#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_CLASS_BE 2
#define IOPRIO_PRIO(class, level) (((class) << 13) | (level))

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void on_alarm(int sig) {
	(void)sig;
	alarms++;
}

static void *rt_thread(void *arg) {
	(void)arg;
	struct sched_param sp = {.sched_priority = (int)want[RTPRIO]};
	if (sched_setscheduler(0, SCHED_FIFO, &sp))
		die("sched_setscheduler SCHED_FIFO");
	rt_tid = gettid();
	for (;;)
		msleep(50);
	return NULL;
}

static void child(void) {
	if (prctl(PR_SET_PDEATHSIG, (int)want[PDEATH]))
		die("PR_SET_PDEATHSIG");
	for (;;) {
		if (sh->req != sh->ack) {
			int sig = -1;
			prctl(PR_GET_PDEATHSIG, &sig);
			sh->pdeath = sig;
			__sync_synchronize();
			sh->ack = sh->req;
		}
		msleep(10);
	}
}

static void check(char *ok, size_t n) {
	long got[NWANT];
	got[PIPESZ] = fcntl(pfd[1], F_GETPIPE_SZ);
	int queued = -1;
	ioctl(pfd[0], FIONREAD, &queued);
	if (queued != 1000)
		fail("%d bytes in the pipe, want 1000", queued);
	struct itimerval it;
	getitimer(ITIMER_REAL, &it);
	got[ITIMER] = it.it_interval.tv_sec * 1000000L + it.it_interval.tv_usec;
	/* Still firing: a SIGALRM within a second. */
	long before = alarms;
	for (int i = 0; i < 100 && alarms == before; i++)
		msleep(10);
	int silent = alarms == before;
	errno = 0;
	got[NICE] = getpriority(PRIO_PROCESS, 0);
	got[POLICY] = sched_getscheduler(0);
	struct sched_param sp = {0};
	got[RTPRIO] = sched_getscheduler(rt_tid) == SCHED_FIFO && sched_getparam(rt_tid, &sp) == 0 ? sp.sched_priority : -1;
	cpu_set_t set;
	CPU_ZERO(&set);
	sched_getaffinity(0, sizeof set, &set);
	got[CPU] = CPU_COUNT(&set) == 1 && CPU_ISSET(want[CPU], &set) ? want[CPU] : -CPU_COUNT(&set);
	got[IOPRIO] = syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0);
	FILE *f = fopen("/proc/self/oom_score_adj", "r");
	got[OOM] = -9999;
	if (f) {
		if (fscanf(f, "%ld", &got[OOM]) != 1)
			got[OOM] = -9999;
		fclose(f);
	}
	got[PERS] = personality(0xffffffff);
	int v = -1;
	prctl(PR_GET_CHILD_SUBREAPER, &v);
	got[SUBREAPER] = v;
	got[DUMPABLE] = prctl(PR_GET_DUMPABLE);
	got[PDEATH] = -1;
	int req = sh->req + 1;
	sh->req = req;
	for (int i = 0; i < 300 && sh->ack != req; i++)
		msleep(10);
	if (sh->ack == req)
		got[PDEATH] = sh->pdeath;
	char bad[1024] = "";
	for (int i = 0; i < NWANT; i++)
		if (got[i] != want[i])
			snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%s%s is %ld, want %ld", *bad ? ", " : "",
				 names[i], got[i], want[i]);
	if (silent)
		snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%sno SIGALRM for a second", *bad ? ", " : "");
	if (*bad)
		fail("%s", bad);
	snprintf(ok, n, "pipesz=%ld itimer=%ldus nice=%ld policy=%ld rtprio=%ld cpu=%ld ioprio=%#lx oom=%ld personality=%#lx pdeathsig=%ld subreaper=%ld dumpable=%ld",
		 got[PIPESZ], got[ITIMER], got[NICE], got[POLICY], got[RTPRIO], got[CPU], got[IOPRIO], got[OOM], got[PERS],
		 got[PDEATH], got[SUBREAPER], got[DUMPABLE]);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	want[PIPESZ] = 1 << 20;
	want[ITIMER] = 20000;
	want[NICE] = 7;
	want[POLICY] = SCHED_BATCH;
	want[RTPRIO] = 5;
	want[CPU] = sysconf(_SC_NPROCESSORS_ONLN) - 1;
	want[IOPRIO] = IOPRIO_PRIO(IOPRIO_CLASS_BE, 6);
	want[OOM] = 123;
	want[PDEATH] = SIGUSR2;
	want[SUBREAPER] = 1;
	want[DUMPABLE] = 0;

	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	if (prctl(PR_SET_CHILD_SUBREAPER, 1))
		die("PR_SET_CHILD_SUBREAPER");
	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0)
		child();

	if (pipe2(pfd, O_CLOEXEC) || fcntl(pfd[1], F_SETPIPE_SZ, (int)want[PIPESZ]) < 0)
		die("pipe");
	char buf[1000];
	memset(buf, 'x', sizeof buf);
	if (write(pfd[1], buf, sizeof buf) != sizeof buf)
		die("write pipe");

	struct sigaction sa = {.sa_handler = on_alarm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &sa, NULL);
	struct itimerval it = {{0, want[ITIMER]}, {0, want[ITIMER]}};
	if (setitimer(ITIMER_REAL, &it, NULL))
		die("setitimer");

	struct sched_param sp = {0};
	if (sched_setscheduler(0, SCHED_BATCH, &sp) || setpriority(PRIO_PROCESS, 0, (int)want[NICE]))
		die("SCHED_BATCH, nice");
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(want[CPU], &set);
	if (sched_setaffinity(0, sizeof set, &set))
		die("sched_setaffinity");
	if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, (int)want[IOPRIO]))
		die("ioprio_set");
	FILE *f = fopen("/proc/self/oom_score_adj", "w");
	if (!f || fprintf(f, "%ld\n", want[OOM]) < 0 || fclose(f))
		die("oom_score_adj");
	want[PERS] = personality(personality(0xffffffff) | ADDR_NO_RANDOMIZE);
	want[PERS] = personality(0xffffffff);
	if (!(want[PERS] & ADDR_NO_RANDOMIZE))
		die("personality");

	pthread_t th;
	if (pthread_create(&th, NULL, rt_thread, NULL))
		die("pthread_create");
	while (!rt_tid)
		msleep(1);
	if (prctl(PR_SET_DUMPABLE, 0))
		die("PR_SET_DUMPABLE");

	char extra[2048] = "", *p = extra;
	p += sprintf(p, "kid=%d\nrt=%d\n", kid, rt_tid);
	for (int i = 0; i < NWANT; i++)
		p += sprintf(p, "w_%s=%p\n", names[i], (void *)&want[i]);
	proto_ready(extra);
	proto_loop(check, NULL);
}
