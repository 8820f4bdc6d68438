# pop3d Makefile.  Our flags live in their own variables and are added to
# the user's CFLAGS/LDFLAGS, never replaced by them.

PREFIX	?= /usr/local
SBINDIR	?= $(PREFIX)/sbin
MANDIR	?= $(PREFIX)/share/man
PAMDIR	?= /etc/pam.d
# For a package (debian/rules sets them); empty, make install leaves
# them out: systemd/'s units go to SYSTEMDUNITDIR, the xinetd, inetd,
# stunnel, fail2ban and proxy (deploy/) examples to EXAMPLEDIR, the
# README to DOCDIR.  These and the manual
# name the binary as installed: /usr/local/sbin/pop3d made
# $(SBINDIR)/pop3d (SBINPATH).
SYSTEMDUNITDIR ?=
EXAMPLEDIR ?=
DOCDIR	?=
UNITFILES = systemd/pop3d.socket systemd/pop3d@.service
EXAMPLES = xinetd.d/pop3 xinetd.d/pop3-stunnel contrib/inetd.conf \
	   stunnel/pop3s.conf stunnel/pop3-stls.conf \
	   contrib/fail2ban/filter.d/pop3d.conf contrib/fail2ban/jail.d/pop3d.conf \
	   deploy/nginx-pop3.conf deploy/haproxy-pop3.cfg
SBINPATH = sed 's|/usr/local/sbin/pop3d|$(SBINDIR)/pop3d|g'

CC	?= cc
CFLAGS	?= -O2 -g
PYTHON	 = /usr/bin/python3
# Debian's pytest; -o timeout: pytest-timeout stops a hung test.
PYTEST	 = $(PYTHON) -m pytest -q -rfEs -p no:cacheprovider -o timeout=300

WARN	= -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wformat=2 -Wshadow \
	  -Wformat-truncation=2 -Wstrict-prototypes -Wmissing-prototypes \
	  -Wpointer-arith -Wcast-qual -Wwrite-strings -Wvla -Wnull-dereference \
	  -Wimplicit-fallthrough -Werror=implicit-function-declaration
HARDEN	= -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=3 -fstack-protector-strong \
	  -fstack-clash-protection -fcf-protection -fPIE
LDHARD	= -pie -Wl,-z,relro,-z,now -Wl,-z,noexecstack
SAN	= -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -fno-sanitize-recover=all
# nettle (SHA-256, memeql_sec) linked statically: its ~550 relocations
# cost every session 0.2 ms at exec (BENCH.md, tiny).  A distribution
# package that wants it shared: make NETTLE=-lnettle.
NETTLE	= -l:libnettle.a
LIBS	= -lcrypt -lpam $(NETTLE)
# make check sets WERROR=-Werror; a plain build does not.
WERROR	=

SRCS	= pop3d.c proto.c conn.c proxy.c auth.c maildrop.c cache.c lock.c mbox.c journal.c io.c log.c sandbox.c
HDRS	= pop3d.h auth.h maildrop.h mdint.h cache.h io.h lock.h mbox.h journal.h sbx_bpf.h
OBJS	= $(SRCS:.c=.o)
UNITS	= $(patsubst tests/unit/%.c,build/unit/%,$(wildcard tests/unit/test_*.c))

.PHONY: all demo check check-summary check-debian unit pytest san deps deps-build hardening \
	install uninstall clean

all: pop3d

pop3d: $(OBJS)
	$(CC) $(CFLAGS) $(LDFLAGS) $(LDHARD) -o $@ $(OBJS) $(LIBS)

%.o: %.c $(HDRS)
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(HARDEN) $(CFLAGS) -c -o $@ $<

# The seccomp programs, compiled from sbxgen.c's rules at build time
# (libseccomp at run time: two compiles a session; BENCH.md).
sbx_bpf.h: sbxgen.c
	@mkdir -p build
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(CFLAGS) -o build/sbxgen sbxgen.c \
	    -lseccomp
	build/sbxgen > $@.tmp
	mv $@.tmp $@

# The sanitizer build: FORTIFY left out, as it blinds ASan.
build/san/%.o: %.c $(HDRS)
	@mkdir -p build/san
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(SAN) -c -o $@ $<

