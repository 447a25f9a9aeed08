/*
 * pm-spawnd: runs short commands for a node agent, so that the agent does not fork itself.
 *
 * Forking copies the parent's page tables: from a Node.js agent of ~100 MB that costs ~5 ms per command,
 * and a migration's freeze runs several (hold mode, socket sequence reads, routes). This helper is small,
 * starts once, and starts each command with posix_spawn (~1 ms).
 *
 * Protocol, on stdin/stdout, little-endian:
 *   request  'R' u32 id, u32 argc, argc x (u32 len, bytes), u32 input_len (0xffffffff: no input, stdin is
 *            /dev/null), input bytes
 *            'K' u32 id: SIGKILL that command (a timeout on the agent's side)
 *   reply    u32 id, u8 kind (0 exited, 1 killed by a signal, 2 could not start), i32 value (exit code,
 *            signal number or errno), u32 out_len, stdout bytes, u32 err_len, stderr bytes
 * Commands inherit this helper's environment and working directory. Each stream keeps at most 1 MiB.
 * The helper exits when its stdin closes, and dies with its parent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_JOBS 256
#define MAX_KEPT (1u << 20)
#define MAX_REQUEST (16u << 20)
#define NO_INPUT 0xffffffffu

struct stream {
	int fd;
	char *buf;
	uint32_t len, cap;
};

struct job {
	int used;
	uint32_t id;
	pid_t pid;
	int exited;
	int status;
	struct stream out, err;
	int in_fd;
	char *input;
	uint32_t input_len, input_off;
};

static struct job jobs[MAX_JOBS];
static char *req;
static size_t req_len, req_cap;

static void die(const char *what)
{
	fprintf(stderr, "pm-spawnd: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void put_all(const void *p, size_t n)
{
	const char *c = p;
	while (n > 0) {
		ssize_t w = write(STDOUT_FILENO, c, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("write reply");
		c += w;
		n -= (size_t)w;
	}
}

static void reply(uint32_t id, uint8_t kind, int32_t value, const struct stream *out, const struct stream *err)
{
	uint32_t zero = 0;
	put_all(&id, 4);
	put_all(&kind, 1);
	put_all(&value, 4);
	put_all(out ? &out->len : &zero, 4);
	if (out && out->len)
		put_all(out->buf, out->len);
	put_all(err ? &err->len : &zero, 4);
	if (err && err->len)
		put_all(err->buf, err->len);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void finish_if_done(struct job *j)
{
	if (!j->used || !j->exited || j->out.fd >= 0 || j->err.fd >= 0)
		return;
	if (WIFSIGNALED(j->status))
		reply(j->id, 1, WTERMSIG(j->status), &j->out, &j->err);
	else
		reply(j->id, 0, WEXITSTATUS(j->status), &j->out, &j->err);
	close_fd(&j->in_fd);
	free(j->out.buf);
	free(j->err.buf);
	free(j->input);
	memset(j, 0, sizeof(*j));
}

static void start(uint32_t id, char **argv, char *input, uint32_t input_len)
{
	struct job *j = NULL;
	int o[2] = { -1, -1 }, e[2] = { -1, -1 }, i[2] = { -1, -1 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, defaults;
	int rc;

	for (int k = 0; k < MAX_JOBS; k++)
		if (!jobs[k].used) {
			j = &jobs[k];
			break;
		}
	if (!j) {
		reply(id, 2, EAGAIN, NULL, NULL);
		free(input);
		return;
	}
	if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC) || (input_len != NO_INPUT && pipe2(i, O_CLOEXEC))) {
		rc = errno;
		close_fd(&o[0]), close_fd(&o[1]), close_fd(&e[0]), close_fd(&e[1]), close_fd(&i[0]), close_fd(&i[1]);
		reply(id, 2, rc, NULL, NULL);
		free(input);
		return;
	}
	posix_spawn_file_actions_init(&fa);
	if (input_len == NO_INPUT)
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	else
		posix_spawn_file_actions_adddup2(&fa, i[0], 0);
	posix_spawn_file_actions_adddup2(&fa, o[1], 1);
	posix_spawn_file_actions_adddup2(&fa, e[1], 2);
	/* The command gets the signal state a fresh process has, not this helper's. */
	posix_spawnattr_init(&at);
	sigemptyset(&none);
	sigemptyset(&defaults);
	sigaddset(&defaults, SIGPIPE);
	sigaddset(&defaults, SIGCHLD);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &defaults);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	rc = posix_spawnp(&j->pid, argv[0], &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close_fd(&o[1]);
	close_fd(&e[1]);
	close_fd(&i[0]);
	if (rc != 0) {
		close_fd(&o[0]), close_fd(&e[0]), close_fd(&i[1]);
		reply(id, 2, rc, NULL, NULL);
		free(input);
		return;
	}
	j->used = 1;
	j->id = id;
	j->out.fd = o[0];
	j->err.fd = e[0];
	j->in_fd = i[1];
	j->input = input;
	j->input_len = input_len == NO_INPUT ? 0 : input_len;
	j->input_off = 0;
	if (j->in_fd >= 0) {
		fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
		if (j->input_len == 0)
			close_fd(&j->in_fd);
	}
}

