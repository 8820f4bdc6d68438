/*
 * test_sbxbpf.c: the seccomp programs sandbox.c loads (sbx_bpf.h, made by
 * sbxgen.c at build time, with this process's pid put in) are the ones
 * libseccomp builds from the rules now, for this pid and for another:
 * the same instructions, the architecture check included, and no
 * placeholder pid left.  The unit build is the sanitizer build, so its
 * programs are compared (the plain build's come from the same code).
 */

#include <sys/types.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#define SBX_NO_MAIN
#include "sbxgen.c"

size_t	sbx_program(int, struct sock_filter *);

static struct sbx_prog	want;
static struct sock_filter got[BPF_MAXINSNS];

/* The program of one process against libseccomp's for the pid. */
static void
check(int user, uint32_t pid)
{
	size_t	n, i;

	assert_int_equal(sbx_build(user, 1, pid, &want), 0);
	n = sbx_program(user, got);
	assert_int_equal(n, want.n);
	for (i = 0; i < n; i++) {
		assert_int_equal(got[i].code, want.f[i].code);
		assert_int_equal(got[i].jt, want.f[i].jt);
		assert_int_equal(got[i].jf, want.f[i].jf);
		assert_int_equal(got[i].k, want.f[i].k);
		assert_int_not_equal(got[i].k, SBX_PID_A);
	}
}

static void
test_prelogin(void **state)
{
	(void)state;
	check(0, (uint32_t)getpid());
}

static void
test_user(void **state)
{
	(void)state;
	check(1, (uint32_t)getpid());
}

/* The pid is in the program: another pid's differs. */
static void
test_other_pid(void **state)
{
	size_t	i, diff = 0;

	(void)state;
	for (int user = 0; user < 2; user++) {
		assert_int_equal(sbx_build(user, 1, (uint32_t)getpid() + 1,
		    &want), 0);
		assert_int_equal(sbx_program(user, got), want.n);
		for (i = 0; i < want.n; i++)
			diff += got[i].k != want.f[i].k;
	}
	assert_int_equal(diff, 2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prelogin),
		cmocka_unit_test(test_user),
		cmocka_unit_test(test_other_pid),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