build/san/pop3d: $(SRCS:%.c=build/san/%.o)
	$(CC) $(SAN) -o $@ $^ $(LIBS)

# The fault-injection build (issue 4; io.c): POP3D_FAULT=
# kill:N, enospc:N or eio:N hits the N-th write/fsync/ftruncate/rename/
# unlink/link.
build/fault/%.o: %.c $(HDRS)
	@mkdir -p build/fault
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(SAN) -DPOP3D_FAULT -c -o $@ $<

build/fault/pop3d: $(SRCS:%.c=build/fault/%.o)
	$(CC) $(SAN) -o $@ $^ $(LIBS)

# The exploit build (issue 16; sandbox.c, tests/test_sandbox.py):
# POP3D_EXPLOIT=WHAT tries an attack inside the process POP3D_EXPLOIT_IN
# names.  build/exploit/pop3d has the flags of ./pop3d, build/exploit-san
# those of build/san, so that each build's filter is the one attacked.
build/exploit/%.o: %.c $(HDRS)
	@mkdir -p build/exploit
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(HARDEN) $(CFLAGS) \
	    -DPOP3D_EXPLOIT -c -o $@ $<

build/exploit/pop3d: $(SRCS:%.c=build/exploit/%.o)
	$(CC) $(CFLAGS) $(LDFLAGS) $(LDHARD) -o $@ $^ $(LIBS)

build/exploit-san/%.o: %.c $(HDRS)
	@mkdir -p build/exploit-san
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(SAN) -DPOP3D_EXPLOIT -c -o $@ $<

build/exploit-san/pop3d: $(SRCS:%.c=build/exploit-san/%.o)
	$(CC) $(SAN) -o $@ $^ $(LIBS)

# Unit tests link the real objects; main() is renamed so cmocka's runs.
build/unit/%.o: %.c $(HDRS)
	@mkdir -p build/unit
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(SAN) -DPOP3D_UNIT -Dmain=pop3d_main -c -o $@ $<

build/unit/test_%: tests/unit/test_%.c $(SRCS:%.c=build/unit/%.o) $(HDRS)
	$(CC) $(CPPFLAGS) $(WARN) $(WERROR) $(SAN) -I. -o $@ $< \
	    $(SRCS:%.c=build/unit/%.o) $(LIBS) -lcmocka -lseccomp

# test_sbxbpf builds the filters again from sbxgen.c's rules.
build/unit/test_sbxbpf: sbxgen.c

san: build/san/pop3d

# Not intermediates: make must not delete them after linking.
.SECONDARY: $(SRCS:%.c=build/san/%.o) $(SRCS:%.c=build/unit/%.o) \
	$(SRCS:%.c=build/fault/%.o) $(SRCS:%.c=build/exploit/%.o) \
	$(SRCS:%.c=build/exploit-san/%.o)

deps:
	@sh tests/install-deps.sh

deps-build:
	@sh tests/install-deps.sh build

# Runs every unit test binary, each within UNIT_TIMEOUT seconds; an empty
# list is an error, not a pass.
UNIT_TIMEOUT = 300
unit: $(UNITS)
	@test -n "$(UNITS)" || { echo 'unit: no tests/unit/test_*.c' >&2; exit 1; }
	@rc=0; for t in $(UNITS); do echo "== $$t"; \
	    timeout -k 10 $(UNIT_TIMEOUT) $$t || { e=$$?; rc=1; echo "== $$t: FAILED (exit $$e)"; }; \
	    done; exit $$rc

pytest: pop3d
	$(PYTEST) tests

# What the default build promises (the Debian popa3d binary lacks some).
hardening: pop3d
	@readelf -h pop3d | grep -q 'Type: *DYN' || { echo 'pop3d is not PIE' >&2; exit 1; }
	@readelf -d pop3d | grep -q 'BIND_NOW' || { echo 'pop3d lacks BIND_NOW' >&2; exit 1; }
	@readelf -lW pop3d | grep -q 'GNU_RELRO' || { echo 'pop3d lacks RELRO' >&2; exit 1; }
	@readelf -lW pop3d | grep 'GNU_STACK' | grep -qv 'RWE' || { echo 'pop3d has an executable stack' >&2; exit 1; }
	@nm -D pop3d | grep -q '__stack_chk_fail' || { echo 'pop3d lacks the stack protector' >&2; exit 1; }
	@nm -D pop3d | grep -q '_chk@' || { echo 'pop3d has no fortified calls' >&2; exit 1; }
	@echo 'hardening: PIE, BIND_NOW, RELRO, NX stack, stack protector, FORTIFY: ok'

