/* events: eventfd (counter and semaphore), timerfd, signalfd and an epoll
 * watching them and a pipe. The check reads every one of them and removes
 * a watch with EPOLL_CTL_DEL, which needs the watch keyed on the same fd
 * number as before the checkpoint. */
#include "proto.h"
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

static int efd, semfd, tfd, sfd, ep, pipefd[2];

static void check(char *ok, size_t n) {
	uint64_t v = 0;
	if (read(efd, &v, 8) != 8 || v != 5)
		fail("eventfd counter is %llu, want 5", (unsigned long long)v);
	v = 5;
	write(efd, &v, 8); /* put it back for the next check */
	if (read(semfd, &v, 8) != 8 || v != 1)
		fail("semaphore eventfd read %llu, want 1", (unsigned long long)v);
	v = 1;
	write(semfd, &v, 8);
	struct epoll_event evs[8];
	int got = epoll_wait(ep, evs, 8, 2000), seen_efd = 0, seen_timer = 0;
	for (int i = 0; i < got; i++) {
		if (evs[i].data.u64 == 0xe1e1)
			seen_efd = 1;
		if (evs[i].data.u64 == 0x7171)
			seen_timer = 1;
	}
	if (!seen_efd)
		fail("epoll did not report the eventfd (%d events)", got);
	/* Up to 5 s by the clock: the eventfd is always ready, so epoll_wait
	 * returns at once and a count of rounds would not wait at all. */
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (now = t0; !seen_timer && now.tv_sec - t0.tv_sec < 5; clock_gettime(CLOCK_MONOTONIC, &now)) {
		msleep(5);
		got = epoll_wait(ep, evs, 8, 50);
		for (int k = 0; k < got; k++)
			seen_timer |= evs[k].data.u64 == 0x7171;
	}
	if (!seen_timer)
		fail("timerfd stopped firing");
	uint64_t ticks;
	if (read(tfd, &ticks, 8) != 8 || ticks == 0)
		fail("timerfd read failed");
	kill(getpid(), SIGUSR1);
	struct signalfd_siginfo si;
	if (read(sfd, &si, sizeof si) != sizeof si || si.ssi_signo != SIGUSR1)
		fail("signalfd did not report SIGUSR1");
	if (epoll_ctl(ep, EPOLL_CTL_DEL, pipefd[0], NULL) || epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &(struct epoll_event){.events = EPOLLIN, .data.u64 = 0x9191}))
		fail("epoll_ctl DEL/ADD of the pipe: %s", strerror(errno));
	snprintf(ok, n, "ticks=%llu", (unsigned long long)ticks);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	efd = eventfd(5, EFD_NONBLOCK);
	semfd = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec its = {{0, 20000000}, {0, 20000000}};
	timerfd_settime(tfd, 0, &its, NULL);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigprocmask(SIG_BLOCK, &m, NULL);
	sfd = signalfd(-1, &m, SFD_NONBLOCK);
	pipe(pipefd);
	ep = epoll_create1(0);
	epoll_ctl(ep, EPOLL_CTL_ADD, efd, &(struct epoll_event){.events = EPOLLIN, .data.u64 = 0xe1e1});
	epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &(struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = 0x7171});
	epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &(struct epoll_event){.events = EPOLLIN, .data.u64 = 0x9191});
	uint64_t v;
	read(semfd, &v, 8); /* semaphore: 3 -> 2 */
	read(semfd, &v, 8); /* 2 -> 1 */
	proto_ready(NULL);
	proto_loop(check, NULL);
}
