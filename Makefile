# dae - a denoising-autoencoder service in C.
# `make help` lists the targets. Everything lands in build/.

CC       ?= cc
BUILD    ?= build
# Every core unless the command line says otherwise (`make -j1`): CI and
# the README run plain `make test`, whose build is minutes of one core.
# The job server reaches `make test-sanitize`'s sub-make too. Not with
# `clean` among the goals: `make clean all` would remove what it builds.
ifeq ($(filter -j%,$(MAKEFLAGS))$(filter clean,$(MAKECMDGOALS)),)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 2)
endif
OPT      ?= -O3
# Portable by default: baseline x86-64. Hot loops pick AVX2/AVX-512 at run
# time (target_clones); `make NATIVE=1` builds for this CPU only.
ARCH     := $(if $(NATIVE),-march=native,)
CFLAGS   ?= $(OPT) -g
CFLAGS   += -std=c11 -Wall -Wextra -Wshadow -pthread -fno-math-errno $(ARCH)
CPPFLAGS += -D_GNU_SOURCE -Icore -Iio -I/usr/include/cjson
# libdae (core/) needs BLAS, cJSON and libm; libdae-io (io/) adds the image
# codecs, zlib and libarchive (data set import). Programs link libdae-io.a
# before libdae.a (io uses core).
CORE_LIBS := -lcjson -lopenblas -lm -pthread
# libarchive is linked statically: the import reads tar and zip only, and
# the shared library drags in libxml2 and ICU (40 MB of the container
# image) for formats dae never opens. Its compression libraries stay shared
# (the runtime packages of every Debian system; not all have -dev symlinks).
ARCHIVE_LIBS := -l:libarchive.a -l:libacl.so.1 -l:libbz2.so.1.0 -l:liblz4.so.1 -l:libzstd.so.1 -l:liblzma.so.5 -l:libnettle.so.8
IO_LIBS   := -lpng -ljpeg -lgif $(ARCHIVE_LIBS) -ldeflate -lz
LDLIBS   += $(IO_LIBS) $(CORE_LIBS)

# Sanitizer build: `make test-sanitize` builds the same tests into
# build/sanitize with ASan and UBSan. Its reports name files and lines;
# tracking where each variable lives (-fvar-tracking) took 40 of the 103 s
# core/gemm_avx512.c compiled in, the longest step of the build.
ifdef SANITIZE
BUILD    := build/sanitize
CFLAGS   += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined -fno-var-tracking
LDFLAGS  += -fsanitize=address,undefined
endif

# An AVX2 machine's build, made on any x86-64: `make AVX2_PATH=1` builds
# into build/avx2-path without the hot loops' AVX-512 copies (core/hot.h).
# Run with AVX2_ENV, it takes all of the path an AVX2 machine takes: the
# engine's AVX2 kernels and choices, the loops' AVX2 copies, OpenBLAS's
# Haswell kernels (`make test-avx2`; README, "The AVX2 path").
ifdef AVX2_PATH
BUILD    := build/avx2-path
CPPFLAGS += -DDAE_NO_AVX512_CLONES
endif
AVX2_ENV := DAE_ISA=avx2 OPENBLAS_CORETYPE=Haswell