static int take_u32(size_t *off, uint32_t *v)
{
	if (*off + 4 > req_len)
		return 0;
	memcpy(v, req + *off, 4);
	*off += 4;
	return 1;
}

/* Handles every complete request at the front of req; returns how many bytes they used. */
static size_t handle_requests(void)
{
	size_t done = 0;

	for (;;) {
		size_t off = done;
		uint32_t id, argc, len;

		if (off + 1 > req_len)
			break;
		char type = req[off++];
		if (type == 'K') {
			if (!take_u32(&off, &id))
				break;
			for (int k = 0; k < MAX_JOBS; k++)
				if (jobs[k].used && jobs[k].id == id && !jobs[k].exited)
					kill(jobs[k].pid, SIGKILL);
			done = off;
			continue;
		}
		if (type != 'R') {
			fprintf(stderr, "pm-spawnd: bad request type %d\n", type);
			exit(1);
		}
		if (!take_u32(&off, &id) || !take_u32(&off, &argc))
			break;
		if (argc == 0 || argc > 4096) {
			fprintf(stderr, "pm-spawnd: bad argument count %u\n", argc);
			exit(1);
		}
		size_t arg_at[4096];
		uint32_t arg_len[4096];
		int complete = 1;
		for (uint32_t a = 0; a < argc && complete; a++) {
			if (!take_u32(&off, &len) || off + len > req_len) {
				complete = 0;
				break;
			}
			arg_at[a] = off;
			arg_len[a] = len;
			off += len;
		}
		if (!complete || !take_u32(&off, &len))
			break;
		uint32_t input_len = len;
		if (input_len != NO_INPUT && off + input_len > req_len)
			break;
		char **argv = calloc(argc + 1, sizeof(char *));
		if (!argv)
			die("calloc");
		for (uint32_t a = 0; a < argc; a++)
			argv[a] = strndup(req + arg_at[a], arg_len[a]);
		char *input = NULL;
		if (input_len != NO_INPUT && input_len > 0) {
			input = malloc(input_len);
			if (!input)
				die("malloc");
			memcpy(input, req + off, input_len);
			off += input_len;
		}
		start(id, argv, input, input_len);
		for (uint32_t a = 0; a < argc; a++)
			free(argv[a]);
		free(argv);
		done = off;
	}
	return done;
}

