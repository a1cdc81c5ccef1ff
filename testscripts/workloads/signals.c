/* signals: signal state a checkpoint must carry.
 *
 * At setup: umask 027; an alternate signal stack; SA_SIGINFO|SA_ONSTACK
 * handlers for SIGUSR1 (counts, records si_value) and SIGSEGV (records,
 * jumps back out); SIGPIPE ignored; SIGUSR2 handled but blocked, with one
 * SIGUSR2 queued by sigqueue with the value 4242 before ready; an
 * ITIMER_REAL interval timer raising SIGALRM every 50 ms; a POSIX timer
 * (CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN, si_value 777) every 30 ms, made
 * after three others were made and deleted, so its id is not the first.
 *
 * The check wants: the same sigaltstack, handlers and flags, SIGPIPE
 * ignored, the same mask, SIGUSR2 still pending (until unblocked), umask
 * 027; a SIGUSR1 it queues to itself handled once, on the alternate stack,
 * with its value; a fault on a PROT_NONE page handled on the alternate
 * stack; both timers still firing with their intervals, the POSIX timer
 * under the same id with the same signal and value (/proc/self/timers).
 *
 * When DIR/unblock appears it unblocks SIGUSR2 and writes DIR/unblocked:
 * "OK usr2=1 value=4242" if the handler ran once with the queued value.
 * ready has timer= (the id) and timer_addr= (where the program keeps it)
 * for a control run to change. */
#include "proto.h"
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/time.h>

static volatile int usr1, usr1_value, usr1_on_alt, usr2, usr2_value;
static volatile int alarms, rt_ticks, rt_value, segvs, segv_on_alt;
static volatile void *segv_addr;
static char altstack[1 << 16];
static timer_t timer;
static sigset_t mask0;
static unsigned char *guard;
static sigjmp_buf segv_jmp;
static int round_no, unblocked;

static int on_altstack(const void *p) {
	return (const char *)p >= altstack && (const char *)p < altstack + sizeof altstack;
}

static void on_usr1(int sig, siginfo_t *si, void *uc) {
	int here;
	(void)sig, (void)uc;
	usr1++;
	usr1_value = si->si_value.sival_int;
	usr1_on_alt = on_altstack(&here);
}

static void on_usr2(int sig, siginfo_t *si, void *uc) {
	(void)sig, (void)uc;
	usr2++;
	usr2_value = si->si_value.sival_int;
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
	int here;
	(void)sig, (void)uc;
	segvs++;
	segv_addr = si->si_addr;
	segv_on_alt = on_altstack(&here);
	siglongjmp(segv_jmp, 1);
}

static void on_alrm(int sig) { (void)sig, alarms++; }

static void on_rt(int sig, siginfo_t *si, void *uc) {
	(void)sig, (void)uc;
	rt_ticks++;
	rt_value = si->si_value.sival_int;
}

/* timer_listed reports whether /proc/self/timers has a timer with this
 * id, signal and value. */
static int timer_listed(int id, int signo, int value) {
	FILE *f = fopen("/proc/self/timers", "r");
	if (!f)
		return 0;
	char line[256];
	int cur = -1, found = 0;
	while (fgets(line, sizeof line, f)) {
		int sig;
		unsigned long val;
		if (sscanf(line, "ID: %d", &cur) == 1)
			continue;
		if (cur == id && sscanf(line, "signal: %d/%lx", &sig, &val) == 2)
			found = sig == signo && (int)val == value;
	}
	fclose(f);
	return found;
}

