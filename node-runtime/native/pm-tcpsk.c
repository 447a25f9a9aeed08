// pm-tcpsk: inspects (and on request un-repairs) the TCP sockets of every process in a pod's pid namespace.
//
//   pm-tcpsk list     --pid PID [--force]   one JSON line per established IPv4 TCP socket (also IPv4-mapped
//                                           IPv6 sockets of dual-stack servers):
//                                           {"local","remote","repair",sndSeq,rcvSeq} (seqs when readable)
//   pm-tcpsk unrepair --pid PID             takes every socket out of repair mode (TCP_REPAIR_OFF: the kernel
//                                           sends a window probe, so the peer learns the socket is back)
//
// PID is any process of the pod; every process sharing its pid namespace is inspected. Sockets are reached
// with pidfd_getfd(2), so the pod never notices. Sequence numbers are readable only in repair mode (the
// kernel's TCP_QUEUE_SEQ rule); --force enters repair briefly and leaves it with TCP_REPAIR_OFF_NO_WP,
// sending nothing.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pidns.h"

#ifndef TCP_REPAIR_OFF
#define TCP_REPAIR_OFF 0
#endif
#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif
#ifndef TCP_RECV_QUEUE
#define TCP_NO_QUEUE 0
#define TCP_RECV_QUEUE 1
#define TCP_SEND_QUEUE 2
#endif
#define MAX_SOCKETS 65536

static unsigned long seen[MAX_SOCKETS];
static int nseen;

static void die(const char *what)
{
	fprintf(stderr, "pm-tcpsk: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int already_seen(unsigned long ino)
{
	for (int i = 0; i < nseen; i++)
		if (seen[i] == ino)
			return 1;
	if (nseen < MAX_SOCKETS)
		seen[nseen++] = ino;
	return 0;
}

static int read_seq(int fd, int queue, unsigned int *seq)
{
	socklen_t len = sizeof(*seq);
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &queue, sizeof(queue)))
		return -1;
	return getsockopt(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, seq, &len);
}

// "ip:port" for an IPv4 address, or for an IPv4-mapped IPv6 one (a dual-stack server's connection from an
// IPv4 peer). Returns 0 for any other address: PodMotion's overlay is IPv4.
static int addr_str(struct sockaddr_storage *a, char *buf, size_t n)
{
	char ip[INET_ADDRSTRLEN];
	if (a->ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)a;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(buf, n, "%s:%u", ip, ntohs(s4->sin_port));
		return 1;
	}
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)a;
	if (a->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return 0;
	inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], ip, sizeof(ip));
	snprintf(buf, n, "%s:%u", ip, ntohs(s6->sin6_port));
	return 1;
}

// Handles one socket fd (our copy). Returns 1 when it was an established IPv4 TCP socket.
static int handle(int fd, int unrepair, int force)
{
	int v;
	socklen_t len = sizeof(v);
	struct sockaddr_storage l, r;
	socklen_t ll = sizeof(l), rl = sizeof(r);
	struct tcp_info ti;
	socklen_t til = sizeof(ti);
	char ls[64], rs[64];

	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &len) || (v != AF_INET && v != AF_INET6))
		return 0;
	len = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &len) || v != IPPROTO_TCP)
		return 0;
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &til) || ti.tcpi_state != 1 /* TCP_ESTABLISHED */)
		return 0;
	if (getsockname(fd, (struct sockaddr *)&l, &ll) || getpeername(fd, (struct sockaddr *)&r, &rl))
		return 0;
	if (!addr_str(&l, ls, sizeof(ls)) || !addr_str(&r, rs, sizeof(rs)))
		return 0;

	int q = TCP_NO_QUEUE;
	int in_repair = setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof(q)) == 0;
	if (unrepair) {
		if (in_repair) {
			int off = TCP_REPAIR_OFF;
			if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof(off)))
				die("TCP_REPAIR off");
		}
		printf("{\"local\":\"%s\",\"remote\":\"%s\",\"wasInRepair\":%s}\n", ls, rs, in_repair ? "true" : "false");
		return 1;
	}
	int entered = 0;
	if (!in_repair && force) {
		int on = 1;
		if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &on, sizeof(on)) == 0)
			entered = 1;
	}
	unsigned int snd = 0, rcv = 0;
	int have = (in_repair || entered) && read_seq(fd, TCP_SEND_QUEUE, &snd) == 0 && read_seq(fd, TCP_RECV_QUEUE, &rcv) == 0;
	if (in_repair || entered) {
		q = TCP_NO_QUEUE;
		setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, &q, sizeof(q));
	}
	if (entered) {
		int off = TCP_REPAIR_OFF_NO_WP;
		if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR, &off, sizeof(off)))
			die("TCP_REPAIR off (no window probe)");
	}
	if (have)
		printf("{\"local\":\"%s\",\"remote\":\"%s\",\"repair\":%s,\"sndSeq\":%u,\"rcvSeq\":%u}\n", ls, rs,
		       in_repair ? "true" : "false", snd, rcv);
	else
		printf("{\"local\":\"%s\",\"remote\":\"%s\",\"repair\":%s}\n", ls, rs, in_repair ? "true" : "false");
	return 1;
}

static void scan_process(int pid, int unrepair, int force)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	DIR *d = opendir(path);
	if (!d)
		return;
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0) {
		closedir(d);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d))) {
		char link[PATH_MAX], target[64];
		if (e->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "/proc/%d/fd/%s", pid, e->d_name);
		ssize_t n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = 0;
		unsigned long ino;
		if (sscanf(target, "socket:[%lu]", &ino) != 1 || already_seen(ino))
			continue;
		int fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(e->d_name), 0);
		if (fd < 0)
			continue;
		handle(fd, unrepair, force);
		close(fd);
	}
	close(pidfd);
	closedir(d);
}

struct opts {
	int unrepair, force;
};

static void visit(int pid, void *arg)
{
	struct opts *o = arg;
	scan_process(pid, o->unrepair, o->force);
}

int main(int argc, char **argv)
{
	if (argc < 4 || strcmp(argv[2], "--pid")) {
		fprintf(stderr, "usage: pm-tcpsk list|unrepair --pid PID [--force]\n");
		return 2;
	}
	int unrepair = !strcmp(argv[1], "unrepair");
	if (!unrepair && strcmp(argv[1], "list")) {
		fprintf(stderr, "pm-tcpsk: unknown command %s\n", argv[1]);
		return 2;
	}
	int force = argc > 4 && !strcmp(argv[4], "--force");
	struct opts o = { unrepair, force };
	if (for_each_pid_in_ns(atoi(argv[3]), visit, &o))
		die("the pod's pid namespace");
	return 0;
}
