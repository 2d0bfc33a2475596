# lua-resty-ffi for nginx: the one entry point.
#   make          build the module (and the C demo)
#   make run      start the demo nginx on 127.0.0.1:20000; make stop
#   make test     build everything and run the whole test suite
#   make bench    benchmarks (see bench/)
#   make deb      the Debian package; make install / uninstall (DESTDIR, PREFIX)

SHELL := /bin/bash

NGINX ?= /usr/sbin/nginx
NGINX_SRC ?= /usr/share/nginx/src
LUAJIT_INC ?= /usr/include/luajit-2.1
LUAJIT_LIB ?= $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null \
                      | sed 's,^,/usr/lib/,;s,$$,/libluajit-5.1.so,')

BUILD := build
LUA_SRC := $(BUILD)/lua-nginx-module
NGX_BUILD := $(BUILD)/nginx
MODULE := $(BUILD)/ngx_http_lua_ffi_module.so
DEMO := examples/c/libdemo.so

# where an installed module finds its helper and libraries (compiled in;
# the build tree's module finds build/ffi-trial next to itself)
PREFIX ?= /usr/local
PKG := libnginx-mod-http-lua-ffi
HELPER_DIR = $(PREFIX)/libexec/$(PKG)
LIBRARY_DIR = $(PREFIX)/lib/nginx/ffi
# for ffi_shadow_path: a folder the package owns (removed on purge)
SHADOW_DIR ?= /var/cache/$(PKG)

CC ?= cc
HELPER_CFLAGS ?= -O2 -g
HELPER_LDFLAGS ?=
CFLAGS_LIB := -O2 -g -Wall -Wextra -Werror -fPIC -pthread

# Debian packages, installed when missing (mk/deps.sh)
DEPS_BUILD := nginx nginx-dev libnginx-mod-http-lua libnginx-mod-http-ndk \
	lua-resty-core libluajit2-5.1-dev libpcre3-dev libelf-dev dpkg-dev \
	gcc make binutils
DEPS_TEST := libtest-base-perl libtest-longstring-perl libtext-diff-perl \
	libipc-run-perl curl wrk libasan8 spin prometheus python3-venv \
	python3-cryptography libpython3-dev pkg-config

