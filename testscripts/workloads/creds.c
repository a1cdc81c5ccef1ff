/* creds: takes on restricted credentials (started as root), records them
 * in DIR/expect, and checks from inside that it still has exactly those.
 * Modes (argv[2]):
 *   caps     uid 65534 keeping a reduced permitted/effective/inheritable
 *            set, two capabilities out of the bounding set, SECBIT_NOROOT
 *   ambient  uid 65534 with CAP_NET_BIND_SERVICE ambient: a program it
 *            runs (sh) has it effective, and it binds port 1023
 *   nnp      no_new_privs
 *   seccomp  two filters: uname fails with EPERM, acct kills the process
 * The check compares /proc/self/status's Cap*, NoNewPrivs, Seccomp lines,
 * the securebits and what a child shell gets with DIR/expect (a control
 * changes that file), and for seccomp tries the forbidden calls: uname
 * must fail with EPERM, a child calling acct must die of SIGSYS. */
#include "proto.h"
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <grp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#ifdef __x86_64__
#define ARCH AUDIT_ARCH_X86_64
#else
#define ARCH AUDIT_ARCH_AARCH64
#endif

static const char *mode;

static void die(const char *what) {
	perror(what);
	exit(2);
}

static void set_caps(unsigned long long eff, unsigned long long prm, unsigned long long inh) {
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2] = {
		{(unsigned)eff, (unsigned)prm, (unsigned)inh},
		{(unsigned)(eff >> 32), (unsigned)(prm >> 32), (unsigned)(inh >> 32)},
	};
	if (syscall(SYS_capset, &h, d))
		die("capset");
}

static void become_nobody(void) {
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		die("keepcaps");
	gid_t g = 65534;
	if (setgroups(1, &g) || setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
		die("become nobody");
}

static void add_filter(struct sock_filter *f, unsigned short n) {
	struct sock_fprog prog = {n, f};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		die("seccomp");
}

/* state describes what the check compares, as key=value lines. */
static void state(char *buf, size_t n) {
	char line[256], out[4096] = "";
	FILE *f = fopen("/proc/self/status", "r");
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Seccomp", 7) ||
		    !strncmp(line, "Uid", 3) || !strncmp(line, "Gid", 3))
			strncat(out, line, sizeof out - strlen(out) - 1);
	if (f)
		fclose(f);
	snprintf(line, sizeof line, "securebits:\t%#x\n", prctl(PR_GET_SECUREBITS, 0, 0, 0, 0));
	strncat(out, line, sizeof out - strlen(out) - 1);
	/* What a program it runs gets: the ambient set at work. */
	FILE *p = popen("grep CapEff /proc/self/status", "r");
	if (p && fgets(line, sizeof line, p)) {
		strncat(out, "child", sizeof out - strlen(out) - 1);
		strncat(out, line, sizeof out - strlen(out) - 1);
	}
	if (p)
		pclose(p);
	snprintf(buf, n, "%s", out);
}

static void check(char *ok, size_t n) {
	char now[4096], want[4096] = "", path[4096];
	state(now, sizeof now);
	snprintf(path, sizeof path, "%s/expect", proto_dir);
	FILE *f = fopen(path, "r");
	if (!f) {
		fail("no %s", path);
		return;
	}
	size_t got = fread(want, 1, sizeof want - 1, f);
	want[got] = 0;
	fclose(f);
	if (strcmp(now, want)) {
		/* Name the first line that differs. */
		char *a = now, *b = want;
		while (*a && *a == *b)
			a++, b++;
		while (a > now && a[-1] != '\n')
			a--, b--;
		fail("credentials differ: now %.*s, was %.*s", (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
		return;
	}
	if (!strcmp(mode, "seccomp")) {
		struct utsname u;
		if (uname(&u) != -1 || errno != EPERM)
			fail("uname was not refused with EPERM (%s)", strerror(errno));
		pid_t c = fork();
		if (c == 0) {
			syscall(SYS_acct, NULL);
			_exit(0);
		}
		int st;
		if (c < 0 || waitpid(c, &st, 0) != c)
			fail("fork for acct: %s", strerror(errno));
		else if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGSYS)
			fail("a child calling acct was not killed by SIGSYS (status %#x)", st);
	}
	if (!strcmp(mode, "ambient")) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(1023), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int one = 1;
		setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (bind(s, (struct sockaddr *)&a, sizeof a))
			fail("bind port 1023: %s", strerror(errno));
		close(s);
	}
	snprintf(ok, n, "%s credentials as they were", mode);
}

int main(int argc, char **argv) {
	proto_init(argc, argv);
	mode = argc > 2 ? argv[2] : "";
	const unsigned long long bind = 1ULL << CAP_NET_BIND_SERVICE, raw = 1ULL << CAP_NET_RAW,
				 chown_ = 1ULL << CAP_CHOWN;
	if (!strcmp(mode, "caps")) {
		if (prctl(PR_CAPBSET_DROP, CAP_SYS_MODULE, 0, 0, 0) || prctl(PR_CAPBSET_DROP, CAP_SYS_RAWIO, 0, 0, 0))
			die("bounding set");
		if (prctl(PR_SET_SECUREBITS, 1 << 0 /* SECBIT_NOROOT */, 0, 0, 0))
			die("securebits");
		become_nobody();
		set_caps(bind | chown_, bind | chown_ | raw, raw);
	} else if (!strcmp(mode, "ambient")) {
		become_nobody();
		set_caps(bind, bind, bind);
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
			die("ambient");
		prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
	} else if (!strcmp(mode, "nnp")) {
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			die("no_new_privs");
	} else if (!strcmp(mode, "seccomp")) {
		struct sock_filter f1[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_uname, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_filter f2[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_acct, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		add_filter(f1, sizeof f1 / sizeof f1[0]);
		add_filter(f2, sizeof f2 / sizeof f2[0]);
	} else {
		fprintf(stderr, "usage: creds DIR caps|ambient|nnp|seccomp\n");
		exit(2);
	}
	char s[4096];
	state(s, sizeof s);
	proto_write("expect", s);
	proto_ready(NULL);
	proto_loop(check, NULL);
}
