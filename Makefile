# vitd - build, tests, benchmarks. `make` builds build/vitd; `make test` runs the suite.
# Both install the Debian packages they need first (scripts/deps.sh), so on a fresh machine
# `make run` and `make test` are all the set-up.

CC      ?= gcc
BUILD   ?= build
PYTHON  ?= /usr/bin/python3
OPT     ?= -O2
SAN     ?=
CFLAGS  := $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wstrict-prototypes \
           -fopenmp -MMD -MP -Iengine -Iserver $(SAN) $(EXTRA_CFLAGS)
LDFLAGS := -fopenmp $(SAN)
LDLIBS   = -ldnnl -lturbojpeg -lpng -ljansson -lmicrohttpd -lz -lm -lpthread

ENGINE_SRC := $(wildcard engine/*.c)
SERVER_SRC := $(wildcard server/*.c)
TEST_SRC   := $(wildcard tests/test_*.c)
TESTLIB_SRC:= $(filter-out tests/test_%,$(wildcard tests/*.c))

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/%.o)
TESTLIB_OBJ:= $(TESTLIB_SRC:%.c=$(BUILD)/%.o)
TEST_BIN   := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)

DEPS_STAMP := $(BUILD)/.deps-build

.PHONY: all deps test asan bench bench-server run clean fixtures
.SECONDARY:
all: $(BUILD)/vitd

$(DEPS_STAMP):
	@mkdir -p $(BUILD)
	@scripts/deps.sh build
	@touch $@

$(BUILD)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libvitd.a: $(ENGINE_OBJ)
	ar rcs $@ $^

$(BUILD)/vitd: $(SERVER_OBJ) $(BUILD)/libvitd.a
	$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(BUILD)/libvitd.a $(LDLIBS)

# The server's modules without main(), so that unit tests can link the ones they test.
$(BUILD)/libvitdsrv.a: $(filter-out $(BUILD)/server/main.o,$(SERVER_OBJ))
	ar rcs $@ $^

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TESTLIB_OBJ) $(BUILD)/libvitdsrv.a $(BUILD)/libvitd.a
	$(CC) $(LDFLAGS) -o $@ $< $(TESTLIB_OBJ) $(BUILD)/libvitdsrv.a $(BUILD)/libvitd.a $(LDLIBS)

# The whole suite: C unit tests, PyTorch golden tests, over-the-wire tests. Ends with one
# summary line "N passed, M failed".
test: $(BUILD)/vitd $(TEST_BIN)
	@scripts/deps.sh test
	@BUILD=$(BUILD) PYTHON=$(PYTHON) tests/run.sh

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer (its own build folder).
asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" test

# vitd against ONNX Runtime, side by side (docs: tests/bench/README.md).
bench: $(BUILD)/vitd
	@scripts/deps.sh bench
	@BUILD=$(BUILD) PYTHON=$(PYTHON) tests/bench/run.sh

# The HTTP server under load (wrk): images/s, p50/p99 at concurrency 1, 4, 16, beside the
# engine alone at the same batch (tests/bench_server.py, docs/serving.md); then the same
# requests' latency with and without an admin prune job running (tests/bench_job_latency.py).
bench-server: $(BUILD)/vitd
	@scripts/deps.sh bench
	@BUILD=$(BUILD) $(PYTHON) tests/bench_server.py
	@BUILD=$(BUILD) $(PYTHON) tests/bench_job_latency.py

# Serve the default model (models/fashion-vit) on 127.0.0.1:8080 (docs/serving.md).
run: $(BUILD)/vitd
	$(BUILD)/vitd serve --host 127.0.0.1 --port 8080

clean:
	rm -rf build build-asan build-tsan

-include $(ENGINE_OBJ:.o=.d) $(SERVER_OBJ:.o=.d) $(TESTLIB_OBJ:.o=.d) $(TEST_BIN:=.d)
