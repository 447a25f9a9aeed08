/*
 * pm-init: pid 1 of a pod that is not a single root command: a pod whose command runs as another user, or a
 * pod of several containers. It stays root, leads the pod's session, starts each container's command as a
 * child (its own process tree), reaps every orphan of the pod, passes SIGTERM/SIGINT/SIGHUP/SIGQUIT on to
 * every container, and exits once all of them have exited, with the status of the first that failed (else 0).
 *
 * Why a root init: CRIU's parasite needs a /proc of the pod's pid namespace; in a task that is not root it
 * cannot mount one ("can't dump unprivileged task whose /proc doesn't belong to it"). Only the pod's first
 * task needs it, so the commands themselves may run unprivileged. One root for all containers also means
 * one process tree: CRIU freezes, dumps and restores every container together.
 *
 *   pm-init CMD [ARG...] [--- CMD [ARG...]]...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CONTAINERS 16

static volatile pid_t children[MAX_CONTAINERS];
static volatile int count;

static void forward(int sig)
{
	for (int i = 0; i < count; i++)
		if (children[i] > 0)
			kill(children[i], sig);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pm-init CMD [ARG...] [--- CMD [ARG...]]...\n");
		return 2;
	}
	setsid();
	// Split argv at each "---": one command per container.
	char **starts[MAX_CONTAINERS];
	int n = 0;
	starts[n++] = argv + 1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "---"))
			continue;
		argv[i] = NULL;
		if (n == MAX_CONTAINERS) {
			fprintf(stderr, "pm-init: at most %d containers\n", MAX_CONTAINERS);
			return 2;
		}
		starts[n++] = argv + i + 1;
	}
	for (int i = 0; i < n; i++) {
		if (!starts[i][0]) {
			fprintf(stderr, "pm-init: container %d has no command\n", i + 1);
			return 2;
		}
	}
	struct sigaction sa = { .sa_handler = forward };
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	for (int i = 0; i < n; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			fprintf(stderr, "pm-init: fork: %s\n", strerror(errno));
			forward(SIGKILL);
			return 1;
		}
		if (pid == 0) {
			execvp(starts[i][0], starts[i]);
			fprintf(stderr, "pm-init: %s: %s\n", starts[i][0], strerror(errno));
			_exit(127);
		}
		children[i] = pid;
		count = i + 1;
	}
	int running = n, result = 0;
	while (running > 0) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			return 1;
		for (int i = 0; i < n; i++) {
			if (children[i] != pid)
				continue;
			children[i] = 0;
			running--;
			int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			if (code && !result)
				result = code;
		}
	}
	return result;
}
