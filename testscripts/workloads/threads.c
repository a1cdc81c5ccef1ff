/* threads: argv[2] threads (default 4), each with TLS, a name and a counter;
 * some sleep, one waits on a condition variable, one computes. The check
 * wants every thread alive and advancing, TLS, names and tids unchanged,
 * pthread_join working (clear_child_tid) and a robust mutex reporting
 * EOWNERDEAD after its owner exits (robust futex list). */
#include "proto.h"
#include <pthread.h>
#include <sys/syscall.h>

#define MAXT 16
static int nthreads = 4;
static __thread long tls_value;
static volatile long counters[MAXT];
static pid_t tids[MAXT];
static pthread_t handles[MAXT];
static pthread_mutex_t cv_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t robust;

static void *worker(void *arg) {
	long i = (long)arg;
	tls_value = 1000 + i;
	tids[i] = (pid_t)syscall(SYS_gettid);
	char name[16];
	snprintf(name, sizeof name, "worker-%ld", i);
	pthread_setname_np(pthread_self(), name);
	for (;;) {
		if (tls_value != 1000 + i)
			counters[i] = -1000000; /* poison: TLS lost */
		counters[i]++;
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

static void *robust_owner(void *arg) {
	(void)arg;
	pthread_mutex_lock(&robust);
	return NULL; /* exits holding it */
}

static void *short_lived(void *arg) { return arg; }

static void check(char *ok, size_t n) {
	long before[MAXT];
	for (int i = 0; i < nthreads; i++)
		before[i] = counters[i];
	/* Every thread must move within 5 s. */
	for (int round = 0; round < 500; round++) {
		int all = 1;
		for (int i = 0; i < nthreads; i++)
			all &= counters[i] > before[i];
		if (all)
			break;
		msleep(10);
	}
	for (int i = 0; i < nthreads; i++) {
		if (counters[i] <= before[i])
			fail("thread %d is not advancing (counter %ld)", i, counters[i]);
		if (counters[i] < 0)
			fail("thread %d lost its TLS value", i);
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
			fail("thread %d is named %s", i, name);
	}
	pthread_t t;
	void *ret;
	if (pthread_create(&t, NULL, short_lived, (void *)42L) || pthread_join(t, &ret) || ret != (void *)42L)
		fail("pthread_create/join failed");
	if (pthread_create(&t, NULL, robust_owner, NULL) || pthread_join(t, NULL))
		fail("robust owner thread failed");
	int r = pthread_mutex_lock(&robust);
	if (r != EOWNERDEAD)
		fail("robust mutex: lock returned %d, want EOWNERDEAD", r);
	else
		pthread_mutex_consistent(&robust), pthread_mutex_unlock(&robust);
	snprintf(ok, n, "threads=%d", nthreads);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc > 2)
		nthreads = atoi(argv[2]);
	if (nthreads < 1 || nthreads > MAXT)
		nthreads = 4;
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&robust, &a);
	for (long i = 0; i < nthreads; i++)
		pthread_create(&handles[i], NULL, worker, (void *)i);
	for (int i = 0; i < nthreads; i++)
		while (!tids[i] || !counters[i])
			msleep(1);
	proto_ready(NULL);
	proto_loop(check, NULL);
}
