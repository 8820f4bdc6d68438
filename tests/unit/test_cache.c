/*
 * test_cache.c: cmocka tests of the index cache's seal rule
 * (cache_sealwait(), README "The index cache"): the time to wait, from
 * the granularity a ctime's nanoseconds allow, and when not to seal.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "cache.h"
#include "pop3d.h"

/* A ctime of s.ns, the coarse clock at t.tns: the wait expected. */
struct seal_case {
	time_t	s;
	long	ns;
	time_t	t;
	long	tns;
	int64_t	want;
};

static const struct seal_case cases[] = {
	/* Nanosecond stamps: sealed once the clock is past by 1 ns. */
	{ 100, 123456789, 100, 123456789, 1 },
	{ 100, 123456789, 100, 123456790, 0 },
	{ 100, 123456789, 101, 0, 0 },
	{ 100, 999999999, 100, 999999999, 1 },
	{ 100, 999999999, 101, 0, 0 },
	/* A clock behind the ctime (the fine clock stamped it). */
	{ 100, 123456789, 100, 120000001, 3456789 },
	/* Nanoseconds a multiple of g: maybe a stamp of granularity g,
	 * which the clock must pass by as much (2^9 divides 10^9). */
	{ 100, 1000, 100, 1000, 1000 },
	{ 100, 1000, 100, 1999, 1 },
	{ 100, 1000, 100, 2000, 0 },
	{ 100, 512, 100, 512, 512 },
	{ 100, 4000000, 100, 4000000, 4000000 },
	{ 100, 10000000, 100, 10000000, 10000000 },
	{ 100, 10000000, 100, 20000000, 0 },
	/* Whole seconds, a granularity over CACHE_SEAL_NS: never. */
	{ 100, 0, 100, 0, -1 },
	{ 100, 0, 200, 0, -1 },
	{ 100, 500000000, 200, 0, -1 },
	{ 100, 40000000, 200, 0, -1 },
	/* A ctime far ahead of the clock (set back, or another clock),
	 * both sides of CACHE_SEAL_NS. */
	{ 100, 123456789, 99, 0, -1 },
	{ 100, 123456789, 100, 103456789, -1 },
	{ 100, 123456789, 100, 103456790, CACHE_SEAL_NS },
};

static void
test_sealwait(void **state)
{
	struct timespec	c, now;
	size_t		i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		c.tv_sec = cases[i].s;
		c.tv_nsec = cases[i].ns;
		now.tv_sec = cases[i].t;
		now.tv_nsec = cases[i].tns;
		if (cache_sealwait(&c, &now) != cases[i].want)
			fail_msg("case %zu: %lld, not %lld", i,
			    (long long)cache_sealwait(&c, &now),
			    (long long)cases[i].want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sealwait),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