# core/ = libdae, the network and what is done with it; io/ = libdae-io,
# files and formats (safetensors, checkpoints, IDX, images, atomic writes).
CORE_SRC  := $(wildcard core/*.c)
CORE_OBJ  := $(CORE_SRC:%.c=$(BUILD)/%.o)
IO_SRC    := $(wildcard io/*.c)
IO_OBJ    := $(IO_SRC:%.c=$(BUILD)/%.o)
CLI_SRC   := $(wildcard cli/*.c)
CLI_OBJ   := $(CLI_SRC:%.c=$(BUILD)/%.o)
SERVER_SRC := $(wildcard server/*.c)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
# The server's modules without main(), for the unit tests.
SERVER_MOD := $(filter-out $(BUILD)/server/main.o,$(SERVER_OBJ))
TEST_SRC  := $(wildcard tests/*.c)
TEST_OBJ  := $(TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_SRC := $(wildcard bench/*.c)

LIB       := $(BUILD)/libdae.a
IO_LIB    := $(BUILD)/libdae-io.a
LIBS      := $(IO_LIB) $(LIB)
DAE       := $(BUILD)/dae
SERVER    := $(BUILD)/dae-server
TEST_BIN  := $(BUILD)/test_dae
BENCH_BIN := $(BUILD)/bench_core

# Headers whose absence means `make deps` has not run on this machine.
DEP_HEADERS := /usr/include/cjson/cJSON.h /usr/include/criterion/criterion.h \
               /usr/include/png.h /usr/include/zlib.h /usr/include/jpeglib.h /usr/include/gif_lib.h /usr/include/archive.h \
               /usr/include/libdeflate.h \
               /usr/include/microhttpd.h /usr/include/x86_64-linux-gnu/cblas.h

.PHONY: all deps check-deps test test-browser test-layering test-sanitize test-avx2 test-hostile soak bench bench-core bench-libs bench-http run demo clean help refs fuzz

all: check-deps $(LIB) $(IO_LIB) $(DAE) $(SERVER) ## build the libraries, the command-line tool and the server

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(filter-out %.d,$(MAKEFILE_LIST)) | sed 's/:.*## /\t/' | expand -t 18

deps: ## install the Debian packages (as root), or print the apt command
	@tools/deps.sh

check-deps:
	@for h in $(DEP_HEADERS); do [ -f $$h ] || { tools/deps.sh; break; }; done

# check-deps first (order only): on a fresh machine it installs the
# headers every compile needs.
$(BUILD)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(IO_LIB): $(IO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(DAE): $(CLI_OBJ) $(LIBS)
	$(CC) $(LDFLAGS) $(CLI_OBJ) $(LIBS) $(LDLIBS) -o $@

# The web page and the API description are compiled into the server
# (server/assets.c, .incbin): its object follows the files.
$(BUILD)/server/assets.o: $(wildcard server/web/*)

$(SERVER): $(SERVER_OBJ) $(LIBS)
	$(CC) $(LDFLAGS) $(SERVER_OBJ) $(LIBS) $(LDLIBS) -lmicrohttpd -o $@

# The unit tests write archives with libarchive's writers, whose static
# objects want libxml2: they take the shared libarchive (libarchive-dev's).
$(TEST_BIN): $(TEST_OBJ) $(SERVER_MOD) $(LIBS)
	$(CC) $(LDFLAGS) $(TEST_OBJ) $(SERVER_MOD) $(LIBS) -larchive $(LDLIBS) -lmicrohttpd -lcriterion -o $@

# The engine benchmark needs the engine alone.
$(BENCH_BIN): $(BENCH_SRC:%.c=$(BUILD)/%.o) $(LIB)
	$(CC) $(LDFLAGS) $^ $(CORE_LIBS) -o $@

# The libraries the engine is measured against (`make bench-libs`): not
# the project's dependencies; bench/libs/run.sh installs them first. BLIS
# links last: it has a CBLAS of its own, and the engine's is OpenBLAS's.
$(BUILD)/bench-libs/products: bench/libs/products.c bench/timing.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIB) -lxsmm $(CORE_LIBS) -ldl -lblis -o $@

$(BUILD)/bench-libs/onednn: bench/libs/onednn.c bench/timing.h $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) $< $(LIBS) -ldnnl $(LDLIBS) -o $@

test: check-deps test-layering $(TEST_BIN) $(DAE) $(SERVER) ## build and run the layering check, the unit, command-line, server, API description and README tests
	tests/unit.sh $(TEST_BIN)
	tests/cli/run.sh $(DAE)
	tests/server/run.sh $(SERVER) $(DAE)
	tests/server/test_http_sweep.sh $(SERVER) $(DAE)
	tests/server/test_datasets.sh $(SERVER)
	tests/server/test_oip.py $(SERVER) $(DAE)
	tests/server/test_make_run.sh $(BUILD)
	tests/openapi/validate.sh $(SERVER)
	tests/readme/quickstart.sh $(SERVER) $(DAE)

# The web page (server/web/, served at /) in headless Chromium against a
# real server: upload, draw, train, an error shown; it saves a screenshot
# (`make test-browser SCREENSHOT=docs/web-page.png` renews the README's).
SCREENSHOT ?= $(BUILD)/web-page.png
test-browser: check-deps $(SERVER) ## the web page in headless Chromium (chromium, chromium-driver, python3-selenium)
	tests/browser/test_page.py $(SERVER) --screenshot $(SCREENSHOT)

# libdae is the network, not the files: no codec, zlib or file-opening
# symbol may be undefined in it (nm -u lists what it takes from elsewhere);
# those belong in libdae-io (io/). Prefixes for the libraries, whole names
# for libc's file calls.
LAYERING_PREFIXES := png_|jpeg_|Gif|DGif|EGif|stbi_|archive_|gz|inflate|deflate|crc32|adler32|zlib
LAYERING_CALLS    := fopen|fopen64|fdopen|freopen|open|open64|openat|creat|mkstemp|mkstemps|rename|unlink|opendir
test-layering: $(LIB) ## check that libdae.a uses no codec, zlib or file I/O symbol
	@bad=$$(nm -u $(LIB) | awk '{sub(/@.*/, "", $$NF); print $$NF}' | sort -u | \
	    grep -E '^($(LAYERING_PREFIXES))|^($(LAYERING_CALLS))$$'); \
	if [ -n "$$bad" ]; then echo "test-layering: $(LIB) uses what belongs in io/:"; echo "$$bad" | sed 's/^/  /'; exit 1; fi; \
	echo "test-layering: $(LIB) uses no codec, zlib or file I/O symbol"

