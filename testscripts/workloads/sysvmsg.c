/* sysvmsg: a System V message queue between a parent and its child. The
 * queue has a key, mode 0620 and a capacity of 12000 bytes (lowered); between
 * checks it holds the five messages (types 1, 2, 3, 1, 2, texts of
 * several sizes) of the next round, sent by the child, which then waits
 * in msgrcv for a type-99 message. The check receives the five in order
 * and compares them, finds the queue by its key with the same id, mode
 * and capacity, and has the child send the next round. ready has id=,
 * key= and addr= (the salt the parent's expected texts derive from) for a
 * control run to change. "send ID": only send a message to queue ID and
 * stay (a process outside). */
#include "proto.h"
#include <sys/ipc.h>
#include <sys/msg.h>

#define NMSG 5
static const long types[NMSG] = {1, 2, 3, 1, 2};
static const int sizes[NMSG] = {1, 100, 4000, 0, 2500};
static volatile unsigned long salt = 0x5eed;
static key_t key;
static int id;
static long round_no = 1;

struct msg {
	long type;
	char text[8192];
};

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void fill(struct msg *m, long round, int i) {
	m->type = types[i];
	for (int j = 0; j < sizes[i]; j++)
		m->text[j] = (char)((salt + round * 7 + i * 13 + j) % 251);
}

static void child(void) {
	for (long round = 1;; round++) {
		struct msg m;
		for (int i = 0; i < NMSG; i++) {
			fill(&m, round, i);
			if (msgsnd(id, &m, sizes[i], 0))
				die("msgsnd");
		}
		if (msgrcv(id, &m, sizeof m.text, 99, 0) < 0)
			die("msgrcv go");
	}
}

static void check(char *ok, size_t n) {
	int got = msgget(key, 0);
	struct msqid_ds ds;
	if (got != id || msgctl(id, IPC_STAT, &ds)) {
		fail("key %#x finds queue %d, want %d (%s)", key, got, id, strerror(errno));
		return;
	}
	if ((ds.msg_perm.mode & 0777) != 0620 || ds.msg_qbytes != 12000 || ds.msg_qnum != NMSG)
		fail("queue %d: mode %o, capacity %lu, %lu messages; want 620, 12000, %d", id, ds.msg_perm.mode & 0777,
		     (unsigned long)ds.msg_qbytes, (unsigned long)ds.msg_qnum, NMSG);
	for (int i = 0; i < NMSG; i++) {
		struct msg m, want;
		ssize_t r = msgrcv(id, &m, sizeof m.text, 0, IPC_NOWAIT);
		fill(&want, round_no, i);
		if (r != sizes[i] || m.type != want.type || memcmp(m.text, want.text, sizes[i])) {
			fail("round %ld message %d: %zd bytes of type %ld, want %d of type %ld%s", round_no, i, r, m.type, sizes[i],
			     want.type, r == sizes[i] && m.type == want.type ? " (text differs)" : "");
			return;
		}
	}
	round_no++;
	struct msg go = {99, "go"};
	if (msgsnd(id, &go, 2, 0))
		fail("msgsnd go: %s", strerror(errno));
	for (int i = 0; i < 300 && !msgctl(id, IPC_STAT, &ds) && ds.msg_qnum < NMSG; i++)
		msleep(5);
	snprintf(ok, n, "id=%d key=%#x round=%ld", id, key, round_no);
}

static void sent(char *ok, size_t n) { snprintf(ok, n, "sent"); }

int main(int argc, char **argv) {
	proto_init(argc, argv);
	if (argc > 3 && !strcmp(argv[2], "send")) {
		struct msg m = {50, "from outside"};
		if (msgsnd(atoi(argv[3]), &m, 12, 0))
			die("msgsnd");
		proto_ready(NULL);
		proto_loop(sent, NULL);
	}
	key = 0x52460000 | (getpid() & 0xffff);
	id = msgget(key, IPC_CREAT | IPC_EXCL | 0620);
	if (id < 0)
		die("msgget");
	struct msqid_ds ds;
	if (msgctl(id, IPC_STAT, &ds))
		die("IPC_STAT");
	ds.msg_qbytes = 12000;
	if (msgctl(id, IPC_SET, &ds))
		die("IPC_SET");
	pid_t kid = fork();
	if (kid < 0)
		die("fork");
	if (kid == 0)
		child();
	for (int i = 0; i < 400 && !msgctl(id, IPC_STAT, &ds) && ds.msg_qnum < NMSG; i++)
		msleep(5);
	char buf[128];
	snprintf(buf, sizeof buf, "kid=%d\nid=%d\nkey=%#x\naddr=%p\n", kid, id, key, (void *)&salt);
	proto_ready(buf);
	proto_loop(check, NULL);
}