MODULE_SRCS := config mk/exports.map $(wildcard src/*.[ch] manager/*.[ch] \
	admin/*.[ch])

.PHONY: all deps module demo run stop test test-libs examples clean bench \
	soak test-memcheck model-check helpers deb install install-files \
	uninstall test-deb \
	fuzz fuzz-admin

all: deps module demo

deps:
	@sh mk/deps.sh $(DEPS_BUILD)

module: $(MODULE) $(BUILD)/ffi-trial

helpers: $(BUILD)/ffi-trial $(BUILD)/ffi-elf-check

demo: $(DEMO)

$(LUA_SRC)/.version:
	sh mk/lua-src.sh $(LUA_SRC)

# the compiled-in install paths: a new PREFIX reconfigures
$(BUILD)/paths: FORCE
	@mkdir -p $(BUILD)
	@echo '$(HELPER_DIR) $(LIBRARY_DIR) $(SHADOW_DIR)' | cmp -s - $@ \
	  || echo '$(HELPER_DIR) $(LIBRARY_DIR) $(SHADOW_DIR)' >$@

FORCE:

# a copy of nginx's configured tree, with lua-nginx-module beside ours so
# that its generated headers match the packaged module exactly
$(NGX_BUILD)/objs/Makefile: $(LUA_SRC)/.version config $(BUILD)/paths
	rm -rf $(NGX_BUILD)
	cp -r $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && source ./conf_flags \
	  && LUAJIT_INC=$(LUAJIT_INC) LUAJIT_LIB=$(LUAJIT_LIB) \
	     NGX_LUA_SRC=$(CURDIR)/$(LUA_SRC) \
	     NGX_LUA_FFI_HELPER_DIR=$(HELPER_DIR) \
	     NGX_LUA_FFI_LIBRARY_DIR=$(LIBRARY_DIR) \
	     NGX_LUA_FFI_SHADOW_DIR=$(SHADOW_DIR) \
	     ./configure "$${NGX_CONF_FLAGS[@]}" \
	     --with-cc-opt="-g -O2 -fstack-protector-strong -Wformat \
	       -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2" \
	     --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC" \
	     --add-dynamic-module=$(CURDIR)/$(LUA_SRC) \
	     --add-dynamic-module=$(CURDIR) >configure.log 2>&1 \
	  || { tail -30 configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -s -C $(NGX_BUILD) -f objs/Makefile \
	  objs/ngx_http_lua_ffi_module.so
	@# a new inode: running nginx keeps its mapping of the old file
	cp $(NGX_BUILD)/objs/ngx_http_lua_ffi_module.so $@.tmp
	mv -f $@.tmp $@

# runs a new library's constructors and libffi_init in a process of its own
$(BUILD)/ffi-trial: tools/ffi-trial.c
	@mkdir -p $(BUILD)
	$(CC) $(HELPER_CFLAGS) -Wall -Wextra -Werror -pthread -rdynamic \
	  $(HELPER_LDFLAGS) -o $@.tmp $< -ldl
	mv -f $@.tmp $@

$(DEMO): examples/c/demo.c
	$(CC) $(CFLAGS_LIB) -shared -o $@.tmp $<
	mv -f $@.tmp $@

# ---- installing (CONTRACT section 1): make install, make deb ----

DESTDIR ?=
NGINX_CONF_DIR ?= /etc/nginx
MODULE_DIR = $(PREFIX)/lib/nginx/modules
SNIPPET_DIR = $(PREFIX)/share/nginx/modules-available
LUA_DIR = $(PREFIX)/share/lua/5.1
INCLUDE_DIR = $(PREFIX)/include/nginx-lua-ffi
DOCDIR ?= $(PREFIX)/share/doc/$(PKG)
# after 50-mod-http-lua.conf: nginx includes modules-enabled/ in name order
SNIPPET_LINK = $(NGINX_CONF_DIR)/modules-enabled/60-mod-http-lua-ffi.conf

# everything but the module and its load snippet (debian/rules installs
# those with dh-sequence-nginx)
install-files: helpers
	install -d -m 0755 $(DESTDIR)$(LIBRARY_DIR) $(DESTDIR)$(SHADOW_DIR)
	install -D -m 0755 $(BUILD)/ffi-trial $(DESTDIR)$(HELPER_DIR)/ffi-trial
	install -D -m 0755 $(BUILD)/ffi-elf-check \
	  $(DESTDIR)$(PREFIX)/bin/ffi-elf-check
	install -D -m 0644 mk/ffi-elf-check.1 \
	  $(DESTDIR)$(PREFIX)/share/man/man1/ffi-elf-check.1
	install -D -m 0644 lua/resty_ffi.lua $(DESTDIR)$(LUA_DIR)/resty_ffi.lua
	install -D -m 0644 src/ngx_http_lua_ffi.h \
	  $(DESTDIR)$(INCLUDE_DIR)/ngx_http_lua_ffi.h
	install -D -m 0644 README.md hot-reload.md -t $(DESTDIR)$(DOCDIR)
	install -D -m 0644 examples/c/README.md examples/c/demo.c \
	  examples/c/nginx.conf.in -t $(DESTDIR)$(DOCDIR)/examples/c

install: module install-files
	install -D -m 0644 $(MODULE) \
	  $(DESTDIR)$(MODULE_DIR)/ngx_http_lua_ffi_module.so
	install -d -m 0755 $(DESTDIR)$(SNIPPET_DIR) \
	  $(DESTDIR)$(NGINX_CONF_DIR)/modules-enabled
	echo 'load_module $(MODULE_DIR)/ngx_http_lua_ffi_module.so;' \
	  >$(DESTDIR)$(SNIPPET_DIR)/mod-http-lua-ffi.conf
	ln -sf $(SNIPPET_DIR)/mod-http-lua-ffi.conf $(DESTDIR)$(SNIPPET_LINK)

# libraries an operator put into $(LIBRARY_DIR) stay (the folder with them)
uninstall:
	rm -f $(DESTDIR)$(SNIPPET_LINK) \
	  $(DESTDIR)$(SNIPPET_DIR)/mod-http-lua-ffi.conf \
	  $(DESTDIR)$(MODULE_DIR)/ngx_http_lua_ffi_module.so \
	  $(DESTDIR)$(HELPER_DIR)/ffi-trial $(DESTDIR)$(PREFIX)/bin/ffi-elf-check \
	  $(DESTDIR)$(PREFIX)/share/man/man1/ffi-elf-check.1 \
	  $(DESTDIR)$(LUA_DIR)/resty_ffi.lua \
	  $(DESTDIR)$(INCLUDE_DIR)/ngx_http_lua_ffi.h
	rm -rf $(DESTDIR)$(DOCDIR)
	-rmdir $(DESTDIR)$(HELPER_DIR) $(DESTDIR)$(INCLUDE_DIR) \
	  $(DESTDIR)$(LIBRARY_DIR) $(DESTDIR)$(SHADOW_DIR) 2>/dev/null

DEPS_DEB := build-essential debhelper nginx-dev libnginx-mod-http-ndk lintian

# built in a copy (dpkg-buildpackage writes to ..) with the lua module's
# source already there, so that the package build itself is offline
deb: deps $(LUA_SRC)/.version
	@sh mk/deps.sh $(DEPS_BUILD) $(DEPS_DEB)
	bash mk/deb.sh $(LUA_SRC)

# make install into a DESTDIR and back (t/deb/install.sh); the package
# installed with apt-get, Debian's nginx running it as www-data, purge
# (t/deb/run.sh; the machine is restored)
test-deb: deb
	@sh mk/deps.sh $(DEPS_TEST)
	bash t/deb/install.sh
	bash t/deb/run.sh

# ---- examples in other languages (CONTRACT section 7) ----

EXAMPLE_DEPS := golang-go librust-libc-dev libpython3-dev python3-cffi \
	pkg-config openjdk-17-jdk-headless libjnr-ffi-java xxd \
	libuv1-dev node-acorn node-cjs-module-lexer node-undici g++ \
	libc-ares2 libnghttp2-14 libbrotli1 libicu72 libuv1 libssl3 zlib1g

examples: all
	@sh mk/deps.sh $(EXAMPLE_DEPS)
	@command -v cargo >/dev/null 2>&1 || sh mk/deps.sh cargo
	$(MAKE) -C examples/go
	$(MAKE) -C examples/rust
	$(MAKE) -C examples/python
	$(MAKE) -C examples/java
	$(MAKE) -C examples/nodejs

include manager/elf.mk

# the admin endpoint's request parser under libFuzzer
build/admin_fuzz: fuzz/admin_fuzz.c admin/ngx_http_lua_ffi_admin_args.c \
		admin/ngx_http_lua_ffi_admin_args.h
	@mkdir -p build
	$(FUZZ_CC) $(ELF_FUZZ_CFLAGS) -Iadmin -o $@ fuzz/admin_fuzz.c \
		admin/ngx_http_lua_ffi_admin_args.c

fuzz-admin: build/admin_fuzz
	@mkdir -p build/admin-fuzz/corpus build/admin-fuzz/seeds
	@printf '\005reloadlib=demo' >build/admin-fuzz/seeds/reload
	@printf '\006statusa=1&lib=%%2e%%2e%%2Fx&lib=y' >build/admin-fuzz/seeds/status
	@printf '\007metrics' >build/admin-fuzz/seeds/metrics
	@printf '\007promotelib=demo' >build/admin-fuzz/seeds/promote
	@printf '\010rollbacklib=demo&version=12' >build/admin-fuzz/seeds/rollback
	./build/admin_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=build/admin-fuzz/ \
		build/admin-fuzz/corpus build/admin-fuzz/seeds

# both fuzzers, FUZZ_SECONDS each (CI runs this)
fuzz: deps
	@sh mk/deps.sh clang libclang-rt-14-dev
	$(MAKE) -s fuzz-elf fuzz-admin

# ---- the demo ----

run: all
	@bash mk/demo.sh start

stop:
	@bash mk/demo.sh stop

# ---- tests ----

# releases of one library for the reload tests (nodelete: stays mapped
# after dlclose(), as a Rust or C++ library with a unique symbol does)
comma := ,
TEST_LIBS := $(addprefix $(BUILD)/t/,libver-v1.so libver-v2.so libver-v3.so \
	libver-fail.so libver-crashinit.so libver-crashctor.so \
	libver-noisy.so libver-global.so libver-flaky.so \
	libver-nodelete.so libver-nodelete2.so libver-slowtrial.so \
	libver-slowvm.so)

$(BUILD)/t/libver-%.so: t/lib/reload/libver.c
	@mkdir -p $(BUILD)/t
	$(CC) $(CFLAGS_LIB) -shared -Wl,--build-id -DVERSION='"$*"' \
	  $(if $(filter fail,$*),-DINIT_RC=9) \
	  $(if $(filter crashinit,$*),-DCRASH_INIT) \
	  $(if $(filter crashctor,$*),-DCRASH_CTOR) \
	  $(if $(filter noisy,$*),-DNOISY) \
	  $(if $(filter flaky,$*),-DFLAKY) \
	  $(if $(findstring nodelete,$*),-Wl$(comma)-z$(comma)nodelete) \
	  $(if $(filter global,$*),-DNEEDS_GLOBAL) \
	  $(if $(filter slow%,$*),-DTRIAL_SLEEP_MS=6000) \
	  -o $@ $< -ldl \
	  $(if $(filter slowvm,$*),-Wl$(comma)--no-as-needed \
	    $$(pkg-config --libs python3-embed))

test-libs: $(TEST_LIBS)
	$(MAKE) -s -C t/lib/runtimes
	$(MAKE) -s -C t/lib/misbehave

# the whole suite: the fuzzers for a bounded time, every test file, then
# the soak (1,000,000 calls, 1,000 reloads), the whole suite again with
# the module under AddressSanitizer, and the Debian package (test-deb)
TEST_FUZZ_SECONDS ?= 10

test: all examples
	@sh mk/deps.sh $(DEPS_TEST)
	$(MAKE) -s model-check
	$(MAKE) -s test-libs build/ffi-elf-check
	$(MAKE) -s fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)
	prove -r t/
	FFI_SOAK=1 prove t/590-soak.t
	FFI_MEMCHECK_ALL=1 bash t/memcheck/run.sh
	$(MAKE) -s test-deb

# the reload protocol's model (model/reload.pml), checked exhaustively by
# spin: assertions and invalid end states; any error fails the target
model-check:
	@sh mk/deps.sh spin gcc
	@mkdir -p $(BUILD)/model
	cd $(BUILD)/model && spin -a $(CURDIR)/model/reload.pml \
	  && $(CC) -O2 -DSAFETY -DCOLLAPSE -w -o pan pan.c \
	  && ./pan -m200000 >pan.out 2>&1; status=$$?; \
	  grep -E 'errors:|states, stored|elapsed' pan.out; \
	  test $$status = 0 && grep -q 'errors: 0' pan.out \
	  || { cat pan.out; exit 1; }

soak: all
	@sh mk/deps.sh $(DEPS_TEST)
	$(MAKE) -s test-libs
	FFI_SOAK=1 prove t/590-soak.t

test-memcheck: all
	@sh mk/deps.sh $(DEPS_TEST)
	$(MAKE) -s test-libs
	FFI_MEMCHECK_ALL=1 bash t/memcheck/run.sh

# ---- benchmarks (bench/results.md, bench/results.png) ----

DEPS_BENCH := wrk gnuplot-nox linux-perf python3 golang-go

# every language's runtime through ffi (examples) against unix-socket
# servers (bench/uds_echo.*) and pure Lua
bench: all examples
	@sh mk/deps.sh $(DEPS_BENCH)
	bash bench/run.sh

clean:
	rm -rf $(BUILD)
	rm -f $(DEMO)
	$(MAKE) -s -C t/lib/runtimes clean
	$(MAKE) -s -C t/lib/misbehave clean
	for d in go rust python java nodejs; do $(MAKE) -s -C examples/$$d clean; done