static void read_stream(struct job *j, struct stream *s)
{
	char buf[65536];
	ssize_t n = read(s->fd, buf, sizeof(buf));

	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		close_fd(&s->fd);
		finish_if_done(j);
		return;
	}
	uint32_t keep = s->len >= MAX_KEPT ? 0 : (uint32_t)n;
	if (keep > MAX_KEPT - s->len)
		keep = MAX_KEPT - s->len;
	if (keep == 0)
		return;
	if (s->len + keep > s->cap) {
		uint32_t cap = s->cap ? s->cap : 4096;
		while (cap < s->len + keep)
			cap *= 2;
		char *b = realloc(s->buf, cap);
		if (!b)
			die("realloc");
		s->buf = b;
		s->cap = cap;
	}
	memcpy(s->buf + s->len, buf, keep);
	s->len += keep;
}

int main(void)
{
	sigset_t chld;
	int sfd;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		return 0;
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL))
		die("sigprocmask");
	sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd");
	fcntl(STDIN_FILENO, F_SETFD, FD_CLOEXEC);
	fcntl(STDOUT_FILENO, F_SETFD, FD_CLOEXEC);

	for (int open_in = 1; open_in;) {
		struct pollfd p[2 + 3 * MAX_JOBS];
		struct { struct job *j; int which; } who[2 + 3 * MAX_JOBS];
		int n = 0;

		p[n] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
		who[n++].j = NULL;
		p[n] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		who[n++].j = NULL;
		for (int k = 0; k < MAX_JOBS; k++) {
			struct job *j = &jobs[k];
			if (!j->used)
				continue;
			if (j->out.fd >= 0)
				p[n] = (struct pollfd){ .fd = j->out.fd, .events = POLLIN }, who[n].j = j, who[n++].which = 1;
			if (j->err.fd >= 0)
				p[n] = (struct pollfd){ .fd = j->err.fd, .events = POLLIN }, who[n].j = j, who[n++].which = 2;
			if (j->in_fd >= 0)
				p[n] = (struct pollfd){ .fd = j->in_fd, .events = POLLOUT }, who[n].j = j, who[n++].which = 0;
		}
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof(si)) == sizeof(si))
				;
			for (;;) {
				int status;
				pid_t pid = waitpid(-1, &status, WNOHANG);
				if (pid <= 0)
					break;
				for (int k = 0; k < MAX_JOBS; k++)
					if (jobs[k].used && jobs[k].pid == pid) {
						jobs[k].exited = 1;
						jobs[k].status = status;
						finish_if_done(&jobs[k]);
						break;
					}
			}
		}
		for (int x = 2; x < n; x++) {
			struct job *j = who[x].j;
			if (!p[x].revents || !j->used)
				continue;
			if (who[x].which == 1 && j->out.fd == p[x].fd)
				read_stream(j, &j->out);
			else if (who[x].which == 2 && j->err.fd == p[x].fd)
				read_stream(j, &j->err);
			else if (who[x].which == 0 && j->in_fd == p[x].fd) {
				ssize_t w = write(j->in_fd, j->input + j->input_off, j->input_len - j->input_off);
				if (w > 0)
					j->input_off += (uint32_t)w;
				/* A command that exits before reading its input shows that in its exit code. */
				if ((w < 0 && errno != EAGAIN && errno != EINTR) || j->input_off == j->input_len)
					close_fd(&j->in_fd);
			}
		}
		if (p[0].revents) {
			if (req_len == req_cap) {
				req_cap = req_cap ? req_cap * 2 : 65536;
				if (req_cap > MAX_REQUEST * 2) {
					fprintf(stderr, "pm-spawnd: request too large\n");
					exit(1);
				}
				req = realloc(req, req_cap);
				if (!req)
					die("realloc");
			}
			ssize_t r = read(STDIN_FILENO, req + req_len, req_cap - req_len);
			if (r < 0 && errno != EINTR)
				die("read request");
			if (r == 0)
				open_in = 0;
			if (r > 0) {
				req_len += (size_t)r;
				size_t used = handle_requests();
				memmove(req, req + used, req_len - used);
				req_len -= used;
			}
		}
	}
	return 0;
}