static void check(char *ok, size_t n) {
	round_no++;
	stack_t ss;
	sigaltstack(NULL, &ss);
	if (ss.ss_sp != altstack || ss.ss_size != sizeof altstack || (ss.ss_flags & SS_DISABLE))
		fail("sigaltstack lost: sp=%p size=%zu flags=%d", ss.ss_sp, ss.ss_size, ss.ss_flags);
	struct sigaction sa;
	sigaction(SIGPIPE, NULL, &sa);
	if (sa.sa_handler != SIG_IGN)
		fail("SIGPIPE no longer ignored");
	sigaction(SIGUSR1, NULL, &sa);
	if (sa.sa_sigaction != on_usr1 || (sa.sa_flags & (SA_SIGINFO | SA_ONSTACK)) != (SA_SIGINFO | SA_ONSTACK))
		fail("SIGUSR1 handler or flags lost");
	sigaction(SIGSEGV, NULL, &sa);
	int segv_handled = sa.sa_sigaction == on_segv && (sa.sa_flags & SA_ONSTACK);
	if (!segv_handled)
		fail("SIGSEGV handler or flags lost: handler %p flags %#x", (void *)sa.sa_sigaction, sa.sa_flags);
	sigaction(SIGALRM, NULL, &sa);
	if (sa.sa_handler != on_alrm || !(sa.sa_flags & SA_RESTART))
		fail("SIGALRM handler or SA_RESTART lost");
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	for (int s = 1; s <= SIGRTMAX; s++)
		if (sigismember(&cur, s) != sigismember(&mask0, s))
			fail("signal mask changed at signal %d", s);
	sigset_t pend;
	sigpending(&pend);
	if (sigismember(&pend, SIGUSR2) == unblocked)
		fail(unblocked ? "SIGUSR2 pending again" : "pending SIGUSR2 lost");
	mode_t m = umask(027);
	if (m != 027)
		fail("umask is %03o, want 027", m);

	/* A signal to itself, with a value, handled on the alternate stack. */
	int before = usr1;
	sigqueue(getpid(), SIGUSR1, (union sigval){.sival_int = 100 + round_no});
	if (usr1 != before + 1 || usr1_value != 100 + round_no || !usr1_on_alt)
		fail("SIGUSR1: handled %d times, value %d, on the alternate stack: %d", usr1 - before, usr1_value,
		     usr1_on_alt);

	/* A fault, handled on the alternate stack (not without a handler:
	 * the workload must live to give its verdict). */
	before = segvs;
	if (!segv_handled) {
	} else if (!sigsetjmp(segv_jmp, 1)) {
		*(volatile unsigned char *)guard = 1;
		fail("writing to a PROT_NONE page did not fault");
	} else if (segvs != before + 1 || segv_addr != guard || !segv_on_alt) {
		fail("SIGSEGV: handled %d times at %p, on the alternate stack: %d", segvs - before, segv_addr, segv_on_alt);
	}

	/* Both timers keep firing, with their intervals. */
	int a = alarms, r = rt_ticks;
	for (int i = 0; i < 500 && (alarms == a || rt_ticks == r); i++)
		msleep(10);
	struct itimerval it;
	getitimer(ITIMER_REAL, &it);
	if (alarms == a)
		fail("interval timer stopped");
	else if (it.it_interval.tv_sec != 0 || it.it_interval.tv_usec != 50000)
		fail("interval timer interval is %ld.%06lds", (long)it.it_interval.tv_sec, (long)it.it_interval.tv_usec);
	struct itimerspec its;
	if (timer_gettime(timer, &its))
		fail("POSIX timer id %ld: %s", (long)(intptr_t)timer, strerror(errno));
	else if (its.it_interval.tv_sec != 0 || its.it_interval.tv_nsec != 30000000)
		fail("POSIX timer interval is %ld.%09lds", (long)its.it_interval.tv_sec, its.it_interval.tv_nsec);
	else if (rt_ticks == r)
		fail("POSIX timer stopped");
	else if (rt_value != 777)
		fail("POSIX timer signal carries %d, want 777", rt_value);
	else if (!timer_listed((int)(intptr_t)timer, SIGRTMIN, 777))
		fail("/proc/self/timers has no timer %ld for signal %d with value 777", (long)(intptr_t)timer, SIGRTMIN);
	snprintf(ok, n, "usr1=%d alarms=%d rt=%d timer=%ld", usr1, alarms, rt_ticks, (long)(intptr_t)timer);
}

/* tick runs every round: on DIR/unblock, unblock SIGUSR2 and report. */
static void tick(void) {
	char path[4096];
	snprintf(path, sizeof path, "%s/unblock", proto_dir);
	if (access(path, F_OK))
		return;
	rmdir(path);
	unlink(path);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_UNBLOCK, &s, NULL);
	sigdelset(&mask0, SIGUSR2);
	unblocked = 1;
	char out[128];
	snprintf(out, sizeof out, "%s usr2=%d value=%d\n", usr2 == 1 && usr2_value == 4242 ? "OK" : "FAIL", usr2,
		 usr2_value);
	proto_write("unblocked", out);
}

static void handle(int sig, void (*h)(int, siginfo_t *, void *), int flags) {
	struct sigaction sa = {.sa_sigaction = h, .sa_flags = SA_SIGINFO | flags};
	if (sigaction(sig, &sa, NULL)) {
		perror("sigaction");
		exit(2);
	}
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	umask(027);
	guard = mmap(0, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
	sigaltstack(&ss, NULL);
	handle(SIGUSR1, on_usr1, SA_ONSTACK);
	handle(SIGUSR2, on_usr2, SA_ONSTACK);
	handle(SIGSEGV, on_segv, SA_ONSTACK);
	handle(SIGRTMIN, on_rt, SA_RESTART);
	struct sigaction al = {.sa_handler = on_alrm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &al, NULL);
	signal(SIGPIPE, SIG_IGN);

	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	sigprocmask(SIG_BLOCK, NULL, &mask0);
	sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 4242});

	struct itimerval it = {{0, 50000}, {0, 50000}};
	setitimer(ITIMER_REAL, &it, NULL);
	struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN, .sigev_value.sival_int = 777};
	/* Timers made and deleted first: the one kept has an id other than
	 * the first a fresh process gets (3 where ids come in order). */
	for (int i = 0; i < 3; i++) {
		timer_t t;
		if (timer_create(CLOCK_MONOTONIC, &sev, &t) || timer_delete(t)) {
			perror("timer_create");
			exit(2);
		}
	}
	if (timer_create(CLOCK_MONOTONIC, &sev, &timer)) {
		perror("timer_create");
		exit(2);
	}
	struct itimerspec its = {{0, 30000000}, {0, 30000000}};
	timer_settime(timer, 0, &its, NULL);

	char extra[128];
	snprintf(extra, sizeof extra, "timer=%ld\ntimer_addr=%p\n", (long)(intptr_t)timer, (void *)&timer);
	proto_ready(extra);
	proto_loop(check, tick);
}
