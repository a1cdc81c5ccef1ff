/* ptypair: a pseudo-terminal held whole by the tree. The parent holds the
 * master (window 40x120); its child is a session leader whose controlling
 * terminal is the slave, with echo off; the child's child runs in a
 * process group of its own that the child made the terminal's foreground
 * group, and answers each "ping N" line it reads from the terminal. The
 * check sends a ping through the master and wants an answer that says the
 * terminal is the answering process's controlling terminal
 * (/dev/tty opens), that its group is in the foreground of the child's
 * session, and that the window size and echo flag are as set. ready has
 * rows= (the address of the expected row count) for a control run to
 * change. With "queued" as second argument nobody reads the slave and the
 * parent leaves bytes in it. */
#include "proto.h"
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>

static volatile long want_rows = 40, want_cols = 120;
static int master;
static pid_t child, reader;
static long seq;

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void answer(void) {
	char line[256];
	for (;;) {
		ssize_t n = read(0, line, sizeof line - 1);
		if (n <= 0) {
			msleep(10);
			continue;
		}
		line[n] = 0;
		long id;
		if (sscanf(line, "ping %ld", &id) != 1)
			continue;
		struct winsize ws = {0};
		struct termios t;
		ioctl(0, TIOCGWINSZ, &ws);
		tcgetattr(0, &t);
		int tty = open("/dev/tty", O_RDWR | O_CLOEXEC);
		char out[512];
		snprintf(out, sizeof out, "pong %ld fg=%d pgrp=%d sid=%d devtty=%s rows=%d cols=%d echo=%s\n", id,
			 (int)tcgetpgrp(0), (int)getpgrp(), (int)getsid(0), tty >= 0 ? "yes" : "no", ws.ws_row,
			 ws.ws_col, t.c_lflag & ECHO ? "on" : "off");
		if (tty >= 0)
			close(tty);
		if (write(1, out, strlen(out)) < 0)
			exit(2);
	}
}

static void session(const char *slave, int queued) {
	close(master);
	if (setsid() < 0)
		die("setsid");
	int s = open(slave, O_RDWR); /* no O_NOCTTY: becomes the controlling terminal */
	if (s < 0)
		die(slave);
	dup2(s, 0);
	dup2(s, 1);
	if (s > 1)
		close(s);
	struct termios t;
	tcgetattr(0, &t);
	t.c_lflag &= ~(ECHO | ECHONL);
	tcsetattr(0, TCSANOW, &t);
	if (queued)
		for (;;)
			msleep(100);
	signal(SIGTTOU, SIG_IGN);
	int go[2];
	if (pipe(go))
		die("pipe");
	pid_t r = fork();
	if (r < 0)
		die("fork");
	if (r == 0) {
		char b;
		setpgid(0, 0);
		if (read(go[0], &b, 1) != 1)
			exit(2);
		answer();
	}
	setpgid(r, r);
	if (tcsetpgrp(0, r))
		die("tcsetpgrp");
	if (write(go[1], "g", 1) != 1)
		die("write");
	for (;;)
		msleep(100);
}

static void check(char *ok, size_t n) {
	char buf[512];
	seq++;
	int len = snprintf(buf, sizeof buf, "ping %ld\n", seq);
	if (write(master, buf, len) != len) {
		fail("write to the master: %s", strerror(errno));
		return;
	}
	char got[1024] = "";
	size_t have = 0;
	for (int i = 0; i < 200 && !strchr(got, '\n'); i++) {
		struct pollfd p = {master, POLLIN, 0};
		if (poll(&p, 1, 10) == 1) {
			ssize_t r = read(master, got + have, sizeof got - 1 - have);
			if (r > 0)
				have += r, got[have] = 0;
		}
	}
	long id;
	int fg, pgrp, sid, rows, cols;
	char devtty[8], echo[8];
	char *line = strstr(got, "pong");
	if (!line || sscanf(line, "pong %ld fg=%d pgrp=%d sid=%d devtty=%7s rows=%d cols=%d echo=%7s", &id, &fg, &pgrp, &sid,
			    devtty, &rows, &cols, echo) != 8) {
		fail("no answer to ping %ld (got %.100s)", seq, got);
		return;
	}
	if (id != seq || fg != pgrp || pgrp != reader || sid != child || strcmp(devtty, "yes") || rows != want_rows ||
	    cols != want_cols || strcmp(echo, "off"))
		fail("answer %ld: foreground %d, its group %d (want %d), session %d (want %d), /dev/tty %s, %dx%d (want %ldx%ld), echo %s",
		     id, fg, pgrp, (int)reader, sid, (int)child, devtty, rows, cols, want_rows, want_cols, echo);
	snprintf(ok, n, "pong %ld rows=%d cols=%d", id, rows, cols);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	int queued = argc > 2 && !strcmp(argv[2], "queued");
	master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (master < 0 || grantpt(master) || unlockpt(master))
		die("posix_openpt");
	struct winsize ws = {.ws_row = (unsigned short)want_rows, .ws_col = (unsigned short)want_cols};
	if (ioctl(master, TIOCSWINSZ, &ws))
		die("TIOCSWINSZ");
	char slave[64];
	snprintf(slave, sizeof slave, "%s", ptsname(master));
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0)
		session(slave, queued);
	if (queued) {
		msleep(100);
		if (write(master, "unread\n", 7) != 7)
			die("write");
	} else {
		/* The reader is the child's child: its pid is the foreground group. */
		for (int i = 0; i < 500 && !reader; i++) {
			pid_t fg = tcgetpgrp(master); /* the slave's, asked through the master */
			if (fg > 0 && fg != child)
				reader = fg;
			else
				msleep(10);
		}
		if (!reader)
			die("no foreground reader");
	}
	char extra[128];
	snprintf(extra, sizeof extra, "child=%d\nreader=%d\nrows=%p\n", child, reader, (void *)&want_rows);
	proto_ready(extra);
	proto_loop(check, NULL);
}
