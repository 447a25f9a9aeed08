/*
 * pm-criu-swrk: runs `criu swrk <fd>` and relays its RPC messages over stdin/stdout.
 *
 * Node cannot open AF_UNIX SOCK_SEQPACKET sockets, and CRIU's RPC speaks one protobuf message per
 * SEQPACKET datagram. This helper owns the socketpair: every frame read from stdin (u32 little-endian
 * length + bytes) becomes one datagram to CRIU, every datagram from CRIU becomes one frame on stdout.
 *
 * Usage: pm-criu-swrk --criu PATH [--inherit PATH:FD]... [--connect PATH:FD]...
 *   --inherit PATH:FD  open PATH read-only and hand it to CRIU as fd FD (FD >= 3, not CLOEXEC), e.g. a
 *                      network namespace (/run/netns/NAME) for `inherit_fd fd[FD]:key`. The helper keeps
 *                      its own copy at the same number, so it also works for images_dir_fd/work_dir_fd,
 *                      which CRIU resolves as /proc/<this helper's pid>/fd/FD (the socket peer).
 *   --connect PATH:FD  connect a stream socket to the AF_UNIX listener at PATH and hand it to CRIU as fd FD,
 *                      e.g. the page socket of a lazy dump (criu_page_server_info.fd). The helper closes its
 *                      copy once CRIU runs, so the listener's side sees EOF when CRIU closes it.
 *
 * Exit status: CRIU's own exit code; 128+N if CRIU died of signal N; 125 for a helper failure (bad
 * arguments, oversized frame, I/O error); 127 if CRIU could not be executed. Diagnostics go to stderr,
 * one line each, prefixed "pm-criu-swrk: ".
 *
 * CRIU runs in a session of its own (so a terminal's ^C or hangup does not reach it or the tree it
 * restores) and with PR_SET_PDEATHSIG=SIGKILL (so it never outlives the helper). SIGTERM, SIGINT or
 * SIGHUP to the helper kill CRIU, which is how a caller aborts. Every other descriptor the helper
 * inherited is marked close-on-exec, so CRIU sees only 0-2, its socket and the --inherit files.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_HELPER 125
#define EXIT_NOEXEC 127
/* CRIU's RPC messages are a few hundred bytes; 1 MiB bounds every buffer with room to spare. */
#define MAX_FRAME_BYTES (1u << 20)
/* More would be a caller bug; each one costs a descriptor in CRIU. */
#define MAX_INHERIT 16
/* Room for SCM_RIGHTS CRIU may attach (e.g. orphan-pts-master); they are closed, never relayed. */
#define MAX_RECV_FDS 8

struct inherit {
	const char *path;
	int fd;
	int connect; /* 1: PATH is an AF_UNIX stream listener to connect to, not a file to open */
};

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void vlog(const char *fmt, va_list ap)
{
	char line[512];
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line))
		n = sizeof(line) - 1;
	dprintf(STDERR_FILENO, "pm-criu-swrk: %.*s\n", n, line);
}

static void warnx(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vlog(fmt, ap);
	va_end(ap);
	exit(EXIT_HELPER);
}

static void usage(void)
{
	die("usage: pm-criu-swrk --criu PATH [--inherit PATH:FD]...");
}

/* Marks every descriptor >= 3 close-on-exec: whatever our parent leaked stays out of CRIU. */
static void cloexec_inherited(void)
{
	if (close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) == 0)
		return;
	for (int fd = 3; fd < 4096; fd++)
		fcntl(fd, F_SETFD, FD_CLOEXEC);
}

static int parse_fd(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < 3 || v > 1023)
		return -1;
	return (int)v;
}

static size_t parse_args(int argc, char **argv, const char **criu, struct inherit *inh)
{
	size_t n = 0;
	*criu = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--criu") == 0 && i + 1 < argc) {
			*criu = argv[++i];
		} else if ((strcmp(argv[i], "--inherit") == 0 || strcmp(argv[i], "--connect") == 0) && i + 1 < argc) {
			int connect = strcmp(argv[i], "--connect") == 0;
			char *spec = argv[++i];
			char *colon = strrchr(spec, ':');
			if (!colon || colon == spec)
				die("--inherit wants PATH:FD, got \"%s\"", spec);
			if (n == MAX_INHERIT)
				die("at most %d --inherit options", MAX_INHERIT);
			*colon = '\0';
			inh[n].path = spec;
			inh[n].connect = connect;
			inh[n].fd = parse_fd(colon + 1);
			if (inh[n].fd < 0)
				die("--inherit %s: fd must be a number from 3 to 1023", spec);
			for (size_t j = 0; j < n; j++)
				if (inh[j].fd == inh[n].fd)
					die("--inherit: fd %d given twice", inh[n].fd);
			n++;
		} else {
			usage();
		}
	}
	if (!*criu)
		usage();
	return n;
}

