/* signals: handlers, a blocked pending signal with a value, sigaltstack,
 * an ignored signal, an interval timer, a POSIX timer, the mask and umask. */
#include "proto.h"
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>

static volatile int usr1, usr2, usr2_value, alarms, rt_ticks;
static char altstack[65536];
static timer_t timer;

static void on_usr1(int sig, siginfo_t *si, void *uc) { (void)sig, (void)si, (void)uc, usr1++; }
static void on_usr2(int sig, siginfo_t *si, void *uc) {
	(void)sig, (void)uc;
	usr2++;
	usr2_value = si->si_value.sival_int;
}
static void on_alrm(int sig) { (void)sig, alarms++; }
static void on_rt(int sig) { (void)sig, rt_ticks++; }

static void check(char *ok, size_t n) {
	stack_t ss;
	sigaltstack(NULL, &ss);
	if (ss.ss_sp != altstack || ss.ss_size != sizeof altstack || (ss.ss_flags & SS_DISABLE))
		fail("sigaltstack lost");
	struct sigaction sa;
	sigaction(SIGPIPE, NULL, &sa);
	if (sa.sa_handler != SIG_IGN)
		fail("SIGPIPE no longer ignored");
	sigaction(SIGUSR1, NULL, &sa);
	if (sa.sa_sigaction != on_usr1 || !(sa.sa_flags & SA_SIGINFO) || !(sa.sa_flags & SA_ONSTACK))
		fail("SIGUSR1 handler lost");
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	if (!sigismember(&cur, SIGUSR2) || sigismember(&cur, SIGUSR1))
		fail("signal mask changed");
	sigset_t pend;
	sigpending(&pend);
	if (!sigismember(&pend, SIGUSR2))
		fail("pending SIGUSR2 lost");
	mode_t m = umask(027);
	if (m != 027)
		fail("umask is %o", m);
	int before_usr1 = usr1;
	kill(getpid(), SIGUSR1);
	if (usr1 != before_usr1 + 1)
		fail("SIGUSR1 handler did not run");
	int a = alarms, r = rt_ticks;
	for (int i = 0; i < 1000 && (alarms == a || rt_ticks == r); i++)
		msleep(10);
	if (alarms == a)
		fail("interval timer stopped");
	if (rt_ticks == r)
		fail("POSIX timer stopped");
	if (timer_getoverrun(timer) < 0)
		fail("POSIX timer id %p is gone", (void *)timer);
	snprintf(ok, n, "usr1=%d alarms=%d rt=%d", usr1, alarms, rt_ticks);
}

/* A second round, for a check after restore: unblock SIGUSR2 and expect its
 * handler to run once with the queued value. */
static void tick(void) {
	char path[4096];
	snprintf(path, sizeof path, "%s/unblock", proto_dir);
	if (access(path, F_OK))
		return;
	unlink(path);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_UNBLOCK, &s, NULL);
	char out[128];
	snprintf(out, sizeof out, "%s usr2=%d value=%d\n", usr2 == 1 && usr2_value == 4242 ? "OK" : "FAIL", usr2, usr2_value);
	proto_write("unblocked", out);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	umask(027);
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
	sigaltstack(&ss, NULL);
	struct sigaction sa = {.sa_sigaction = on_usr1, .sa_flags = SA_SIGINFO | SA_ONSTACK};
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_sigaction = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	struct sigaction al = {.sa_handler = on_alrm, .sa_flags = SA_RESTART};
	sigaction(SIGALRM, &al, NULL);
	al.sa_handler = on_rt;
	sigaction(SIGRTMIN, &al, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	sigqueue(getpid(), SIGUSR2, (union sigval){.sival_int = 4242});
	struct itimerval it = {{0, 50000}, {0, 50000}};
	setitimer(ITIMER_REAL, &it, NULL);
	struct sigevent sev = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGRTMIN};
	timer_create(CLOCK_MONOTONIC, &sev, &timer);
	struct itimerspec its = {{0, 30000000}, {0, 30000000}};
	timer_settime(timer, 0, &its, NULL);
	char extra[64];
	snprintf(extra, sizeof extra, "timer=%p\n", (void *)timer);
	proto_ready(extra);
	proto_loop(check, tick);
}