# The call graph between the server's files, from nm on the objects; fails
# on a circle other than the known back-edges of tests/layers.allow, and
# when a file of the maildrop but io.c makes a write-like call itself
# (fault injection wraps them all: io.c), and when a function of the
# server is longer than FUNC_MAX lines (style(9): its name at the start of
# a line, its body closed by a "}" there).
FUNC_MAX = 100
MD_WRITES = write|pwrite|pwrite64|fsync|fdatasync|ftruncate|ftruncate64|rename|unlink|link|copy_file_range
.PHONY: layers
layers: $(OBJS)
	@sh tests/layers.sh tests/layers.allow $(OBJS)
	@! nm -A -u maildrop.o cache.o lock.o mbox.o journal.o | \
	    grep -wE 'U ($(MD_WRITES))' || { echo 'layers: a write-like call of the maildrop outside io.c' >&2; exit 1; }
	@echo 'layers: every write-like call of the maildrop goes through io.c'
	@awk -v max=$(FUNC_MAX) '/^[a-z_][a-z_0-9]*\(/ { name = $$0; start = FNR } \
	    /^}/ && start { n = FNR - start + 1; if (n > top) { top = n; \
	    where = FILENAME ": " name } if (n > max) { print "layers: " \
	    FILENAME ": " name ": " n " lines, over " max; bad = 1 } start = 0 } \
	    END { print "layers: longest function " top " lines (" where ")"; \
	    exit bad }' $(SRCS)

# The one test command (README, .ci/run): packages, a -Werror build from
# scratch (-B: objects of a plain build are not reused), the hardening
# assertions, the unit tests, then pytest against pop3d and again against
# the ASan/UBSan build, then the fuzz targets for a short time and the
# static analyzers (make fuzz-check, make analyze).  The two pytest passes
# run at the same time (a pass waits on its sessions' clocks, syncs and
# sleeps most of its time: 60% of one CPU), the second with the files in
# reverse order so that the two meet in one file at most; the tests
# marked plain_pass (they install, build trees or run valgrind: what
# another test running beside them could disturb) run after them, alone.
# The builds the tests make for themselves are made first.  All of them
# always run; the output ends with their summary lines and a total of the
# unit tests and the pytest runs: passed, failed, skipped.  POP3D_STRICT:
# a test that would skip fails (tests/conftest.py).  bash for pipefail.
TESTS_REVERSED = $(shell ls tests/test_*.py | sort -r)
check: SHELL = /bin/bash
check: deps
	$(MAKE) -B WERROR=-Werror pop3d san $(UNITS)
	$(MAKE) WERROR=-Werror build/fault/pop3d build/exploit/pop3d \
	    build/exploit-san/pop3d
	@$(MAKE) --no-print-directory hardening
	@$(MAKE) --no-print-directory layers
	@mkdir -p build/log; rc=0; set -o pipefail; \
	bash tests/leftovers.sh before build/log/left || rc=1; \
	bt=$$(mktemp -d "$${TMPDIR:-/tmp}/pop3d-check.XXXXXX") || exit 1; \
	$(MAKE) --no-print-directory unit 2>&1 | tee build/log/unit.log || rc=1; \
	echo "== pytest, POP3D_BIN=pop3d and POP3D_BIN=build/san/pop3d at once"; \
	POP3D_STRICT=1 $(PYTEST) --basetemp="$$bt/plain" -m 'not plain_pass' \
	    tests > build/log/pytest.log 2>&1 & plain=$$!; \
	POP3D_STRICT=1 POP3D_BIN=build/san/pop3d $(PYTEST) --basetemp="$$bt/san" \
	    $(TESTS_REVERSED) > build/log/pytest-san.log 2>&1 & san=$$!; \
	wait $$plain || rc=1; echo "== pytest, POP3D_BIN=pop3d"; \
	cat build/log/pytest.log; \
	wait $$san || rc=1; echo "== pytest, POP3D_BIN=build/san/pop3d"; \
	cat build/log/pytest-san.log; \
	echo "== pytest, POP3D_BIN=pop3d, the plain_pass tests alone"; \
	POP3D_STRICT=1 $(PYTEST) --basetemp="$$bt/alone" -m plain_pass tests \
	    2>&1 | tee build/log/pytest-alone.log || rc=1; \
	bash tests/leftovers.sh after build/log/left || rc=1; \
	if [ $$rc = 0 ]; then rm -rf -- "$$bt"; \
	else echo "== pytest's temporaries kept in $$bt"; fi; \
	echo "== fuzz, $(FUZZ_CHECK_TIME) s per target"; \
	$(MAKE) --no-print-directory fuzz-check 2>&1 | tee build/log/fuzz.log || rc=1; \
	echo "== analyze"; \
	$(MAKE) --no-print-directory -k -j3 analyze 2>&1 | tee build/log/analyze.log || rc=1; \
	( $(CHECK_SUMMARY) ) || rc=1; \
	exit $$rc

