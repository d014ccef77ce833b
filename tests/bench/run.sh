#!/usr/bin/env bash
# Builds and runs the core benchmark (ff_matmul vs cblas_sgemm, ff_binary vs
# plain C loops; build/bench/core.json), then the nn-op comparison against
# PyTorch CPU (bench_ops.py; build/bench/ops.json) when Debian's
# python3-torch is installed. BENCH_QUICK=1 makes the second a smoke run.
# `make bench` runs this after `make all`; run it from anywhere.
# OPENBLAS_CORETYPE is left as the environment sets it (see
# the team's benchmarking notes, shared/docs/benchmarking.md): the kernel it selects sets the ceiling.
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

# One Firefly growth phase against one epoch of the same network.
echo
./firefly tests/bench/bench_grow.lua

# The PyTorch comparison needs Debian's python3 with python3-torch (`make
# bench` installs it); the engine itself never depends on torch. The two
# benches run one after the other, never side by side: each has busy threads.
echo
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  [ -x ./firefly ] || make -s firefly
  /usr/bin/python3 tests/bench/bench_ops.py --json "$out/ops.json"
  # one growth step against the same step written in PyTorch
  echo
  /usr/bin/python3 tests/bench/bench_grow_peer.py --json "$out/grow_peer.json"
else
  echo "bench_ops, bench_grow_peer: skipped (no torch for /usr/bin/python3; apt-get install python3-torch)"
fi