/* A stream socket connected to the AF_UNIX listener at path (close-on-exec), or -1 with errno set. */
static int connect_unix(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* The smallest descriptor >= 3 that no --inherit claims: where CRIU finds its socket. */
static int pick_sock_fd(const struct inherit *inh, size_t n)
{
	for (int fd = 3;; fd++) {
		size_t j = 0;
		while (j < n && inh[j].fd != fd)
			j++;
		if (j == n)
			return fd;
	}
}

/* Moves fd to a number above every fixed one (close-on-exec), so later dup2s cannot clobber it. */
static int lift(int fd, int fd_floor)
{
	int hi = fcntl(fd, F_DUPFD_CLOEXEC, fd_floor);
	if (hi < 0)
		die("fcntl(F_DUPFD_CLOEXEC): %s", strerror(errno));
	close(fd);
	return hi;
}

static void write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("write to stdout: %s", strerror(errno));
		p += w;
		len -= (size_t)w;
	}
}

static pid_t spawn_criu(const char *criu, int sock_fd, const sigset_t *oldmask)
{
	char fdarg[16];
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid > 0)
		return pid;

	/* The child: CRIU must not read our frame stream or write into it. */
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
		warnx("redirecting CRIU's stdio: %s", strerror(errno));
		_exit(EXIT_HELPER);
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(EXIT_HELPER);
	setsid();
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	signal(SIGPIPE, SIG_DFL);
	snprintf(fdarg, sizeof(fdarg), "%d", sock_fd);
	execl(criu, criu, "swrk", fdarg, (char *)NULL);
	warnx("cannot execute %s: %s", criu, strerror(errno));
	_exit(EXIT_NOEXEC);
}

struct relay {
	int sock;          /* our end of the socketpair, -1 once CRIU closed it */
	int in_open;       /* stdin still delivers frames */
	unsigned char *in; /* partial frame from stdin: 4-byte header + body */
	size_t in_len;
	unsigned char *out; /* one datagram from CRIU, framed */
};

/* Sends every complete frame buffered from stdin as one datagram each. */
static void flush_frames(struct relay *r)
{
	for (;;) {
		if (r->in_len < 4)
			return;
		uint32_t len = (uint32_t)r->in[0] | (uint32_t)r->in[1] << 8 | (uint32_t)r->in[2] << 16 |
			       (uint32_t)r->in[3] << 24;
		if (len > MAX_FRAME_BYTES)
			die("frame of %u bytes from stdin exceeds %u", len, MAX_FRAME_BYTES);
		if (r->in_len < 4 + (size_t)len)
			return;
		if (r->sock >= 0 && send(r->sock, r->in + 4, len, MSG_NOSIGNAL) < 0) {
			/* CRIU has gone: its exit status says why, so keep going and report it. */
			warnx("send to criu: %s", strerror(errno));
		}
		memmove(r->in, r->in + 4 + len, r->in_len - 4 - len);
		r->in_len -= 4 + len;
	}
}

static void read_stdin(struct relay *r)
{
	ssize_t n = read(STDIN_FILENO, r->in + r->in_len, 4 + MAX_FRAME_BYTES - r->in_len);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* The caller is gone or done: CRIU then sees EOF on its next read and fails cleanly. */
		if (r->in_len > 0)
			warnx("stdin closed inside a frame (%zu bytes dropped)", r->in_len);
		r->in_open = 0;
		if (r->sock >= 0)
			shutdown(r->sock, SHUT_WR);
		return;
	}
	r->in_len += (size_t)n;
	flush_frames(r);
}

static void close_passed_fds(struct msghdr *mh)
{
	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
			continue;
		size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		int *fds = (int *)CMSG_DATA(c);
		for (size_t i = 0; i < nfd; i++)
			close(fds[i]);
		warnx("closed %zu descriptor(s) criu attached to a message", nfd);
	}
}

