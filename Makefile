# Firefly: C engine + Lua 5.4 module + `firefly` interpreter.
#
# Knobs:
#   DEBUG=1      -O0 -g3, assertions on
#   SANITIZE=1   ASan + UBSan (build, tests and the interpreter)
#   PREFIX=...   where `make install` puts bin/, lib/, include/ and share/
#                (BINDIR, LIBDIR, INCDIR, LUADIR, CMODDIR, MANDIR: each part)
#
# Targets: `make help` lists them, one line each.

DEBUG    ?= 0
SANITIZE ?= 0
PREFIX   ?= /usr/local

# Debian packages the build, the tests and `make run` need. The ONNX
# export packs protobuf-c structs generated from libonnx-dev's onnx.proto;
# python3-torch and python3-onnx only check the exports in the tests (the
# product never runs Python); luarocks and pkg-config test the installs,
# man-db, groff-base and bsdextrautils (col) the man page.
DEB_PKGS := lua5.4 liblua5.4-dev libopenblas-dev lua-unit libreadline-dev \
            zlib1g-dev lua-cjson dataset-fashion-mnist gnuplot-nox \
            clang-14 libclang-rt-14-dev \
            protobuf-c-compiler libprotobuf-c-dev libonnx-dev \
            python3-torch python3-onnx luarocks pkg-config \
            libopenmpi-dev openmpi-bin python3 \
            man-db groff-base bsdextrautils

CC      ?= cc
LUA_INC := /usr/include/lua5.4
# The pthread flavour of OpenBLAS: it owns the machine's threads, so the
# engine runs its own loops on the calling thread (no second busy pool).
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-pthread
BLAS_LIB := -lopenblas
# Open MPI's headers only: engine/core/dist.c loads libmpi at run time
# (dlopen), so a plain process never loads it (see that file).
MPI_INC := /usr/lib/x86_64-linux-gnu/openmpi/include

WARN := -Wall -Wextra -Wshadow -Wpointer-arith -Wmissing-prototypes \
        -Wstrict-prototypes -Wno-unused-parameter
ifeq ($(DEBUG),1)
  OPT := -O0 -g3
else
  OPT := -O2 -g -DNDEBUG
endif
ifeq ($(SANITIZE),1)
  OPT += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=address,undefined
endif

B := build
# Generated at build time: the protobuf-c code of ONNX's schema.
GEN := $(B)/gen
ONNX_PROTO ?= /usr/include/onnx/onnx.proto

CFLAGS_ALL := -std=gnu11 -fPIC $(OPT) $(WARN) -Iengine/include -I$(BLAS_INC) -I$(MPI_INC) -I$(GEN) $(CFLAGS)
LDLIBS_ALL := $(BLAS_LIB) -lz -lm $(LDSAN) $(LDFLAGS)

