# libthunder — see README.md.  `make demo` and `make check` are the two commands.
# The project's one version number; debian/changelog must say the same.
VERSION := $(shell cat VERSION)
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
SAN     ?=
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
MANDIR  ?= $(PREFIX)/share/man/man1
# Shell libraries of the installed scripts (thunder-ab finds them here, as
# bin/../lib/libthunder): architecture-independent, so not in a multiarch LIBDIR.
TOOLLIBDIR ?= $(PREFIX)/lib/libthunder
TOOL_LIBS  = tools/lib/server.bash tools/lib/ab-report.bash

WARN    := -Wall -Wextra -Wshadow -Wmissing-prototypes -Wstrict-prototypes -Wformat=2
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -pthread
ifneq ($(SAN),)
CFLAGS  += -fsanitize=$(SAN) -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SAN)
endif
# An ASan-built shim must come after the ASan runtime in LD_PRELOAD;
# the test helpers put this first when it is set.
ifneq ($(findstring address,$(SAN)),)
export TEST_ASAN_PRELOAD := $(shell $(CC) -print-file-name=libasan.so)
# Memory errors abort; leaks are checked by tests/80-leaks.bats (fds, RSS)
# and valgrind, not LSan, which reports the host programs' own leaks.
export ASAN_OPTIONS := detect_leaks=0:abort_on_error=1
endif
# Undefined behaviour fails the test instead of printing and going on.
export UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
# -flto: the library is many small files; across them the per-connection
# path inlines (nginx: 2,168 -> 1,816 instructions per connection, the
# library's share of its workers' CPU samples 4.30% -> 3.93%, perf, Dec 2).
SHIM_CFLAGS = $(CFLAGS) -fPIC -fvisibility=hidden -ftls-model=initial-exec -flto=auto
SHIM_LDFLAGS = $(LDFLAGS) -shared -Wl,-soname,libthunder.so \
	-Wl,--version-script=shim/libthunder.map -Wl,-z,now -Wl,-z,defs -ldl -lpthread