/* Relays one datagram from CRIU to stdout. Returns 0 when the socket is drained or at EOF. */
static int relay_datagram(struct relay *r, int flags)
{
	union {
		char buf[CMSG_SPACE(MAX_RECV_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { .iov_base = r->out + 4, .iov_len = MAX_FRAME_BYTES };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	ssize_t n = recvmsg(r->sock, &mh, MSG_CMSG_CLOEXEC | flags);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return 0;
	if (n < 0)
		warnx("recv from criu: %s", strerror(errno));
	if (n <= 0) {
		close(r->sock);
		r->sock = -1;
		return 0;
	}
	close_passed_fds(&mh);
	if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))
		die("criu sent a message over %u bytes or with too many descriptors", MAX_FRAME_BYTES);
	uint32_t len = (uint32_t)n;
	r->out[0] = len & 0xff;
	r->out[1] = (len >> 8) & 0xff;
	r->out[2] = (len >> 16) & 0xff;
	r->out[3] = (len >> 24) & 0xff;
	write_all(STDOUT_FILENO, r->out, 4 + (size_t)len);
	return 1;
}

static int exit_code_of(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_HELPER;
}

/* Handles one signal; returns 1 once CRIU has been reaped (its status in *status). */
static int on_signal(int sfd, pid_t child, int *status)
{
	struct signalfd_siginfo si;
	if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	if (si.ssi_signo != SIGCHLD) {
		warnx("got signal %u: killing criu", si.ssi_signo);
		kill(child, SIGKILL);
		return 0;
	}
	pid_t w = waitpid(child, status, WNOHANG);
	return w == child;
}

int main(int argc, char **argv)
{
	struct inherit inh[MAX_INHERIT];
	const char *criu;
	size_t ninh = parse_args(argc, argv, &criu, inh);
	int sock_fd = pick_sock_fd(inh, ninh);
	int fd_floor = sock_fd;
	for (size_t i = 0; i < ninh; i++)
		if (inh[i].fd > fd_floor)
			fd_floor = inh[i].fd;
	fd_floor++;

	cloexec_inherited();
	/* A dead caller must not leave CRIU running: our death kills CRIU through its PDEATHSIG. */
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	signal(SIGPIPE, SIG_IGN);

	sigset_t mask, oldmask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	if (sigprocmask(SIG_BLOCK, &mask, &oldmask) < 0)
		die("sigprocmask: %s", strerror(errno));
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd: %s", strerror(errno));
	sfd = lift(sfd, fd_floor);

	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair: %s", strerror(errno));
	int mine = lift(sv[0], fd_floor);
	int theirs = lift(sv[1], fd_floor);

	/* Each --inherit file sits at its number in the helper too (see the header comment). */
	for (size_t i = 0; i < ninh; i++) {
		int fd = inh[i].connect ? connect_unix(inh[i].path) : open(inh[i].path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			die("cannot %s %s: %s", inh[i].connect ? "connect to" : "open", inh[i].path, strerror(errno));
		fd = lift(fd, fd_floor);
		if (dup2(fd, inh[i].fd) < 0)
			die("dup2 to fd %d: %s", inh[i].fd, strerror(errno));
		close(fd);
	}
	if (dup2(theirs, sock_fd) < 0)
		die("dup2 to fd %d: %s", sock_fd, strerror(errno));
	close(theirs);

	pid_t child = spawn_criu(criu, sock_fd, &oldmask);
	close(sock_fd);
	for (size_t i = 0; i < ninh; i++)
		if (inh[i].connect)
			close(inh[i].fd);

	struct relay r = { .sock = mine, .in_open = 1 };
	r.in = malloc(4 + MAX_FRAME_BYTES);
	r.out = malloc(4 + MAX_FRAME_BYTES);
	if (!r.in || !r.out) {
		kill(child, SIGKILL);
		die("out of memory");
	}

	int status = 0;
	int reaped = 0;
	while (!reaped) {
		struct pollfd p[3] = {
			{ .fd = sfd, .events = POLLIN },
			{ .fd = r.sock, .events = POLLIN },
			{ .fd = r.in_open ? STDIN_FILENO : -1, .events = POLLIN },
		};
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			kill(child, SIGKILL);
			die("poll: %s", strerror(errno));
		}
		if (p[0].revents & POLLIN)
			reaped = on_signal(sfd, child, &status);
		if (r.sock >= 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			relay_datagram(&r, 0);
		if (r.in_open && (p[2].revents & (POLLIN | POLLHUP | POLLERR)))
			read_stdin(&r);
	}
	/* CRIU has exited: whatever it sent is already queued. Bounded by the socket's buffer. */
	while (r.sock >= 0 && relay_datagram(&r, MSG_DONTWAIT))
		;
	return exit_code_of(status);
}