# Criterion runs each test in a child process whose sanitizer report does
# not fail the test, so the log is searched for reports as well. Under
# ASan the tests have no time limit of their own (TEST_TIME_LIMIT in
# tests/test_util.h: Criterion's timers leak); the whole unit run has 30
# minutes.
SANITIZER_ENV := ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
test-sanitize: check-deps ## the same tests under ASan + UBSan
	$(MAKE) SANITIZE=1 build/sanitize/test_dae build/sanitize/dae build/sanitize/dae-server
	$(SANITIZER_ENV) timeout 1800 build/sanitize/test_dae --jobs 2 > build/sanitize/unit.log 2>&1; \
	    status=$$?; cat build/sanitize/unit.log; [ $$status -eq 0 ] && \
	    ! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' build/sanitize/unit.log
	$(SANITIZER_ENV) tests/cli/run.sh build/sanitize/dae > build/sanitize/cli.log 2>&1; \
	    status=$$?; cat build/sanitize/cli.log; [ $$status -eq 0 ] && \
	    ! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' build/sanitize/cli.log
	$(SANITIZER_ENV) tests/server/run.sh build/sanitize/dae-server build/sanitize/dae > build/sanitize/server.log 2>&1; \
	    status=$$?; cat build/sanitize/server.log; [ $$status -eq 0 ] && \
	    ! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' build/sanitize/server.log
	$(SANITIZER_ENV) tests/server/test_oip.py build/sanitize/dae-server build/sanitize/dae > build/sanitize/oip.log 2>&1; \
	    status=$$?; cat build/sanitize/oip.log; [ $$status -eq 0 ] && \
	    ! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' build/sanitize/oip.log

# On an AVX-512 machine the default build runs the AVX-512 copies of the
# hot loops whatever DAE_ISA says, so the AVX2 copies get their own run.
test-avx2: check-deps ## the unit and command-line tests on an AVX2 machine's path (AVX2_PATH; needs AVX2 and FMA)
	@if ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; then \
	    echo "test-avx2: skipped: this CPU has no AVX2 and FMA"; \
	else \
	    $(MAKE) AVX2_PATH=1 build/avx2-path/test_dae build/avx2-path/dae && \
	    $(AVX2_ENV) tests/unit.sh build/avx2-path/test_dae && \
	    $(AVX2_ENV) tests/cli/run.sh build/avx2-path/dae; \
	fi

# Attacks on the real daemon as an unauthenticated network client: bad
# images, aborted and slow uploads, stalled streams, memory floods, job
# races, HTTP protocol abuse (tests/hostile/test_*.py, loopback only).
test-hostile: check-deps $(SERVER) ## hostile clients against the real daemon (python3, loopback)
	python3 tests/hostile/run.py $(SERVER) $(HOSTILE)

# A mixed soak (not in CI): valid and hostile requests at c=64 for
# SOAK_SECONDS; prints requests, answers by kind and RSS start/peak/end.
SOAK_SECONDS ?= 600
soak: check-deps $(SERVER) ## 10-minute mixed soak of valid and hostile requests (SOAK_SECONDS)
	python3 tests/hostile/soak.py $(SERVER) $(SOAK_SECONDS) 64