SHIM_SRC  = $(wildcard shim/*.c)
SHIM_LIB_SRC = $(SHIM_SRC)
# The segment core: the one piece of the library the tools and tests link.
SEGCORE   = shim/segcore.c shim/segcore.h shim/seglayout.h
STAT_SRC  = $(wildcard tools/stat/*.c)
SHIM_HDR  = $(wildcard shim/*.h) shim/syms.def
EXAMPLES  = $(patsubst %.c,%,$(wildcard examples/ex_*.c))
UNIT_SRC  = $(wildcard tests/unit/test_*.c)
UNITS     = $(UNIT_SRC:.c=)
PROGS     = $(patsubst %.c,%,$(wildcard tests/progs/*.c))
LOADGEN_SRC = $(wildcard tools/loadgen/*.c)
LOADGEN_HDR = $(wildcard tools/loadgen/*.h tools/common/*.h)
TOOLS     = tools/thunder-loadgen tools/thunder-stat

.PHONY: all check demo clean install uninstall unit lint bench bench-quick bench-peers fuzz soak check-valgrind check-tsan check-compat deb deb-test check-faults check-adversary
all: libthunder.so $(TOOLS) $(EXAMPLES)

libthunder.so: $(SHIM_LIB_SRC) $(SHIM_HDR) shim/libthunder.map
	$(CC) $(SHIM_CFLAGS) -o $@ $(SHIM_LIB_SRC) $(SHIM_LDFLAGS)

tools/thunder-stat: $(STAT_SRC) tools/stat/stat.h $(SEGCORE) shim/config.c VERSION
	$(CC) $(CFLAGS) -DTH_VERSION='"$(VERSION)"' -Ishim -o $@ $(STAT_SRC) shim/segcore.c shim/config.c $(LDFLAGS)

tools/thunder-loadgen: $(LOADGEN_SRC) $(LOADGEN_HDR)
	$(CC) $(CFLAGS) -o $@ $(LOADGEN_SRC) $(LDFLAGS) -lm

examples/%: examples/%.c $(wildcard examples/*.h)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS)

# Unit tests link the shim's sources directly (no preload, no hooks);
# the segment core's own test links the core alone, as the tools do.
UNIT_OBJS = $(filter-out shim/hook_%.c,$(SHIM_LIB_SRC))
tests/unit/test_segcore: tests/unit/test_segcore.c tests/unit/tap.h $(SEGCORE)
	$(CC) $(CFLAGS) -Ishim -o $@ $< shim/segcore.c $(LDFLAGS)

tests/unit/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(UNIT_OBJS) $(SHIM_HDR)
	$(CC) $(CFLAGS) -Ishim -o $@ $< $(UNIT_OBJS) $(LDFLAGS) -ldl

# Small programs the bats suites drive (they load the shim by LD_PRELOAD);
# those that look at segments do it through the segment core.
tests/progs/%: tests/progs/%.c $(SEGCORE)
	$(CC) $(CFLAGS) -Ishim -o $@ $< shim/segcore.c $(LDFLAGS)

unit: $(UNITS)

check: all $(UNITS) $(PROGS)
	@tests/run-all.sh

# Each local attack alone, root and non-root server, auto and lock (root
# only; README "Security"): about 3 minutes.
check-adversary: all $(PROGS)
	@tests/run-all.sh tests/adversary/each.bats

demo: all
	@bench/demo.sh

soak: all
	@for spec in "ex_poll lock 300 holder,queued,accept" "ex_select lock 200 holder,queued,accept" \
	             "ex_epoll_shared auto 200 holder,queued,accept" "ex_epoll auto 150 wait,accept,rotate" \
	             "ex_poll auto 150 wait,accept,rotate"; do \
	    echo "soak: $$spec"; tests/death.sh $$spec || exit 1; done
	@echo "soak: 100 start/stop cycles of every example"; LEAK_CYCLES=100 bats tests/80-leaks.bats

# Faults of the environment in full (tests/85-faults.bats): every injected
# system-call failure and 1024 workers; make check runs a subset and 256.
check-faults: all $(PROGS)
	@FAULTS_FULL=1 FAULTS_WORKERS=1024 BATS_TIMEOUT=1800 tests/run-all.sh tests/85-faults.bats

# The unit tests under valgrind memcheck (each case runs in a forked child).
# It fails on any memcheck report (valgrind -q prints nothing else); the
# cases' own timing bounds are not meant for valgrind's slowdown, so their
# results are shown but do not fail this target.
check-valgrind: $(UNITS)
	@for t in $(UNITS); do \
	    valgrind -q $$t >$$t.valgrind 2>&1; \
	    if grep -q '^==[0-9]*== ' $$t.valgrind; then \
	        cat $$t.valgrind; echo "check-valgrind: memcheck errors in $$t"; exit 1; fi; \
	    echo "$$t: no memcheck errors ($$(grep -c '^ok' $$t.valgrind) cases ok under valgrind)"; \
	    grep '^not ok' $$t.valgrind | sed 's/^/    under valgrind: /'; \
	    rm -f $$t.valgrind; \
	done

# ThreadSanitizer over the threaded example (ex_threads, 2 processes x 4
# threads, auto/lock/exclusive; tests/tsan.sh), alone; make check runs it too.
# It fails on any report: no suppressions.  The shim is preloaded in front of
# gcc's TSan runtime, where TSan sees its mutexes (behind it, TSan's blocking
# epoll_wait interceptor hid them: the old false reports).
check-tsan: all
	@tests/tsan.sh

# Real servers from Debian (uWSGI, gunicorn, uvicorn, Puma, unicorn, Node,
# nginx, Apache) under the shim with 8 workers, and their graceful reloads
# under load (tests/compat/, about 6 min); a server that is not installed is
# skipped with the packages to install.  Not part of make check: .ci/run
# installs the packages and runs it after make check.
check-compat: all
	@BATS_TIMEOUT=1200 tests/run-all.sh tests/compat/*.bats

fuzz:
	@tests/fuzz/run.sh $${FUZZ_SECONDS:-120}

bench: all
	@bench/matrix.sh
	@bench/syscalls.sh
	@if command -v valgrind >/dev/null; then bench/instructions.sh; \
	 else echo "bench: valgrind is not installed: no instructions table (apt-get install valgrind)"; fi

bench-quick: all
	@bench/matrix.sh --quick

# Only the real servers (make bench runs them too); bench/peers.sh --quick
# for a short look.
bench-peers: all
	@bench/peers.sh

lint:
	shellcheck -x tests/*.sh bench/*.sh bench/peers/*.sh shim/thunder-preload tools/thunder-ab tools/thunder-status $(TOOL_LIBS) .ci/run
	shellcheck -x -S warning tests/*.bats tests/package/*.bats tests/adversary/*.bats tests/helpers.bash tests/compat/*.bats tests/compat/*.bash
	mandoc -Tlint -Wwarning thunder-preload.1
	@awk 'FNR == 601 { print FILENAME ": over 600 lines"; bad = 1 } END { exit bad }' \
	    shim/*.[ch] tools/*/*.[ch]

# The other commands are documented in thunder-preload(1): man finds them there.
MAN_LINKS = thunder-stat thunder-status thunder-loadgen thunder-ab

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(TOOLLIBDIR)
	install -m 0644 libthunder.so $(DESTDIR)$(LIBDIR)/libthunder.so
	install -m 0755 shim/thunder-preload $(DESTDIR)$(BINDIR)/thunder-preload
	install -m 0755 tools/thunder-stat $(DESTDIR)$(BINDIR)/thunder-stat
	install -m 0755 tools/thunder-status $(DESTDIR)$(BINDIR)/thunder-status
	install -m 0755 tools/thunder-loadgen $(DESTDIR)$(BINDIR)/thunder-loadgen
	install -m 0755 tools/thunder-ab $(DESTDIR)$(BINDIR)/thunder-ab
	install -m 0644 $(TOOL_LIBS) $(DESTDIR)$(TOOLLIBDIR)/
	install -m 0644 thunder-preload.1 $(DESTDIR)$(MANDIR)/thunder-preload.1
	for tool in $(MAN_LINKS); do ln -sf thunder-preload.1 $(DESTDIR)$(MANDIR)/$$tool.1; done

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libthunder.so $(DESTDIR)$(BINDIR)/thunder-preload \
	      $(DESTDIR)$(BINDIR)/thunder-stat $(DESTDIR)$(BINDIR)/thunder-loadgen \
	      $(DESTDIR)$(BINDIR)/thunder-status $(DESTDIR)$(BINDIR)/thunder-ab \
	      $(addprefix $(DESTDIR)$(TOOLLIBDIR)/,$(notdir $(TOOL_LIBS))) \
	      $(DESTDIR)$(MANDIR)/thunder-preload.1 $(MAN_LINKS:%=$(DESTDIR)$(MANDIR)/%.1)
	@rmdir $(DESTDIR)$(TOOLLIBDIR) 2>/dev/null || true

# The Debian package libthunder_$(VERSION)_ARCH.deb, here.  dpkg-buildpackage
# works on a copy of the tree (build/deb/): its clean step must not wipe this
# build.  debian/rules installs with `make install`, so this Makefile stays
# the one list of what goes where.  lintian runs when installed; an error
# fails the target.
deb:
	@command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null || \
	    { echo "make deb: needs dpkg-dev and debhelper: apt-get install dpkg-dev debhelper" >&2; exit 2; }
	@v=$$(dpkg-parsechangelog -SVersion) && [ "$$v" = "$(VERSION)" ] || \
	    { echo "make deb: debian/changelog says $$v, VERSION says $(VERSION)" >&2; exit 1; }
	rm -rf build/deb && mkdir -p build/deb/libthunder-$(VERSION)
	tar --exclude=./build --exclude=./.git --exclude='./*.deb' -cf - . | \
	    tar -xf - -C build/deb/libthunder-$(VERSION)
	cd build/deb/libthunder-$(VERSION) && dpkg-buildpackage -b -us -uc >../build.log 2>&1 || \
	    { tail -n 30 ../build.log; echo "make deb: dpkg-buildpackage failed; log in build/deb/build.log" >&2; exit 1; }
	cp build/deb/libthunder_$(VERSION)_$$(dpkg-architecture -qDEB_HOST_ARCH).deb .
	@ls -l libthunder_$(VERSION)_*.deb
	@if command -v lintian >/dev/null; then \
	    lintian -I --show-overrides build/deb/libthunder_$(VERSION)_*.changes | tee build/deb/lintian.txt; \
	    echo "lintian: $$(grep -c '^E:' build/deb/lintian.txt) errors, $$(grep -c '^W:' build/deb/lintian.txt) warnings," \
	         "$$(grep -c '^I:' build/deb/lintian.txt) infos, $$(grep -c '^O:' build/deb/lintian.txt) overridden"; \
	    ! grep -q '^E:' build/deb/lintian.txt; \
	else echo "lintian not installed: the package was not checked"; fi

# The package installed into a throw-away root with dpkg, an example served
# from the installed files, then removed (tests/package/deb.bats, ~1 min
# with the build: not part of make check).
deb-test: deb all
	@tests/run-all.sh tests/package/deb.bats

clean:
	rm -f libthunder.so $(TOOLS) $(EXAMPLES) $(UNITS) $(PROGS)
	rm -rf build libthunder_*.deb
