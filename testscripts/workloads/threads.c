/* threads: argv[2] worker threads (default 4, at most 16), each with a
 * name ("worker-N"), a __thread value, and a counter with a running
 * checksum kept twice: in locals (stack and registers) and in __thread
 * variables. Worker N sleeps in nanosleep (N%3 == 0), waits on a condition
 * variable with a timeout, a futex wait (N%3 == 1), or computes (N%3 == 2).
 * Every round it compares its locals with its TLS and its gettid() with
 * the tid it started with. One more thread, the "joiner", holds a robust
 * mutex and waits on a condition variable without a timeout.
 *
 * The check wants: every worker advancing within 5 s, none having seen its
 * TLS, tid or checksum change, each named as before, the task count
 * unchanged; then it asks the joiner (made before the checkpoint) to exit
 * holding its robust mutex and wants pthread_join to return (the kernel
 * clears and wakes clear_child_tid) and the mutex to lock with EOWNERDEAD
 * (the kernel walks the robust list); then it makes the next joiner. ready
 * has tls0= (the address of worker 0's __thread value) for a control run
 * to change. */
#include "proto.h"
#include <dirent.h>
#include <pthread.h>
#include <sys/syscall.h>

#define MAXT 16

static int nthreads = 4;
static __thread long tls_value;
static __thread long tls_count;
static __thread unsigned long long tls_sum;
static volatile long counters[MAXT];
static const char *volatile broken[MAXT]; /* the first thing a worker saw go wrong */
static volatile long *tls_addr[MAXT];
static volatile pid_t tids[MAXT];
static pthread_mutex_t cv_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static void *worker(void *arg) {
	long i = (long)arg;
	char name[16];
	snprintf(name, sizeof name, "worker-%ld", i);
	pthread_setname_np(pthread_self(), name);
	tls_value = 1000 + i;
	tls_addr[i] = &tls_value;
	tids[i] = gettid_();
	long count = 0;
	unsigned long long sum = (unsigned long long)i;
	tls_count = count, tls_sum = sum;
	for (;;) {
		if (broken[i])
			;
		else if (tls_value != 1000 + i)
			broken[i] = "lost its TLS value";
		else if (gettid_() != tids[i])
			broken[i] = "has a new tid";
		else if (tls_count != count || tls_sum != sum)
			broken[i] = "has TLS and locals that disagree";
		count++;
		sum = sum * 31 + (unsigned long long)count;
		tls_count = count, tls_sum = sum;
		counters[i] = count;
		switch (i % 3) {
		case 0:
			msleep(1);
			break;
		case 1: {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_nsec += 2000000;
			if (ts.tv_nsec >= 1000000000)
				ts.tv_sec++, ts.tv_nsec -= 1000000000;
			pthread_mutex_lock(&cv_lock);
			pthread_cond_timedwait(&cv, &cv_lock, &ts);
			pthread_mutex_unlock(&cv_lock);
			break;
		}
		default:
			for (volatile int k = 0; k < 20000; k++)
				;
		}
	}
	return NULL;
}

struct joiner {
	pthread_t thread;
	pthread_mutex_t robust;
	pid_t tid;
	int started, quit;
};
static struct joiner *joiner;
static pthread_mutex_t jlock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jcv = PTHREAD_COND_INITIALIZER;

static void *joiner_main(void *arg) {
	struct joiner *j = arg;
	pthread_setname_np(pthread_self(), "joiner");
	pthread_mutex_lock(&j->robust);
	pthread_mutex_lock(&jlock);
	j->tid = gettid_();
	j->started = 1;
	pthread_cond_broadcast(&jcv);
	while (!j->quit)
		pthread_cond_wait(&jcv, &jlock);
	pthread_mutex_unlock(&jlock);
	return j; /* exits holding j->robust */
}