VERSION := $(shell sed -n 's/^\#define FF_VERSION "\(.*\)"/\1/p' engine/include/ff.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
BINDIR  ?= $(PREFIX)/bin
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include/firefly
LUADIR  ?= $(PREFIX)/share/lua/5.4
CMODDIR ?= $(PREFIX)/lib/lua/5.4
MANDIR  ?= $(PREFIX)/share/man

CORE_SRC := $(wildcard engine/core/*.c)
BIND_SRC := $(wildcard engine/lua/*.c)
INTERP_SRC := $(wildcard interp/*.c)
CTEST_SRC := $(wildcard tests/c/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(B)/%.o)
BIND_OBJ := $(BIND_SRC:%.c=$(B)/%.o) $(GEN)/onnx.pb-c.o
BIND_LIBS := -lprotobuf-c
INTERP_OBJ := $(INTERP_SRC:%.c=$(B)/%.o)
CTEST_OBJ := $(CTEST_SRC:%.c=$(B)/%.o)
HEADERS := $(wildcard engine/include/*.h engine/core/*.h engine/lua/*.h interp/*.h tests/c/*.h)

.PHONY: all deps test bench bench-dist run install install-lua clean lint fuzz fuzz-build valgrind help

all: firefly $(B)/firefly/core.so

# Installs missing Debian packages (sudo when not root). Cheap when all are
# present, so every build runs it first.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The direct convolution loops are compiled once per instruction set and
# chosen at run time by what the CPU supports (conv_direct.c); -O3 for
# gcc's full unrolling of their register tiles.
KERNEL_OPT := $(if $(filter 1,$(DEBUG)),,-O3)
%/engine/core/conv_direct_avx512.o: ISA_FLAGS := -mavx512f -mavx2 -mfma $(KERNEL_OPT)
%/engine/core/conv_direct_avx2.o: ISA_FLAGS := -mavx2 -mfma $(KERNEL_OPT)
%/engine/core/conv_direct_portable.o: ISA_FLAGS := $(KERNEL_OPT)
# The engine's sgemm (gemm.h), compiled the same way.
%/engine/core/gemm_avx512.o: ISA_FLAGS := -mavx512f -mavx2 -mfma $(KERNEL_OPT)
%/engine/core/gemm_avx2.o: ISA_FLAGS := -mavx2 -mfma $(KERNEL_OPT)
%/engine/core/gemm_portable.o: ISA_FLAGS := $(KERNEL_OPT)
# The fused optimiser's loops branch on the options; -O3 unswitches them
# into vector loops (no -m flags: no fused multiply-adds, the same bits;
# sqrtf without errno, so that it vectorises).
%/engine/core/optim.o: ISA_FLAGS := $(KERNEL_OPT) -fno-math-errno

$(B)/%.o: %.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(ISA_FLAGS) -I$(LUA_INC) -c $< -o $@

# One protoc-c run makes both files (a grouped target: GNU make 4.3).
$(GEN)/onnx.pb-c.c $(GEN)/onnx.pb-c.h &: $(ONNX_PROTO) | deps
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -I$(dir $(ONNX_PROTO)) $(notdir $(ONNX_PROTO))

# Generated code: our warning set is not its author's.
$(GEN)/onnx.pb-c.o: $(GEN)/onnx.pb-c.c $(GEN)/onnx.pb-c.h
	$(CC) -std=gnu11 -fPIC $(OPT) -I$(GEN) -c $< -o $@

$(B)/engine/lua/onnx.o: $(GEN)/onnx.pb-c.h

$(B)/libffcore.a: $(CORE_OBJ)
	ar rcs $@ $^

# The engine for C programs (make install): the core only, no Lua.
$(B)/libfirefly.so.$(VERSION): $(CORE_OBJ)
	$(CC) -shared -Wl,-soname,libfirefly.so.$(SOMAJOR) -o $@ $(CORE_OBJ) $(LDLIBS_ALL)

# The module for stock lua5.4: require "firefly.core" finds build/firefly/core.so.
$(B)/firefly/core.so: $(BIND_OBJ) $(B)/libffcore.a
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $(BIND_OBJ) $(B)/libffcore.a $(BIND_LIBS) $(LDLIBS_ALL)

# The interpreter links the engine in and preloads it.
firefly: $(INTERP_OBJ) $(BIND_OBJ) $(B)/libffcore.a
	$(CC) -o $@ $(INTERP_OBJ) $(BIND_OBJ) $(B)/libffcore.a -llua5.4 -lreadline $(BIND_LIBS) $(LDLIBS_ALL) -Wl,-E

$(B)/test_c: $(CTEST_OBJ) $(B)/libffcore.a
	$(CC) -o $@ $(CTEST_OBJ) $(B)/libffcore.a $(LDLIBS_ALL)

test: all $(B)/test_c
	@SANITIZE=$(SANITIZE) bash tests/run.sh

bench: all
	@dpkg-query -W -f='$${Status}' python3-torch 2>/dev/null | grep -q 'ok installed' || { \
	  echo "make bench: installing python3-torch (the PyTorch comparison only; the product never uses it)"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3-torch || \
	  echo "make bench: python3-torch could not be installed; the PyTorch comparison will be skipped"; }
	@bash tests/bench/run.sh

# Data-parallel throughput over MPI: 1 rank x 1 thread, 2 ranks x 1 thread,
# 1 rank x 2 threads (spec/dist.md has the table and the scaling model).
bench-dist: all
	@bash tests/bench/dist.sh

# The main job: grow an MLP on Fashion-MNIST by Firefly descent.
run: all
	./firefly examples/fashion_grow.lua

# The interpreter and the Lua module (also what `luarocks make` runs, with
# the rock's directories), then the C engine: headers, static and shared
# library, firefly.pc, the man page, and the PyTorch loader of exports.
install-lua: all
	install -d $(BINDIR) $(CMODDIR)/firefly $(LUADIR)
	install -m 755 firefly $(BINDIR)/firefly
	install -m 755 $(B)/firefly/core.so $(CMODDIR)/firefly/core.so
	cp -r lib/firefly $(LUADIR)/
	install -d $(PREFIX)/share/firefly/spec && install -m 644 spec/*.md $(PREFIX)/share/firefly/spec/

install: install-lua $(B)/libffcore.a $(B)/libfirefly.so.$(VERSION)
	install -d $(INCDIR) $(LIBDIR)/pkgconfig $(MANDIR)/man1
	install -m 644 engine/include/*.h $(INCDIR)/
	install -m 644 $(B)/libffcore.a $(LIBDIR)/libfirefly.a
	install -m 755 $(B)/libfirefly.so.$(VERSION) $(LIBDIR)/
	ln -sf libfirefly.so.$(VERSION) $(LIBDIR)/libfirefly.so.$(SOMAJOR)
	ln -sf libfirefly.so.$(SOMAJOR) $(LIBDIR)/libfirefly.so
	sed -e 's|@PREFIX@|$(PREFIX)|; s|@LIBDIR@|$(LIBDIR)|; s|@INCDIR@|$(INCDIR)|; s|@VERSION@|$(VERSION)|' \
	  engine/firefly.pc.in > $(LIBDIR)/pkgconfig/firefly.pc
	install -m 644 interp/firefly.1 $(MANDIR)/man1/firefly.1
	install -d $(PREFIX)/share/firefly
	install -m 644 tools/firefly_torch.py $(PREFIX)/share/firefly/firefly_torch.py

# ---- fuzzing: libFuzzer targets tests/fuzz/fuzz_*.c under ASan + UBSan ----
# The engine is compiled again with clang into build/fuzz (its own tree:
# the fuzz flags never touch the normal build). `make fuzz` runs each
# target for FUZZ_SECONDS; tests/run.sh runs a short pass (tests/fuzz/run.sh).
FUZZ_CC      ?= clang-14
FUZZ_SECONDS ?= 60
FB           := build/fuzz
FUZZ_FLAGS   := -std=gnu11 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
                -fno-sanitize-recover=all -Iengine/include -I$(BLAS_INC) -I$(MPI_INC)
FUZZ_BINS    := $(patsubst tests/fuzz/%.c,$(FB)/bin/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_OBJ     := $(CORE_SRC:%.c=$(FB)/obj/%.o)

$(FB)/obj/%.o: %.c $(HEADERS) | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(ISA_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FB)/bin/%: tests/fuzz/%.c $(wildcard tests/fuzz/*.h) $(FUZZ_OBJ)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_OBJ) $(BLAS_LIB) -lz -lm

fuzz-build: $(FUZZ_BINS)

fuzz: fuzz-build
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh long

# ---- valgrind (memcheck) over the Lua suites; slow, so not part of test ----
valgrind: all
	@command -v valgrind >/dev/null || { \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq valgrind; }
	@bash tests/fuzz/valgrind.sh

lint:
	cppcheck --quiet --enable=warning,portability --std=c11 -Iengine/include engine interp

clean:
	rm -rf $(B) firefly

# One line per target (tests/lua/test_interp.lua checks that every .PHONY
# target is here).
help:
	@echo "make [target] [DEBUG=1] [SANITIZE=1] [PREFIX=dir]"
	@echo "  all         build ./firefly and build/firefly/core.so (the default)"
	@echo "  deps        install the Debian packages the build and tests need"
	@echo "  test        run every test suite; ends with 'N passed, N failed'"
	@echo "  bench       run the benchmarks (tests/bench/README.md)"
	@echo "  bench-dist  data-parallel throughput over MPI (spec/dist.md)"
	@echo "  run         grow an MLP on Fashion-MNIST (examples/fashion_grow.lua)"
	@echo "  install     install-lua, then the C library (headers, libfirefly, firefly.pc) and the man page"
	@echo "  install-lua install firefly, the Lua module and spec/ under PREFIX ($(PREFIX))"
	@echo "  lint        cppcheck over engine/ and interp/"
	@echo "  fuzz        build and run each libFuzzer target for FUZZ_SECONDS"
	@echo "  fuzz-build  build the libFuzzer targets only (build/fuzz)"
	@echo "  valgrind    the Lua suites under valgrind memcheck (slow)"
	@echo "  clean       remove build/ and ./firefly"
	@echo "  help        this list"
