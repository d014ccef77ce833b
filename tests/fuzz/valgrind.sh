#!/usr/bin/env bash
# Runs every LuaUnit suite (tests/lua/test_*.lua) under valgrind memcheck,
# for `make valgrind`. A memcheck finding (invalid read or write, use of an
# uninitialised value, a definite or indirect leak) fails the suite with exit
# status 99; a test that fails on its own (exit 1) is reported apart, since
# some tests time things and valgrind is 20-50x slower.
# "Possibly lost" blocks are not errors: the interpreter ends with os.exit,
# which leaves the Lua state's strings (interior pointers) unfreed.
# Usage: tests/fuzz/valgrind.sh [pattern]
set -u
cd "$(dirname "$0")/../.."
pattern=${1:-}
export OPENBLAS_NUM_THREADS=1   # one thread: fewer false reports, faster
logdir=build/valgrind
mkdir -p "$logdir"
passed=0 failed=0 start=$(date +%s)
for suite in tests/lua/test_*.lua; do
  name=$(basename "$suite" .lua)
  if [ -n "$pattern" ] && [[ "$name" != *"$pattern"* ]]; then continue; fi
  t0=$(date +%s)
  valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    --show-leak-kinds=definite,indirect --num-callers=30 --track-origins=yes \
    --suppressions=tests/valgrind.supp --log-file="$logdir/$name.log" \
    ./firefly "$suite" >"$logdir/$name.out" 2>&1
  rc=$?
  dt=$(( $(date +%s) - t0 ))
  errs=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$logdir/$name.log" | tail -n 1 | awk '{print $3}')
  if [ $rc -eq 99 ] || [ "${errs:-0}" != 0 ]; then
    echo "FAIL $name (${dt}s): ${errs:-?} memcheck errors, see $logdir/$name.log"
    failed=$((failed + 1))
  elif [ $rc -ne 0 ]; then
    echo "FAIL $name (${dt}s): memcheck clean, but the suite failed (exit $rc; slow under valgrind?):"
    grep -E 'passed, [0-9]+ failed|FAIL|Error' "$logdir/$name.out" | head -n 5
    failed=$((failed + 1))
  else
    echo "ok   $name (${dt}s)"
    passed=$((passed + 1))
  fi
done
echo "valgrind: total $(( $(date +%s) - start ))s"
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
