/*
 * pm-init: pid 1 of a pod whose command runs as another user. It stays root, leads the pod's session,
 * starts the command as a child, reaps every orphan of the pod, passes SIGTERM/SIGINT/SIGHUP/SIGQUIT on
 * to the command, and exits with its status.
 *
 * Why a root init: CRIU's parasite needs a /proc of the pod's pid namespace; in a task that is not root it
 * cannot mount one ("can't dump unprivileged task whose /proc doesn't belong to it"). Only the pod's first
 * task needs it, so the command itself may run unprivileged.
 *
 *   pm-init CMD [ARG...]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile pid_t child;

static void forward(int sig)
{
	if (child > 0)
		kill(child, sig);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: pm-init CMD [ARG...]\n");
		return 2;
	}
	setsid();
	child = fork();
	if (child < 0) {
		fprintf(stderr, "pm-init: fork: %s\n", strerror(errno));
		return 1;
	}
	if (child == 0) {
		execvp(argv[1], argv + 1);
		fprintf(stderr, "pm-init: %s: %s\n", argv[1], strerror(errno));
		_exit(127);
	}
	struct sigaction sa = { .sa_handler = forward };
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGQUIT, &sa, NULL);
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			return 1;
		if (pid == child)
			return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	}
}