# The end of make check (make check-summary prints it again from
# build/log): each part's summary line, then the total, the last line.
# Fails if a test failed or an analyzer did not end clean.
check-summary: SHELL = /bin/bash
check-summary:
	@$(CHECK_SUMMARY)

define CHECK_SUMMARY
echo "== summary"; rc=0; \
	grep -h '^\[  \(PASSED\|FAILED\|SKIPPED\) *\]\|^== .*: FAILED (exit' build/log/unit.log | sed 's/^/unit: /'; \
	echo "pytest: $$(tail -n 1 build/log/pytest.log)"; \
	echo "pytest (ASan/UBSan): $$(tail -n 1 build/log/pytest-san.log)"; \
	echo "pytest (plain_pass, alone): $$(tail -n 1 build/log/pytest-alone.log)"; \
	grep -h '^fuzz_' build/log/fuzz.log || echo 'fuzz: no result'; \
	grep -h ': clean$$' build/log/analyze.log || true; \
	grep -q 'gcc -fanalyzer: clean' build/log/analyze.log && \
	    grep -q 'cppcheck: clean' build/log/analyze.log && \
	    grep -q 'clang-tidy: clean' build/log/analyze.log || \
	    { echo 'analyze: FAILED (build/log/analyze.log)'; rc=1; }; \
	{ cat build/log/unit.log; tail -qn 1 build/log/pytest.log \
	    build/log/pytest-san.log build/log/pytest-alone.log; } | awk ' \
	    /^\[  PASSED  \] [0-9]+ test/ { p += $$4 } \
	    /^\[  FAILED  \] [0-9]+ test/ { f += $$4 } \
	    /^\[  SKIPPED \] [0-9]+ test/ { s += $$4 } \
	    /^== .*: FAILED \(exit/ { f++ } \
	    /^[0-9]+ [a-z].* in [0-9.]+s/ { for (i = 1; i < NF; i++) { \
		if ($$(i + 1) ~ /^x?passed/) p += $$i; \
		if ($$(i + 1) ~ /^(failed|error)/) f += $$i; \
		if ($$(i + 1) ~ /^(skipped|xfailed)/) s += $$i } } \
	    END { printf "check: %d passed, %d failed, %d skipped\n", p, f, s; \
		exit f > 0 }' || rc=1; \
	exit $$rc
endef

# The Debian package alone (issue 15): builds debian/ in a copy of the
# tree, lintian, then install, a PAM session, upgrade and purge on this
# machine (as root); tests/test_debian.py says how.
check-debian:
	@sh tests/install-deps.sh build test debian
	POP3D_STRICT=1 $(PYTEST) tests/test_debian.py

# A scripted session against build/demo (tests/demo.sh says how).
demo: deps-build
	@$(MAKE) --no-print-directory pop3d
	@sh tests/demo.sh

# The PROXY protocol and several hosts (issue 14): tests/test_proxy.py and
# the slow tests/test_proxy_hosts.py and tests/test_shared_spool.py (real
# nginx and HAProxy in network namespaces, as root; NFS's lock semantics);
# make check runs them with the rest.
.PHONY: check-proxy
check-proxy: pop3d
	POP3D_STRICT=1 $(PYTEST) tests/test_proxy.py tests/test_proxy_hosts.py \
	    tests/test_shared_spool.py

