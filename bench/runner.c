/*
 * runner.c: times one command or pipeline for bench.py.
 *
 *	runner OUT CMD [ARG...] [| CMD [ARG...]]...
 *
 * Spawns every stage (joined by pipes; the first reads runner's stdin, the
 * last writes runner's stdout), waits for all of them and writes
 * "SECONDS PEAK_RSS_KIB STATUS READ_BYTES" to OUTFILE: the wall time from
 * before the first spawn to the last exit, the largest ru_maxrss of the
 * stages (each covers the children that stage reaped: popa3d's and pop3d's
 * helpers), the last stage's exit status (128 + signal when killed) and
 * the bytes the stages and their reaped children read from storage (the
 * sum of ru_inblock, 512-byte units: the kernel's read_bytes, what missed
 * the page cache, read-ahead included).  OUT is a
 * file name, or "fd:N" for an inherited descriptor (a pipe to bench.py, so
 * a runner started as another user needs no writable file).
 *
 * Why not Python: Linux charges a process that execs with the peak RSS of
 * the memory it had before the exec, so anything spawned straight from a
 * Python process "peaks" at Python's 20 MB.  Spawned from this small
 * static program it starts below 1 MB (`runner F true` shows the floor).
 * It also keeps Python's spawn cost out of the timed interval.
 */
#include <sys/resource.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAXSTAGE 8

int
main(int argc, char *argv[])
{
	struct timespec t0, t1;
	struct rusage ru;
	posix_spawn_file_actions_t fa;
	char **stage[MAXSTAGE];
	pid_t pid[MAXSTAGE];
	long maxrss = 0, inblock = 0;
	int nst = 0, i, st, status = 0, prev = -1, p[2], ofd = -1;
	FILE *out;

	if (argc < 3) {
		fprintf(stderr, "usage: runner OUT CMD [ARG...] "
		    "[| CMD...]\n");
		return 64;
	}
	if (strncmp(argv[1], "fd:", 3) == 0) {
		ofd = atoi(argv[1] + 3);
		if (fcntl(ofd, F_SETFD, FD_CLOEXEC) == -1) {
			perror("runner: fcntl");
			return 64;
		}
	}
	stage[nst++] = &argv[2];
	for (i = 2; i < argc; i++) {
		if (strcmp(argv[i], "|") == 0) {
			if (nst == MAXSTAGE || i + 1 == argc) {
				fprintf(stderr, "runner: bad pipeline\n");
				return 64;
			}
			argv[i] = NULL;
			stage[nst++] = &argv[i + 1];
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < nst; i++) {
		if (posix_spawn_file_actions_init(&fa) != 0)
			return 71;
		p[0] = p[1] = -1;
		if (i + 1 < nst && pipe(p) == -1) {
			perror("runner: pipe");
			return 71;
		}
		if (prev != -1) {
			posix_spawn_file_actions_adddup2(&fa, prev, 0);
			posix_spawn_file_actions_addclose(&fa, prev);
		}
		if (p[1] != -1) {
			posix_spawn_file_actions_adddup2(&fa, p[1], 1);
			posix_spawn_file_actions_addclose(&fa, p[1]);
			posix_spawn_file_actions_addclose(&fa, p[0]);
		}
		errno = posix_spawnp(&pid[i], stage[i][0], &fa, NULL,
		    stage[i], environ);
		if (errno != 0) {
			fprintf(stderr, "runner: %s: %s\n", stage[i][0],
			    strerror(errno));
			return 71;
		}
		posix_spawn_file_actions_destroy(&fa);
		if (prev != -1)
			close(prev);
		if (p[1] != -1)
			close(p[1]);
		prev = p[0];
	}
	for (i = 0; i < nst; i++) {
		if (wait4(pid[i], &st, 0, &ru) == -1) {
			perror("runner: wait4");
			return 71;
		}
		if (ru.ru_maxrss > maxrss)
			maxrss = ru.ru_maxrss;
		inblock += ru.ru_inblock;
		if (i == nst - 1)
			status = WIFEXITED(st) ? WEXITSTATUS(st) :
			    128 + WTERMSIG(st);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if ((out = ofd != -1 ? fdopen(ofd, "w") : fopen(argv[1], "w")) ==
	    NULL) {
		perror(argv[1]);
		return 73;
	}
	fprintf(out, "%.9f %ld %d %ld\n", (double)(t1.tv_sec - t0.tv_sec) +
	    (t1.tv_nsec - t0.tv_nsec) / 1e9, maxrss, status, inblock * 512);
	return fclose(out) == 0 ? 0 : 74;
}
