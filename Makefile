# duet — top-level build.
#
#   make                         build libduet, duetd, duetctl, the unit tests
#   make check                   build and run every test; prints "N passed, N failed"
#   make demo                    run duet's main job (README)
#   make deps                    install build and test dependencies (Debian 12)
#   make SANITIZE=address,undefined [check]
#                                the same, instrumented (objects go to build-san/)
#   make SANITIZE=thread B=build-tsan unit-tests
#                                unit tests under ThreadSanitizer, by hand
#                                (run build-tsan/tests/unit/test_*)
#
# Sources are discovered by directory, so a new module is a new .c/.h pair and
# nothing here changes.

SANITIZE ?=
ifeq ($(SANITIZE),)
B ?= build
else
B ?= build-san
endif

CC ?= gcc
PKGS := liburing libconfig jansson libcrypto libisal
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
RDMA_LIBS := $(shell pkg-config --libs librdmacm libibverbs 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-missing-field-initializers \
	  -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -fno-strict-aliasing \
	  -Iuserspace/lib -Ikernel -Iuserspace/duetd $(PKG_CFLAGS) -MMD -MP
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif
LDLIBS := $(PKG_LIBS) -laio -lpthread

LIB_SRCS := $(wildcard userspace/lib/*.c)
KERN_SRCS := $(wildcard kernel/*.c)
DUETD_SRCS := $(wildcard userspace/duetd/*.c)
DUETCTL_SRCS := $(wildcard tools/duetctl/*.c)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_HELPERS := $(filter-out tests/unit/test_%.c,$(wildcard tests/unit/*.c))

LIB_OBJS := $(LIB_SRCS:%.c=$(B)/%.o)
KERN_OBJS := $(KERN_SRCS:%.c=$(B)/%.o)
DUETD_OBJS := $(DUETD_SRCS:%.c=$(B)/%.o)
DUETCTL_OBJS := $(DUETCTL_SRCS:%.c=$(B)/%.o)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(B)/tests/unit/%)
UNIT_HELPER_OBJS := $(UNIT_HELPERS:%.c=$(B)/%.o)

LIBDUET := $(B)/libduet.a
# The daemon's modules as an archive too, so unit tests can link one of
# them (the linker pulls only what a test references, never main()).
LIBDUETD := $(B)/libduetd.a
DUETD := $(B)/duetd
DUETCTL := $(B)/duetctl

.PHONY: all check demo unit-tests deps clean format
all: $(LIBDUET) $(DUETCTL) $(if $(DUETD_SRCS),$(DUETD)) $(UNIT_BINS)

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIBDUET): $(LIB_OBJS) $(KERN_OBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(LIBDUETD): $(DUETD_OBJS)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

$(DUETD): $(DUETD_OBJS) $(LIBDUET)
	$(CC) $(LDFLAGS) -o $@ $(DUETD_OBJS) $(LIBDUET) $(LDLIBS) $(RDMA_LIBS)

$(DUETCTL): $(DUETCTL_OBJS) $(LIBDUET)
	$(CC) $(LDFLAGS) -o $@ $(DUETCTL_OBJS) $(LIBDUET) $(LDLIBS)

$(B)/tests/unit/%: $(B)/tests/unit/%.o $(UNIT_HELPER_OBJS) $(LIBDUETD) $(LIBDUET)
	$(CC) $(LDFLAGS) -o $@ $< $(UNIT_HELPER_OBJS) $(LIBDUETD) $(LIBDUET) \
		$(CMOCKA_LIBS) $(LDLIBS) $(RDMA_LIBS)

unit-tests: $(UNIT_BINS)

# The whole suite: unit tests (plain and sanitized), integration tests on the
# host, and the tests that need ublk/RDMA/netem inside the guest kernel.
# `check` installs what is missing first, then re-reads this Makefile so that
# pkg-config sees the freshly installed libraries.
check:
	@tools/deps.sh
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory SANITIZE=address,undefined unit-tests
	@DUET_BUILD=$(abspath $(B)) tests/run.sh

deps:
	@tools/deps.sh

# duet's main job, end to end on this machine (README).
demo:
	@tools/deps.sh
	@echo "building duet..."
	@$(MAKE) --no-print-directory -s all
	@tools/demo.sh

format:
	clang-format -i $(LIB_SRCS) $(DUETD_SRCS) $(DUETCTL_SRCS) $(UNIT_SRCS) \
		$(wildcard userspace/*/*.h kernel/*.h kernel/*.c tools/duetctl/*.h)

clean:
	rm -rf build build-san build-tsan

-include $(shell find $(B) -name '*.d' 2>/dev/null)