static struct joiner *new_joiner(void) {
	struct joiner *j = calloc(1, sizeof *j);
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&j->robust, &a);
	pthread_mutexattr_destroy(&a);
	if (pthread_create(&j->thread, NULL, joiner_main, j)) {
		perror("pthread_create");
		exit(2);
	}
	pthread_mutex_lock(&jlock);
	while (!j->started)
		pthread_cond_wait(&jcv, &jlock);
	pthread_mutex_unlock(&jlock);
	return j;
}

static int count_tasks(void) {
	DIR *d = opendir("/proc/self/task");
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += e->d_name[0] != '.';
	if (d)
		closedir(d);
	return n;
}

static struct timespec in_seconds(int s) {
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += s;
	return ts;
}

static void check_joiner(void) {
	struct joiner *j = joiner;
	pthread_mutex_lock(&jlock);
	j->quit = 1;
	pthread_cond_broadcast(&jcv);
	pthread_mutex_unlock(&jlock);
	struct timespec deadline = in_seconds(5);
	void *ret = NULL;
	int r = pthread_timedjoin_np(j->thread, &ret, &deadline);
	if (r || ret != j) {
		fail("pthread_join of the joiner (tid %d) failed: %s (clear_child_tid lost?)", j->tid, strerror(r));
		return; /* leave it: the next check must not trip on it */
	}
	r = pthread_mutex_timedlock(&j->robust, &deadline);
	if (r != EOWNERDEAD) {
		fail("robust mutex of the dead joiner (tid %d): lock returned %s, want EOWNERDEAD (robust list lost?)",
		     j->tid, strerror(r));
		return;
	}
	pthread_mutex_consistent(&j->robust);
	pthread_mutex_unlock(&j->robust);
	pthread_mutex_destroy(&j->robust);
	free(j);
	joiner = new_joiner();
}

static void check(char *ok, size_t n) {
	long before[MAXT];
	for (int i = 0; i < nthreads; i++)
		before[i] = counters[i];
	for (int round = 0; round < 500; round++) {
		int all = 1;
		for (int i = 0; i < nthreads; i++)
			all &= counters[i] > before[i];
		if (all)
			break;
		msleep(10);
	}
	int tasks = count_tasks();
	if (tasks != nthreads + 2)
		fail("%d tasks, want %d (main, joiner and %d workers)", tasks, nthreads + 2, nthreads);
	for (int i = 0; i < nthreads; i++) {
		if (broken[i])
			fail("thread %d (tid %d) %s", i, tids[i], broken[i]);
		if (counters[i] <= before[i])
			fail("thread %d (tid %d) is not advancing (counter %ld)", i, tids[i], counters[i]);
		if (*tls_addr[i] != 1000 + i)
			fail("thread %d: its TLS value reads %ld", i, *tls_addr[i]);
		char path[128], name[64] = "", want[16];
		snprintf(path, sizeof path, "/proc/self/task/%d/comm", tids[i]);
		FILE *f = fopen(path, "r");
		if (!f) {
			fail("thread %d: tid %d is gone", i, tids[i]);
			continue;
		}
		if (!fgets(name, sizeof name, f))
			name[0] = 0;
		fclose(f);
		name[strcspn(name, "\n")] = 0;
		snprintf(want, sizeof want, "worker-%d", i);
		if (strcmp(name, want))
			fail("thread %d (tid %d) is named %s", i, tids[i], name);
	}
	if (!proto_failed)
		check_joiner();
	snprintf(ok, n, "threads=%d", nthreads);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc > 2)
		nthreads = atoi(argv[2]);
	if (nthreads < 1 || nthreads > MAXT)
		nthreads = 4;
	for (long i = 0; i < nthreads; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)i)) {
			perror("pthread_create");
			exit(2);
		}
	}
	for (int i = 0; i < nthreads; i++)
		while (!tids[i] || !counters[i])
			msleep(1);
	joiner = new_joiner();
	char extra[256];
	snprintf(extra, sizeof extra, "threads=%d\ntls0=%p\n", nthreads, (void *)tls_addr[0]);
	proto_ready(extra);
	proto_loop(check, NULL);
}
