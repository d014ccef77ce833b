#!/usr/bin/env bash
# Builds the libFuzzer targets (make fuzz-build) and runs each one: first
# over its corpus (tests/fuzz/corpus/<target>/: the seeds and every input
# that once crashed, as regression tests), then fuzzing for a bounded time.
# Prints "fuzz: N passed, N failed" (one count per target); exits 1 on any
# failure, and also when clang or the libFuzzer runtime is missing: the suite
# must not pass by skipping (make deps installs clang-14 and
# libclang-rt-14-dev).
#
# Usage: tests/fuzz/run.sh [ci|long] [target...]
#   ci    (default) FUZZ_SECONDS=5 per target; what tests/run.sh runs
#   long  FUZZ_SECONDS=60 per target; what `make fuzz` runs
# New inputs found while fuzzing go to build/fuzz/found/<target>/ (not the
# checked-in corpus); a crash leaves build/fuzz/crash-<target>-*, to be
# copied into the corpus with the fix.
set -u
cd "$(dirname "$0")/../.."
mode=${1:-ci}
[ $# -gt 0 ] && shift
case $mode in
  ci) seconds=${FUZZ_SECONDS:-5} ;;
  long) seconds=${FUZZ_SECONDS:-60} ;;
  *) echo "usage: tests/fuzz/run.sh [ci|long] [target...]" >&2; exit 2 ;;
esac
FUZZ_CC=${FUZZ_CC:-clang-14}

fail_setup() {
  echo "fuzz: $1" >&2
  echo "fuzz: install them with 'make deps' (clang-14 libclang-rt-14-dev)" >&2
  echo "fuzz: 0 passed, 1 failed"
  exit 1
}
command -v "$FUZZ_CC" >/dev/null || fail_setup "$FUZZ_CC not found"
rt=$("$FUZZ_CC" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null)
[ -f "$rt" ] || rt=$("$FUZZ_CC" --print-runtime-dir 2>/dev/null)/libclang_rt.fuzzer-x86_64.a
[ -f "$rt" ] || fail_setup "the libFuzzer runtime (libclang_rt.fuzzer) is missing"

echo "fuzz: building (build/fuzz)"
if ! make -s -j2 fuzz-build FUZZ_CC="$FUZZ_CC" >build/fuzz-build.log 2>&1; then
  grep -E 'error|Error' build/fuzz-build.log | head -n 20
  echo "fuzz: the build failed (build/fuzz-build.log)"
  echo "fuzz: 0 passed, 1 failed"
  exit 1
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi

# Sizes the engine refuses are part of the test: the allocator must return
# NULL (as malloc does) for them instead of aborting; and a genuine request
# over 512 MiB fails cleanly rather than filling a shared machine.
export ASAN_OPTIONS=allocator_may_return_null=1:max_allocation_size_mb=512:detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OPENBLAS_NUM_THREADS=1

# Per-target input size limits: CIFAR records are 3073-3074 bytes.
max_len() { case $1 in fuzz_cifar) echo 8192 ;; *) echo 1024 ;; esac; }

passed=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  bin=build/fuzz/bin/$t corpus=tests/fuzz/corpus/$t found=build/fuzz/found/$t
  mkdir -p "$found" "$corpus"
  ok=1
  # 1. Replay: every file of the corpus, each once.
  files=("$corpus"/*)
  if [ -e "${files[0]}" ]; then
    if ! "$bin" -rss_limit_mb=2048 -timeout=20 "${files[@]}" >"$log" 2>&1; then
      ok=0
      echo "   $t: replaying the corpus failed:"
      grep -E 'ERROR|SUMMARY|Running:|fuzz:|runtime error' "$log" | head -n 20
    fi
  fi
  # 2. Fuzz for a bounded time, starting from the corpus.
  if [ $ok = 1 ] && [ "$seconds" -gt 0 ]; then
    if "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -rss_limit_mb=2048 \
         -malloc_limit_mb=2048 -timeout=20 -print_final_stats=1 \
         -artifact_prefix="build/fuzz/crash-$t-" "$found" "$corpus" >"$log" 2>&1; then
      runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
      cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1)
      echo "   $t: ${runs:-?} inputs in ${seconds}s, ${cov:-cov: ?}"
    else
      ok=0
      echo "   $t: fuzzing found a failure:"
      grep -E 'ERROR|SUMMARY|Test unit written|fuzz:|runtime error|#[0-9]+ 0x' "$log" | head -n 30
    fi
  fi
  if [ $ok = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