# Benchmark (issues 6 and 13; helper "bench" owns bench/): not part of
# check.  Writes build/bench/ and the generated block of BENCH.md; as root
# it first installs what tests/packages.txt's bench section names (Dovecot,
# with no daemon started) and unpacks popa3d.
# SIZES="S M L" adds the 100,000-message 1.7 GB mailbox; RUNS >= 5.
# BASE=REV (a git revision): pop3d built from REV runs the open workloads
# side by side as pop3d-base ("open after new mail no slower than today's
# open"), and as root open-append in root mode as pop3d-base-pam;
# BENCHFLAGS="--base-pop3d FILE" for a binary at hand.
.PHONY: bench
SIZES	?= S M
RUNS	?= 5
BENCHFLAGS ?=
BASE	?=
BENCHBASE = $(if $(BASE),build/bench/base-$(BASE)/pop3d)
bench: pop3d $(BENCHBASE)
	$(PYTHON) bench/bench.py --sizes "$(SIZES)" --runs $(RUNS) \
	    $(if $(BASE),--base-pop3d $(BENCHBASE)) $(BENCHFLAGS)

build/bench/base-%/pop3d:
	rm -rf $(@D) && mkdir -p $(@D)
	git archive $* | tar -x -C $(@D)
	$(MAKE) -C $(@D) pop3d

# Hostile input (issue 7; helper "fuzz" owns fuzz/, .clang-tidy and
# .cppcheck-suppressions; fuzz/FUZZING.md tells the rest).  libFuzzer
# targets, built with clang: each is one file that #includes the source
# it tests.  make fuzz: every target FUZZ_TIME seconds, FUZZ_JOBS at a
# time; make check runs fuzz-check (FUZZ_CHECK_TIME seconds each).
# make analyze: cppcheck, clang-tidy and gcc -fanalyzer, every finding
# an error; run on the unit-test configuration (-DPOP3D_UNIT: the test
# hooks are analyzed too).
.PHONY: fuzz fuzz-build fuzz-check analyze cppcheck clang-tidy fanalyzer
FUZZCC	 = clang
FUZZFLAGS = -g -O1 -fno-omit-frame-pointer -std=c11 -D_GNU_SOURCE -Wall \
	   -Wextra -fsanitize=fuzzer,address,undefined \
	   -fno-sanitize-recover=all -DPOP3D_UNIT -Dmain=pop3d_main \
	   -D_exit=fz_exit -I.
FUZZLD	 = -Wl,--wrap=read,--wrap=write,--wrap=vsyslog,--wrap=crypt_rn
FUZZERS	 = proto plain passwd proxy mbox mbox_sse2 mbox_scalar cache
FUZZDEPS = fuzz/common.c fuzz/common.h fuzz/mdstub.c fuzz/logstub.c $(SRCS) $(HDRS)
FUZZ_TIME ?= 60
FUZZ_CHECK_TIME ?= 15
FUZZ_JOBS ?= 2

build/fuzz/fuzz_%: fuzz/fuzz_%.c $(FUZZDEPS)
	@mkdir -p build/fuzz
	$(FUZZCC) $(FUZZFLAGS) -o $@ $< fuzz/common.c $(LIBS) $(FUZZLD)

# The mbox target again without AVX2, and without SSE2 as well: every
# SIMD path of mbox.c and maildrop.c against the same reference.
build/fuzz/fuzz_mbox_sse2: fuzz/fuzz_mbox.c $(FUZZDEPS)
	@mkdir -p build/fuzz
	$(FUZZCC) $(FUZZFLAGS) -DFZ_NO_AVX2 -o $@ $< fuzz/common.c $(LIBS) \
	    $(FUZZLD)

build/fuzz/fuzz_mbox_scalar: fuzz/fuzz_mbox.c $(FUZZDEPS)
	@mkdir -p build/fuzz
	$(FUZZCC) $(FUZZFLAGS) -DFZ_NO_AVX2 -U__SSE2__ -o $@ $< fuzz/common.c \
	    $(LIBS) $(FUZZLD)

fuzz-build: $(FUZZERS:%=build/fuzz/fuzz_%)

fuzz: fuzz-build
	@$(MAKE) --no-print-directory -j$(FUZZ_JOBS) -k \
	    $(FUZZERS:%=fuzz-run-%) FUZZ_RUN_TIME=$(FUZZ_TIME)

