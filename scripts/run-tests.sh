#!/bin/bash
# Runs every test: a Release build (unit + integration + conformance), then an ASan/UBSan
# build with clang (unit + integration + bounded libFuzzer runs).
# ISERGW_LONG=1 runs the long variants (longer fuzzing, bigger random runs).
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc)
export CTEST_OUTPUT_ON_FAILURE=1

echo "== Release build"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DISERGW_TESTS=ON >/dev/null
cmake --build build -j "$JOBS"
echo "== Release tests"
ctest --test-dir build --timeout 900 -j 1

echo "== ASan/UBSan build (clang)"
cmake -S . -B build-asan -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	-DISERGW_SANITIZE=ON -DISERGW_FUZZ=ON -DISERGW_TESTS=ON >/dev/null
cmake --build build-asan -j "$JOBS"
echo "== ASan/UBSan tests"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	ctest --test-dir build-asan --timeout 900 -j 1