BENCH_ARCH ?= ae,unet
bench-core: check-deps $(BENCH_BIN) ## engine speed: images/s and GFLOP/s for 1 and 2 threads (BENCH_ARCH=ae,unet)
	$(BENCH_BIN) --arch $(BENCH_ARCH)

bench: ## dae vs ONNX Runtime vs PyTorch side by side, with the speed targets (bench/compare.sh; BENCH_FLAGS=--full or --forward-only)
	bench/compare.sh $(BENCH_FLAGS)

bench-libs: check-deps ## dae's kernels and forward pass against libxsmm, OpenBLAS, BLIS and oneDNN (bench/libs/run.sh; BENCH_LIBS_FLAGS=--avx2)
	+bench/libs/run.sh $(BENCH_LIBS_FLAGS)

bench-http: all ## HTTP /denoise under load (wrk), against a PyTorch http.server peer, beside a training job (DAE_DATA_DIR); then /v2 infer (binary FP32) vs /denoise vs ONNX Runtime
	bench/http.sh $(BENCH_HTTP_FLAGS)
	bench/v2_infer.sh $(BENCH_V2_FLAGS)

# The service, from a checkout: on 127.0.0.1:8080 (DAE_BIND=0.0.0.0 make
# run to open it to the network; DAE_PORT=9000 make run, or any flag in
# RUN_FLAGS="--port 9000"). Everything it writes goes under RUN_DIR
# (git-ignored), never into the checkout: RUN_DIR/models starts as a copy
# of the committed models (mnist the default, the others by name) and holds
# trained and uploaded ones and the ACTIVE file; RUN_DIR/data starts with
# the committed mnist-mini set (the full sets: RUN_FLAGS="--data-dir DIR");
# RUN_DIR/state keeps the training-job records. The settings go in as
# DAE_* variables, so that a flag in RUN_FLAGS wins over them; OpenBLAS
# starts no threads of its own (OPENBLAS_NUM_THREADS: see the Dockerfile).
RUN_FLAGS ?=
RUN_DIR   ?= run
run: all ## build and start the HTTP service on 127.0.0.1:8080 (Ctrl-C stops it)
	@mkdir -p $(RUN_DIR)/models $(RUN_DIR)/data $(RUN_DIR)/state
	@cp -n models/*.safetensors $(RUN_DIR)/models/
	@[ -d $(RUN_DIR)/data/mnist-mini ] || cp -r tests/fixtures/mnist-mini $(RUN_DIR)/data/
	DAE_BIND="$${DAE_BIND:-127.0.0.1}" DAE_PORT="$${DAE_PORT:-8080}" DAE_MODELS_DIR="$${DAE_MODELS_DIR:-$(RUN_DIR)/models}" \
	DAE_DATA_DIR="$(RUN_DIR)/data" DAE_STATE_DIR="$${DAE_STATE_DIR:-$(RUN_DIR)/state}" \
	OPENBLAS_NUM_THREADS="$${OPENBLAS_NUM_THREADS:-1}" $(SERVER) $(RUN_FLAGS)

# The demo: the committed MNIST model on the committed test subset -
# quality numbers, then the notebook's figure as a PNG.
DEMO_MODEL ?= models/mnist.safetensors
demo: all ## denoise test digits with the committed model: quality numbers and a figure
	@mkdir -p build/demo
	$(DAE) info $(DEMO_MODEL)
	$(DAE) eval --model $(DEMO_MODEL) --data-dir tests/fixtures --dataset mnist-mini
	$(DAE) grid --model $(DEMO_MODEL) --data-dir tests/fixtures --dataset mnist-mini --count 10 \
	    --noise gaussian:0.5:clip:quantize --out build/demo/grid.png
	@echo "original / noisy / denoised test digits: build/demo/grid.png"

# Fuzzers: each tests/fuzz/fuzz_X.c is a libFuzzer target, built with clang
# (Debian's clang and libclang-rt-14-dev) under ASan + UBSan and run for
# FUZZ_SECONDS each (`make fuzz FUZZ_SECONDS=15` in CI). The image targets
# (fuzz_png, fuzz_jpeg, fuzz_gif, fuzz_bmp, fuzz_pnm, fuzz_tga) compile the
# decoders' own sources in: dae's io/image.c and io/img_*.c, and libpng, libjpeg-turbo,
# giflib, zlib and libdeflate as built from Debian's source packages by
# tools/fuzz_sources.sh (as root, into build/fuzz/{asan,msan}); they run a
# second time under MemorySanitizer (fuzz_X_msan). Each starts from its
# committed corpus tests/fuzz/corpus/fuzz_X (regression inputs included);
# new finds go to build/fuzz/corpus_X, crashes to build/fuzz/crash-*.
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_IMAGES  := fuzz_png fuzz_jpeg fuzz_gif fuzz_bmp fuzz_pnm fuzz_tga
FUZZ_CPP     := -DDAE_NO_CLONES -D_GNU_SOURCE -Icore -Iio -I/usr/include/cjson
# UBSan's checks stay recoverable at compile time and halt at run time
# (FUZZ_ENV): clang's -fno-sanitize-recover=undefined with ASan made
# core/layers.c alone take 130 s to compile instead of 60.
FUZZ_ASAN    := -g -O1 -fsanitize=address,undefined -DDAE_IMAGE_FILL_CHECK
FUZZ_MSAN    := -g -O1 -fsanitize=memory -fsanitize-memory-track-origins
FUZZ_ENV     := UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# The image code and what it needs from core/ (image buffers, noise, pages), for MSan.
FUZZ_IMG_SRC := io/image.c io/deflate.c $(wildcard io/img_*.c) io/fileio.c core/dae_image.c core/dae_status.c core/noise.c core/pages.c core/rng.c
fuzz_libs     = $(addprefix $(FUZZ_DIR)/$(1)/lib/,libpng.a libjpeg.a libgif.a libdeflate.a libz.a)
# One allocation over 256 MB is a finding: no input of a few KB needs it.
# With only the RSS limit, a PNG whose chunk header claimed 1.1 GB was
# caught only when MSan's memory passed 2 GB, after 3 million inputs.
FUZZ_RUN     := -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=2048 -malloc_limit_mb=256 \
                -print_final_stats=1
# Compiles, links and fuzzer runs are single-threaded: each step runs
# FUZZ_JOBS of them at once (the longest compile, core/layers.c, first),
# reading one shell command per line.
FUZZ_JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
FUZZ_PARALLEL := xargs -d '\n' -n 1 -P $(FUZZ_JOBS) sh -c
fuzz: check-deps ## run each libFuzzer target for FUZZ_SECONDS (needs clang; builds the image libraries as root)
	@command -v clang >/dev/null || { echo "fuzz: needs clang: apt-get install clang libclang-rt-14-dev"; exit 1; }
	tools/fuzz_sources.sh $(FUZZ_DIR)
	@echo "fuzz: compiling libdae and libdae-io under ASan + UBSan and the image code under MSan"
	@set -e; mkdir -p $(FUZZ_DIR)/obj/asan $(FUZZ_DIR)/obj/msan; rm -f $(FUZZ_DIR)/obj/asan/*.o $(FUZZ_DIR)/obj/msan/*.o; \
	{ for c in $(filter core/layers.c,$(CORE_SRC)) $(filter-out core/layers.c,$(CORE_SRC)) $(IO_SRC); do \
	    echo "clang $(FUZZ_ASAN) -fsanitize=fuzzer-no-link $(FUZZ_CPP) -I$(FUZZ_DIR)/asan/include -c $$c -o $(FUZZ_DIR)/obj/asan/$$(basename $$c .c).o"; \
	done; \
	for c in $(FUZZ_IMG_SRC); do \
	    echo "clang $(FUZZ_MSAN) -fsanitize=fuzzer-no-link $(FUZZ_CPP) -I$(FUZZ_DIR)/msan/include -c $$c -o $(FUZZ_DIR)/obj/msan/$$(basename $$c .c).o"; \
	done; } | $(FUZZ_PARALLEL)
	@echo "fuzz: linking $(notdir $(FUZZ_SRC:.c=)) (and the image ones under MSan, *_msan)"
	@set -e; for f in $(FUZZ_SRC); do \
	    name=$$(basename $$f .c); \
	    echo "clang $(FUZZ_ASAN) -fsanitize=fuzzer $(FUZZ_CPP) -I$(FUZZ_DIR)/asan/include $$f $(FUZZ_DIR)/obj/asan/*.o \
	        $(call fuzz_libs,asan) $(ARCHIVE_LIBS) -lcjson -lopenblas -lm -pthread -o $(FUZZ_DIR)/$$name"; \
	    case " $(FUZZ_IMAGES) " in *" $$name "*) \
	        echo "clang $(FUZZ_MSAN) -fsanitize=fuzzer $(FUZZ_CPP) -I$(FUZZ_DIR)/msan/include $$f $(FUZZ_DIR)/obj/msan/*.o \
	            $(call fuzz_libs,msan) -lm -pthread -o $(FUZZ_DIR)/$${name}_msan" ;; \
	    esac; \
	done | $(FUZZ_PARALLEL)
	@set -e; for f in $(FUZZ_SRC); do \
	    name=$$(basename $$f .c); \
	    corpus=$(FUZZ_DIR)/corpus_$$name; mkdir -p $$corpus; \
	    case $$name in \
	    fuzz_safetensors) cp tests/fixtures/ref/*.safetensors $$corpus/ ;; \
	    fuzz_idx) for g in tests/fixtures/mnist-mini/*.gz; do gzip -dc $$g | head -c 20000 > $$corpus/$$(basename $$g .gz); done ;; \
	    fuzz_dataset_import) tar -C tests/fixtures/images -cf $$corpus/seed.tar gray8.png gray.gif; \
	        tar -C tests/fixtures/images -czf $$corpus/seed.tar.gz gray8.png; ;; \
	    fuzz_multipart) printf 'multipart/form-data; boundary=XyZ\n--XyZ\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\nPNGDATA\r\n--XyZ--\r\n' > $$corpus/seed1; \
	        printf 'multipart/form-data; boundary="a b"\npreamble\r\n--a b\r\nContent-Disposition: form-data; name=other\r\n\r\nx\r\n--a b\r\ncontent-disposition: form-data; name="image"\r\n\r\nDATA\r\n--a b--' > $$corpus/seed2 ;; \
	    fuzz_oip) printf '{"id":"1","inputs":[{"name":"input","datatype":"FP32","shape":[1,1,4,4],"data":[[0,1,2,3],[4,5,6,7],[8,9,1e-3,0.5],[1,1,1,1]]}],"outputs":[{"name":"output","parameters":{"binary_data":true}}]}' > $$corpus/seed1; \
	        printf '{"inputs":[{"name":"images","datatype":"BYTES","shape":[2],"data":["aGVsbG8=","UE5HIT8="]}]}' > $$corpus/seed2; \
	        printf '{"inputs":[{"name":"images","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":9}}],"parameters":{"binary_data_output":true}}\0\005\0\0\0hello' > $$corpus/seed3 ;; \
	    esac; \
	done
	@echo "fuzz: each fuzzer for $(FUZZ_SECONDS) s, $(FUZZ_JOBS) at a time"
	@set -e; for f in $(FUZZ_SRC); do \
	    name=$$(basename $$f .c); \
	    seeds=""; [ -d tests/fuzz/corpus/$$name ] && seeds=tests/fuzz/corpus/$$name; \
	    bins=$$name; [ -x $(FUZZ_DIR)/$${name}_msan ] && bins="$$name $${name}_msan"; \
	    for bin in $$bins; do \
	        log=$(FUZZ_DIR)/$$bin.log; \
	        echo "if $(FUZZ_ENV) $(FUZZ_DIR)/$$bin $(FUZZ_RUN) -artifact_prefix=$(FUZZ_DIR)/$$bin- $(FUZZ_DIR)/corpus_$$name $$seeds > $$log 2>&1; \
	            then echo \"fuzz: $$bin \$$(grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' $$log | paste -sd ' ')\"; \
	            else tail -60 $$log; echo \"fuzz: $$bin FAILED (log: $$log)\"; exit 1; fi"; \
	    done; \
	done | $(FUZZ_PARALLEL)

# OpenBLAS's default kernel choice made the committed fixtures; a forced
# one (OPENBLAS_CORETYPE) rounds some of them differently in the last bits.
refs: ## regenerate the PyTorch reference fixtures (needs python3-torch)
	env -u OPENBLAS_CORETYPE /usr/bin/python3 tests/ref/make_refs.py tests/fixtures/ref

clean: ## remove build/
	rm -rf build

# Containers and deployment: make image, make test-deploy, make data.
include deploy/deploy.mk

-include $(CORE_OBJ:.o=.d) $(IO_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(SERVER_OBJ:.o=.d) $(TEST_OBJ:.o=.d) \
         $(BENCH_SRC:%.c=$(BUILD)/%.d)