fuzz-check: fuzz-build
	@$(MAKE) --no-print-directory -j$(FUZZ_JOBS) -k \
	    $(FUZZERS:%=fuzz-run-%) FUZZ_RUN_TIME=$(FUZZ_CHECK_TIME) \
	    FUZZ_RUN_MODE=check

fuzz-run-%:
	@sh fuzz/run.sh $* $(FUZZ_RUN_TIME) $(FUZZ_RUN_MODE)

analyze: cppcheck clang-tidy fanalyzer

cppcheck clang-tidy fanalyzer: sbx_bpf.h

cppcheck:
	cppcheck --quiet --error-exitcode=1 --inline-suppr \
	    --suppressions-list=.cppcheck-suppressions \
	    --enable=warning,style,performance,portability --std=c11 \
	    -D__GNUC__ -D__x86_64__ -D_GNU_SOURCE -DPOP3D_UNIT -I. $(SRCS) sbxgen.c
	@echo 'cppcheck: clean'

# One clang-tidy per file, in parallel; its "N warnings generated" (of
# checks that are off) is dropped, its exit status kept.
clang-tidy:
	@printf '%s\n' $(SRCS) sbxgen.c | xargs -P 3 -I FILE sh -c 'out=$$(clang-tidy \
	    --quiet FILE -- -std=c11 -D_GNU_SOURCE -DPOP3D_UNIT -I. 2>&1); \
	    rc=$$?; printf "%s\n" "$$out" | \
	    grep -v -e "warnings\? generated\.$$" -e "^$$"; exit $$rc'
	@echo 'clang-tidy: clean'

# gcc's static analyzer, with our warnings, as errors.
fanalyzer:
	@printf '%s\n' $(SRCS) sbxgen.c | xargs -P 3 -I FILE $(CC) $(WARN) -Werror \
	    -DPOP3D_UNIT -fanalyzer -c -o /dev/null FILE
	@echo 'gcc -fanalyzer: clean'

install: pop3d
	install -d -m 755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(PAMDIR)
	install -m 755 pop3d $(DESTDIR)$(SBINDIR)/pop3d
	$(SBINPATH) pop3d.8 > $(DESTDIR)$(MANDIR)/man8/pop3d.8
	chmod 644 $(DESTDIR)$(MANDIR)/man8/pop3d.8
	install -m 644 pam.d/pop3 $(DESTDIR)$(PAMDIR)/pop3
	@set -e; for f in $(if $(SYSTEMDUNITDIR),$(UNITFILES)) \
	    $(if $(EXAMPLEDIR),$(EXAMPLES)); do \
		case $$f in systemd/*) d=$(SYSTEMDUNITDIR)/$${f#systemd/};; \
		contrib/*) d=$(EXAMPLEDIR)/$${f#contrib/};; \
		*) d=$(EXAMPLEDIR)/$$f;; esac; \
		echo "install $$f $(DESTDIR)$$d"; \
		install -d -m 755 "$$(dirname "$(DESTDIR)$$d")"; \
		$(SBINPATH) "$$f" > "$(DESTDIR)$$d"; \
		chmod 644 "$(DESTDIR)$$d"; done
	$(if $(DOCDIR),install -d -m 755 $(DESTDIR)$(DOCDIR))
	$(if $(DOCDIR),$(SBINPATH) README > $(DESTDIR)$(DOCDIR)/README)
	$(if $(DOCDIR),chmod 644 $(DESTDIR)$(DOCDIR)/README)

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/pop3d $(DESTDIR)$(MANDIR)/man8/pop3d.8 \
	    $(DESTDIR)$(PAMDIR)/pop3
	$(if $(SYSTEMDUNITDIR),rm -f $(UNITFILES:systemd/%=$(DESTDIR)$(SYSTEMDUNITDIR)/%))
	$(if $(EXAMPLEDIR),rm -f $(addprefix $(DESTDIR)$(EXAMPLEDIR)/,$(patsubst \
	    contrib/%,%,$(EXAMPLES))))
	$(if $(DOCDIR),rm -f $(DESTDIR)$(DOCDIR)/README)

clean:
	rm -rf pop3d $(OBJS) sbx_bpf.h build tests/__pycache__ .pytest_cache
