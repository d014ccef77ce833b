#!/usr/bin/env bash
# make bench-dist: data-parallel throughput of the MLP 784-256-256-10 and
# the small VGG, and the cost of one growth phase, on 1 rank x 1 thread,
# 2 ranks x 1 thread (mpirun; the gradient allreduce after the backward,
# then overlapped with it) and 1 rank x 2 threads, alternating. The
# 2-rank runs also print the parts of a step (compute, wait for the other
# rank, reduce, and the raw allreduce of the same bytes: the transport's
# ceiling). The machine's other load moves these numbers: run it on a
# quiet machine, repeat (BENCH_REPS), and compare medians.
set -eu
cd "$(dirname "$0")/../.."
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
reps=${BENCH_REPS:-2}
for c in mlp vgg grow; do
  for r in $(seq "$reps"); do
    OPENBLAS_NUM_THREADS=1 ./firefly tests/bench/bench_dist.lua "$c"
    mpirun -np 2 --oversubscribe ./firefly tests/bench/bench_dist.lua "$c"
    if [ "$c" != grow ]; then
      mpirun -np 2 --oversubscribe ./firefly tests/bench/bench_dist.lua "$c" "" overlap
    fi
    OPENBLAS_NUM_THREADS=2 ./firefly tests/bench/bench_dist.lua "$c"
  done
done
