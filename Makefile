# Thin wrapper around CMake; the real build is CMakeLists.txt.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)

.PHONY: all deps build run test test-release test-asan bench format clean

all: build

deps:
	@scripts/install-deps.sh test

build:
	@scripts/install-deps.sh build
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release -DISERGW_TESTS=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	$(BUILD)/bin/isergw $(ARGS)

test: deps
	@scripts/run-tests.sh

# Full isergw-vs-tgt run (about 10 min on 2 cores); rewrites the results in docs/benchmarks.md.
# Extra options: make bench BENCH_ARGS="--rounds 5" (scripts/run-bench.sh --help).
bench: build
	@scripts/install-deps.sh bench
	scripts/run-bench.sh --profile $(BENCH_ARGS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
