/*
 * workload.c is the process capture.sh photographs for testdata/real: it
 * gives itself a comm with parentheses, maps files whose names hold spaces
 * and " (deleted)", creates POSIX timers, an eventfd, an epoll set, inotify
 * and fanotify watches, timerfds, a signalfd, a pidfd and file locks, starts
 * two threads with names that status escapes, two children and a zombie,
 * prints "PID ZOMBIE" and waits for its stdin to close.
 *
 * usage: workload DIR   (DIR: an existing directory it may write in)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/timerfd.h>
#include <sys/signalfd.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/fanotify.h>
#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

static pthread_barrier_t started;

/* Threads name themselves with bytes that /proc/PID/status escapes. */
static void *thr(void *a) {
	(void)a;
	prctl(PR_SET_NAME, "a\tb\nc\\d\"e f ");
	pthread_barrier_wait(&started);
	for (;;) pause();
	return NULL;
}

static void on_alarm(int sig) { (void)sig; }

static void mapfile(const char *path, int unlink_it) {
	int fd = open(path, O_RDWR|O_CREAT|O_TRUNC, 0644);
	if (fd < 0) { perror(path); exit(1); }
	ftruncate(fd, 8192);
	void *p = mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) { perror("mmap"); exit(1); }
	((char*)p)[0] = 1;
	if (unlink_it) unlink(path);
	close(fd);
}

int main(int argc, char **argv) {
	if (argc != 2) { fprintf(stderr, "usage: workload DIR\n"); return 2; }
	const char *dir = argv[1];
	char path[512];
	prctl(PR_SET_NAME, "((ugly )pr()cess(");
	umask(027);
	chdir(dir);

	/* signals */
	sigset_t ss; sigemptyset(&ss); sigaddset(&ss, SIGUSR1); sigaddset(&ss, SIGRTMIN+3);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGALRM, on_alarm);
	signal(SIGTERM, SIG_DFL);
	raise(SIGUSR1); /* pending, blocked */

	/* descriptors */
	int efd = eventfd(7, EFD_SEMAPHORE|EFD_CLOEXEC|EFD_NONBLOCK);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int pfd[2]; pipe2(pfd, 0);
	struct epoll_event ev = { .events = EPOLLIN|EPOLLET, .data.u64 = 0xdeadbeefcafe };
	epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev);
	ev.events = EPOLLOUT; ev.data.u64 = pfd[1];
	epoll_ctl(ep, EPOLL_CTL_ADD, pfd[1], &ev);
	ev.events = EPOLLIN|EPOLLRDHUP|EPOLLONESHOT; ev.data.u64 = pfd[0];
	epoll_ctl(ep, EPOLL_CTL_ADD, pfd[0], &ev);
	int in = inotify_init1(IN_NONBLOCK);
	inotify_add_watch(in, dir, IN_CREATE|IN_DELETE|IN_MOVED_TO);
	inotify_add_watch(in, "/etc", IN_MODIFY|IN_ONESHOT);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
	struct itimerspec its = { .it_interval = {1, 500}, .it_value = {100, 0} };
	timerfd_settime(tfd, 0, &its, NULL);
	int tfd2 = timerfd_create(CLOCK_REALTIME, 0);
	struct itimerspec its2 = { .it_interval = {0, 0}, .it_value = {2000000000, 0} };
	timerfd_settime(tfd2, TFD_TIMER_ABSTIME, &its2, NULL);
	sigset_t sfs; sigemptyset(&sfs); sigaddset(&sfs, SIGUSR2); sigaddset(&sfs, SIGCHLD);
	int sfd = signalfd(-1, &sfs, SFD_NONBLOCK);
	snprintf(path, sizeof path, "%s/locked file", dir);
	int lfd = open(path, O_RDWR|O_CREAT|O_APPEND, 0600);
	write(lfd, "hello", 5);
	flock(lfd, LOCK_EX);
	struct flock fl = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 2 };
	int lfd2 = open(path, O_RDONLY);
	lseek(lfd2, 3, SEEK_SET);
	fcntl(lfd2, F_SETLK, &fl);
	(void)efd; (void)tfd; (void)sfd; (void)lfd2;
	int fan = fanotify_init(FAN_CLASS_NOTIF|FAN_NONBLOCK, O_RDONLY);
	if (fan >= 0) {
		fanotify_mark(fan, FAN_MARK_ADD, FAN_MODIFY|FAN_CLOSE_WRITE, AT_FDCWD, dir);
		fanotify_mark(fan, FAN_MARK_ADD|FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, "/");
	}
	int pidfd = syscall(SYS_pidfd_open, getpid(), 0);
	(void)pidfd;

	/* mappings */
	snprintf(path, sizeof path, "%s/with space.bin", dir); mapfile(path, 0);
	snprintf(path, sizeof path, "%s/gone.bin", dir); mapfile(path, 1);
	snprintf(path, sizeof path, "%s/a (deleted) b", dir); mapfile(path, 0);
	snprintf(path, sizeof path, "%s/x (deleted) y (deleted)", dir); mapfile(path, 1);
	int mfd = memfd_create("my memfd", 0); ftruncate(mfd, 4096);
	mmap(NULL, 4096, PROT_READ, MAP_SHARED, mfd, 0);                        
	void *sh = mmap(NULL, 16384, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_ANONYMOUS, -1, 0);
	((char*)sh)[0] = 1;
	void *an = mmap(NULL, 3*4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
	memset(an, 1, 4096);
	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, an, 3*4096, "my region");
	void *g = mmap(NULL, 8192, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
	madvise(g, 8192, MADV_DONTFORK);
	void *h = mmap(NULL, 4<<20, PROT_READ|PROT_WRITE|PROT_EXEC, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
	madvise(h, 4<<20, MADV_NOHUGEPAGE);
	mlock(an, 4096);
	(void)g; (void)h;

	/* posix timers */
	timer_t t1, t2, t3, t4;
	struct sigevent se = {0};
	se.sigev_notify = SIGEV_SIGNAL; se.sigev_signo = SIGALRM; se.sigev_value.sival_ptr = (void*)0x1234abcdULL;
	timer_create(CLOCK_REALTIME, &se, &t1);
	se.sigev_notify = SIGEV_NONE;
	timer_create(CLOCK_MONOTONIC, &se, &t2);
	se.sigev_notify = SIGEV_THREAD_ID; se.sigev_signo = SIGRTMIN+1; se.sigev_value.sival_int = 42;
	se._sigev_un._tid = syscall(SYS_gettid);
	timer_create(CLOCK_BOOTTIME, &se, &t3);
	se.sigev_notify = SIGEV_SIGNAL; se.sigev_signo = SIGUSR2;
	timer_create(CLOCK_PROCESS_CPUTIME_ID, &se, &t4);
	struct itimerspec ts = { .it_interval = {5, 0}, .it_value = {500, 0} };
	timer_settime(t1, 0, &ts, NULL);

	/* threads and children */
	pthread_barrier_init(&started, NULL, 3);
	pthread_t th; pthread_create(&th, NULL, thr, NULL);
	pthread_create(&th, NULL, thr, NULL);
	pthread_barrier_wait(&started);
	if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); pause(); _exit(0); }
	if (fork() == 0) { prctl(PR_SET_PDEATHSIG, SIGKILL); pause(); _exit(0); }

	pid_t z = fork();
	if (z == 0) _exit(3);
	siginfo_t si; waitid(P_PID, z, &si, WEXITED|WNOWAIT);
	printf("%d %d\n", getpid(), z); fflush(stdout);
	char c; read(0, &c, 1);
	return 0;
}
