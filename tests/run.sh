#!/bin/sh
# Runs every test of the suite and ends with one line "N passed, M failed".
#   build/tests/test_*        C test programs (exit 0 = pass)
#   tests/test_*.py           Python tests against PyTorch references (exit 0 = pass)
#   tests/test_*.sh           shell tests (over-the-wire, command line)
# A test's output is shown only when it fails (or with VERBOSE=1). TESTS=pattern filters.
set -u
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export BUILD PYTHON
VITD="$(pwd)/$BUILD/vitd"; export VITD
pass=0; fail=0; failed=""
log=$(mktemp); trap 'rm -f "$log"' EXIT

run_one() { # name, command...
    name=$1; shift
    case "$name" in *${TESTS:-}*) ;; *) return ;; esac
    start=$(date +%s)
    if "$@" >"$log" 2>&1; then
        pass=$((pass + 1)); st=PASS
    else
        fail=$((fail + 1)); st=FAIL; failed="$failed $name"
    fi
    printf '%-4s %-32s %3ss\n' "$st" "$name" "$(( $(date +%s) - start ))"
    if [ "$st" = FAIL ] || [ -n "${VERBOSE:-}" ]; then sed 's/^/    | /' "$log" | tail -n 60; fi
}

for t in "$BUILD"/tests/test_*; do
    case "$t" in *.o|*.d) continue ;; esac
    [ -x "$t" ] && run_one "$(basename "$t")" "$t"
done
for t in tests/test_*.py; do [ -f "$t" ] && run_one "$(basename "$t")" "$PYTHON" "$t"; done
for t in tests/test_*.sh; do [ -f "$t" ] && run_one "$(basename "$t")" sh "$t"; done

[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
