#!/usr/bin/env bash
# Builds and runs the core benchmark (ff_matmul vs cblas_sgemm, ff_binary vs
# plain C loops); prints a table and writes build/bench/core.json.
# `make bench` runs this after `make all`; run it from anywhere.
# OPENBLAS_CORETYPE is left as the environment sets it (see
# /work/shared/docs/benchmarking.md): the kernel it selects sets the ceiling.
set -eu
cd "$(dirname "$0")/../.."

BLAS_INC=/usr/include/x86_64-linux-gnu/openblas-pthread
out=build/bench
mkdir -p "$out"

# `make all` has built libffcore.a already; this keeps the script usable on
# its own (and is a no-op when the library is up to date).
make -s build/libffcore.a

cc -O2 -std=gnu11 -Wall -Wextra -Iengine/include -I"$BLAS_INC" \
   tests/bench/bench_core.c build/libffcore.a -lopenblas -lm -o "$out/bench_core"

echo "OPENBLAS_CORETYPE: ${OPENBLAS_CORETYPE:-unset}"
echo "OPENBLAS_NUM_THREADS: ${OPENBLAS_NUM_THREADS:-unset} (the bench sets 1 and 2 itself)"
"$out/bench_core" "$out/core.json"
