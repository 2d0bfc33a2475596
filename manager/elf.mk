# manager/elf.mk: builds the ELF inspector's CLI and libFuzzer target and runs
# the fuzzer; `include manager/elf.mk` from the top-level Makefile (repo root).

FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang

ELF_CC ?= $(CC)
ELF_CFLAGS ?= -std=gnu99 -O2 -g -Wall -Wextra -Werror
ELF_FUZZ_CFLAGS ?= -std=gnu99 -O1 -g -Wall -Wextra -Werror \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
ELF_LIBS = -lelf

ELF_SRCS = manager/ngx_http_lua_ffi_elf.c
ELF_DEPS = $(ELF_SRCS) manager/ngx_http_lua_ffi_elf.h
ELF_FUZZ_DIR = build/elf-fuzz

# small glibc stubs: real linker output, quick for the fuzzer to mutate
ELF_FUZZ_SYSLIBS = libdl.so.2 librt.so.1 libpthread.so.0 libanl.so.1 \
	libutil.so.1

build/ffi-elf-check: tools/ffi-elf-check.c $(ELF_DEPS)
	@mkdir -p build
	$(ELF_CC) $(ELF_CFLAGS) -Imanager -o $@ tools/ffi-elf-check.c \
		$(ELF_SRCS) $(ELF_LIBS)

build/elf_fuzz: fuzz/elf_fuzz.c $(ELF_DEPS)
	@mkdir -p build
	$(FUZZ_CC) $(ELF_FUZZ_CFLAGS) -Imanager -o $@ fuzz/elf_fuzz.c \
		$(ELF_SRCS) $(ELF_LIBS)

# seeds are made fresh each run (never committed): a good library, its Go-
# and JVM-pinned variants and a few system libraries; the corpus the fuzzer
# grows is kept in build/ so later runs start from it
fuzz-elf: build/elf_fuzz
	@rm -rf $(ELF_FUZZ_DIR)/seeds
	@mkdir -p $(ELF_FUZZ_DIR)/seeds $(ELF_FUZZ_DIR)/corpus
	@printf '%s\n' 'int libffi_init(char *c, void *q) { return !c && !q; }' \
		>$(ELF_FUZZ_DIR)/seed.c
	@printf '%s\n' 'void JNI_CreateJavaVM(void) {}' >$(ELF_FUZZ_DIR)/jvm.c
	$(ELF_CC) -shared -fPIC -o $(ELF_FUZZ_DIR)/libjvm.so \
		$(ELF_FUZZ_DIR)/jvm.c
	$(ELF_CC) -shared -fPIC -Wl,--build-id -o $(ELF_FUZZ_DIR)/seeds/good.so \
		$(ELF_FUZZ_DIR)/seed.c
	$(ELF_CC) -shared -fPIC -o $(ELF_FUZZ_DIR)/seeds/jvm.so \
		$(ELF_FUZZ_DIR)/seed.c -Wl,--no-as-needed \
		-L$(ELF_FUZZ_DIR) -ljvm
	printf 'go1.19' >$(ELF_FUZZ_DIR)/buildinfo
	objcopy --add-section .go.buildinfo=$(ELF_FUZZ_DIR)/buildinfo \
		$(ELF_FUZZ_DIR)/seeds/good.so $(ELF_FUZZ_DIR)/seeds/go.so
	@for lib in $(ELF_FUZZ_SYSLIBS); do \
		f=$$($(ELF_CC) -print-file-name=$$lib); \
		if [ -f "$$f" ]; then cp "$$f" $(ELF_FUZZ_DIR)/seeds/; fi; \
	done
	./build/elf_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=$(ELF_FUZZ_DIR)/ \
		$(ELF_FUZZ_DIR)/corpus $(ELF_FUZZ_DIR)/seeds

.PHONY: fuzz-elf
