/*
 * pm-connect-exec: connects a blocking stream socket to an AF_UNIX listener, puts it at a given descriptor
 * and executes a command: how `criu lazy-pages --ps-socket FD` gets its page-server socket from the agent.
 *
 * Usage: pm-connect-exec PATH FD COMMAND [ARG]...
 *
 * A socket Node opens is non-blocking, and a descriptor passed to a child shares that flag; CRIU expects
 * blocking sockets (MSG_WAITALL reads), so the child makes its own. Exit status: COMMAND's (it replaces
 * this process), or 125 if the socket cannot be set up, 127 if COMMAND cannot be executed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "pm-connect-exec: usage: pm-connect-exec PATH FD COMMAND [ARG]...\n");
		return 125;
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *end;
	long fd = strtol(argv[2], &end, 10);
	if (*end || fd < 3 || fd > 1023 || strlen(argv[1]) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "pm-connect-exec: bad PATH or FD\n");
		return 125;
	}
	strcpy(sa.sun_path, argv[1]);
	int sk = socket(AF_UNIX, SOCK_STREAM, 0);
	if (sk < 0 || connect(sk, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		fprintf(stderr, "pm-connect-exec: connect to %s: %s\n", argv[1], strerror(errno));
		return 125;
	}
	if (sk != fd) {
		if (dup2(sk, (int)fd) < 0) {
			fprintf(stderr, "pm-connect-exec: dup2: %s\n", strerror(errno));
			return 125;
		}
		close(sk);
	}
	execv(argv[3], argv + 3);
	fprintf(stderr, "pm-connect-exec: cannot execute %s: %s\n", argv[3], strerror(errno));
	return 127;
}
