# libthunder — see README.md.  `make demo` and `make check` are the two commands.
# The project's one version number; debian/changelog must say the same.
VERSION := $(shell cat VERSION)
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
SAN     ?=
BINDIR   = $(PREFIX)/bin
LIBDIR   = $(PREFIX)/lib
MANDIR   = $(PREFIX)/share/man/man1
# Shell libraries of the installed scripts (thunder-ab finds them here).
TOOLLIBDIR = $(LIBDIR)/libthunder
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
SHIM_CFLAGS = $(CFLAGS) -fPIC -fvisibility=hidden -ftls-model=initial-exec
SHIM_LDFLAGS = $(LDFLAGS) -shared -Wl,-soname,libthunder.so \
	-Wl,--version-script=shim/libthunder.map -Wl,-z,now -Wl,-z,defs -ldl -lpthread

SHIM_SRC  = $(wildcard shim/*.c)
SHIM_LIB_SRC = $(SHIM_SRC)
# The segment core: the one piece of the library the tools and tests link.
SEGCORE   = shim/segcore.c shim/segcore.h shim/segment.h
STAT_SRC  = $(wildcard tools/stat/*.c)
SHIM_HDR  = $(wildcard shim/*.h) shim/syms.def
EXAMPLES  = $(patsubst %.c,%,$(wildcard examples/ex_*.c))
UNIT_SRC  = $(wildcard tests/unit/test_*.c)
UNITS     = $(UNIT_SRC:.c=)
PROGS     = $(patsubst %.c,%,$(wildcard tests/progs/*.c))
LOADGEN_SRC = $(wildcard tools/loadgen/*.c)
LOADGEN_HDR = $(wildcard tools/loadgen/*.h tools/common/*.h)
TOOLS     = tools/thunder-loadgen tools/thunder-stat

.PHONY: all check demo clean install uninstall unit lint bench bench-quick fuzz soak check-valgrind check-tsan check-adversary
all: libthunder.so $(TOOLS) $(EXAMPLES)

libthunder.so: $(SHIM_LIB_SRC) $(SHIM_HDR) shim/libthunder.map
	$(CC) $(SHIM_CFLAGS) -o $@ $(SHIM_LIB_SRC) $(SHIM_LDFLAGS)

tools/thunder-stat: $(STAT_SRC) tools/stat/stat.h $(SEGCORE) VERSION
	$(CC) $(CFLAGS) -DTH_VERSION='"$(VERSION)"' -Ishim -o $@ $(STAT_SRC) shim/segcore.c $(LDFLAGS)

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
	    rm -f $$t.valgrind; \
	done

# ThreadSanitizer over the threaded example (ex_threads, 2 processes x 4
# threads, auto/lock/exclusive; tests/tsan.sh), alone; make check runs it too.
# It fails on any report: no suppressions.  The shim is preloaded in front of
# gcc's TSan runtime, where TSan sees its mutexes (behind it, TSan's blocking
# epoll_wait interceptor hid them: the old false reports).
check-tsan: all
	@tests/tsan.sh

fuzz:
	@tests/fuzz/run.sh $${FUZZ_SECONDS:-120}

bench: all
	@bench/matrix.sh

bench-quick: all
	@bench/matrix.sh --quick

lint:
	shellcheck -x tests/*.sh bench/*.sh shim/thunder-preload tools/thunder-ab $(TOOL_LIBS) .ci/run
	shellcheck -x -S warning tests/*.bats tests/adversary/*.bats tests/helpers.bash
	mandoc -Tlint -Wwarning thunder-preload.1
	@awk 'FNR == 601 { print FILENAME ": over 600 lines"; bad = 1 } END { exit bad }' \
	    shim/*.[ch] tools/*/*.[ch]

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR) $(DESTDIR)$(TOOLLIBDIR)
	install -m 0644 libthunder.so $(DESTDIR)$(LIBDIR)/libthunder.so
	install -m 0755 shim/thunder-preload $(DESTDIR)$(BINDIR)/thunder-preload
	install -m 0755 tools/thunder-stat $(DESTDIR)$(BINDIR)/thunder-stat
	install -m 0755 tools/thunder-loadgen $(DESTDIR)$(BINDIR)/thunder-loadgen
	install -m 0755 tools/thunder-ab $(DESTDIR)$(BINDIR)/thunder-ab
	install -m 0644 $(TOOL_LIBS) $(DESTDIR)$(TOOLLIBDIR)/
	install -m 0644 thunder-preload.1 $(DESTDIR)$(MANDIR)/thunder-preload.1

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libthunder.so $(DESTDIR)$(BINDIR)/thunder-preload \
	      $(DESTDIR)$(BINDIR)/thunder-stat $(DESTDIR)$(BINDIR)/thunder-loadgen \
	      $(DESTDIR)$(BINDIR)/thunder-ab $(addprefix $(DESTDIR)$(TOOLLIBDIR)/,$(notdir $(TOOL_LIBS))) \
	      $(DESTDIR)$(MANDIR)/thunder-preload.1
	@rmdir $(DESTDIR)$(TOOLLIBDIR) 2>/dev/null || true

clean:
	rm -f libthunder.so $(TOOLS) $(EXAMPLES) $(UNITS) $(PROGS)
