// Shared by PodMotion's native helpers: visiting every process of a pod, i.e. of one pid namespace.
#ifndef PM_PIDNS_H
#define PM_PIDNS_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// Calls visit(pid, arg) for every process in the pid namespace of `root`. Returns -1 (errno set) when
// root's namespace or /proc cannot be read; processes that exit meanwhile are skipped.
static int for_each_pid_in_ns(int root, void (*visit)(int pid, void *arg), void *arg)
{
	char nspath[64];
	struct stat rootns, st;
	snprintf(nspath, sizeof(nspath), "/proc/%d/ns/pid", root);
	if (stat(nspath, &rootns))
		return -1;
	DIR *proc = opendir("/proc");
	if (!proc)
		return -1;
	struct dirent *e;
	while ((e = readdir(proc))) {
		int pid = atoi(e->d_name);
		if (pid <= 0)
			continue;
		snprintf(nspath, sizeof(nspath), "/proc/%d/ns/pid", pid);
		if (!stat(nspath, &st) && st.st_ino == rootns.st_ino && st.st_dev == rootns.st_dev)
			visit(pid, arg);
	}
	closedir(proc);
	return 0;
}

/* A process's pid inside its pod (the last field of NSpid), or -1. */
static inline int pod_pid(int pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	int v = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "NSpid:", 6)) {
			char *last = strrchr(line, '\t');
			v = last ? atoi(last + 1) : -1;
		}
	fclose(f);
	return v;
}


#endif
