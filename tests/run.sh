#!/usr/bin/env bash
# Runs every test family (C unit tests, LuaUnit suites, spec examples) and
# ends with one line "N passed, N failed" summing them; exits 1 on failure.
# Each suite runs in its own process, so a crash fails that suite only.
# Usage: tests/run.sh [pattern]   (runs only suites whose file matches)
set -u
cd "$(dirname "$0")/.."
pattern=${1:-}
# Under SANITIZE=1 the tests ask for absurd sizes on purpose; ASan must
# return NULL for them (as malloc does) instead of aborting.
export ASAN_OPTIONS=${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1}
# The MPI suite (test_dist) starts jobs with mpirun, which refuses to run
# as root (as CI does) unless told; set here only, never in the product.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Containers often forbid process_vm_readv, the shared-memory transport's
# single-copy path, and Open MPI then prints "Read -1, expected ..." and
# loses large messages; the copy-in/copy-out path works everywhere.
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
passed=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_suite() {
  local name=$1; shift
  if [ -n "$pattern" ] && [[ "$name" != *"$pattern"* ]]; then return; fi
  echo "== $name"
  "$@" >"$log" 2>&1
  local rc=$?
  local line
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ $rc -ne 0 ] || [ -z "$line" ]; then
    cat "$log"
  else
    grep -vE '^(\.|Ran |OK$|$)' "$log" | grep -vE '^=+$' | head -n 40
  fi
  if [ -z "$line" ]; then
    echo "   $name: no result line (exit status $rc): counted as 1 failure"
    failed=$((failed + 1))
    return
  fi
  local p f
  p=$(echo "$line" | sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) passed, ([0-9]+) failed.*/\2/')
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "   $name: exit status $rc with no failure counted: counted as 1 failure"
    f=1
  fi
  passed=$((passed + p)) failed=$((failed + f))
}

run_suite c-tests ./build/test_c
for suite in tests/lua/test_*.lua; do
  run_suite "$(basename "$suite" .lua)" ./firefly "$suite"
done

# Exports opened by PyTorch and ONNX: Debian's python3 (python3-torch and
# python3-onnx come from make deps), not whatever python3 is first on PATH.
for suite in tests/python/test_*.py; do
  run_suite "$(basename "$suite" .py)_py" "${FIREFLY_PYTHON:-/usr/bin/python3}" "$suite"
done

# The fuzz targets over their corpus (the crash regressions) plus a few
# seconds of fuzzing each; fails, not skips, without clang/libFuzzer.
run_suite fuzz bash tests/fuzz/run.sh ci

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
