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

bench:
	@scripts/install-deps.sh bench
	@scripts/run-bench.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
