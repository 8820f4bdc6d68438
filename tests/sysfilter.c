/*
 * sysfilter: runs a program under a seccomp filter that allows only the
 * system calls named in a file (one per line; unknown names skipped) and
 * fails every other with an errno, as a systemd service's
 * SystemCallFilter= with SystemCallErrorNumber= does.  For
 * tests/test_deploy.py, which expands pop3d@.service's filter with
 * systemd-analyze.  Sets no_new_privs, as NoNewPrivileges= (and any
 * unprivileged filter) does.
 *
 *	sysfilter LISTFILE ERRNO PROGRAM [ARG ...]
 */

#include <sys/prctl.h>

#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	scmp_filter_ctx	 ctx;
	char		 line[256];
	FILE		*f;
	int		 nr, n = 0;

	if (argc < 4) {
		fprintf(stderr, "usage: sysfilter LISTFILE ERRNO PROGRAM ...\n");
		return 64;
	}
	if ((f = fopen(argv[1], "r")) == NULL ||
	    (ctx = seccomp_init(SCMP_ACT_ERRNO((unsigned)atoi(argv[2])))) ==
	    NULL) {
		perror(argv[1]);
		return 71;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, " \t\r\n")] = '\0';
		if (line[0] == '\0' ||
		    (nr = seccomp_syscall_resolve_name(line)) == __NR_SCMP_ERROR)
			continue;
		if (seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) != 0) {
			fprintf(stderr, "sysfilter: cannot allow %s\n", line);
			return 71;
		}
		n++;
	}
	(void)fclose(f);
	if (n == 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    seccomp_load(ctx) != 0) {
		fprintf(stderr, "sysfilter: no filter loaded (%d calls)\n", n);
		return 71;
	}
	execv(argv[3], argv + 3);
	perror(argv[3]);
	return 127;
}
