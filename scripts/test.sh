#!/usr/bin/env bash
# Installs what is missing, builds sipedge twice (release, and ASan+UBSan),
# and runs every suite: Criterion unit tests, bounded libFuzzer runs, and the
# wire-level scenario tests against real processes on loopback.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

scripts/install-deps.sh || { echo "install-deps failed" >&2; exit 1; }

export SIPEDGE_TESTDATA=${SIPEDGE_TESTDATA:-$(cd "$ROOT/../shared/testdata" 2>/dev/null && pwd)}
if [ -z "$SIPEDGE_TESTDATA" ] || [ ! -d "$SIPEDGE_TESTDATA/torture" ]; then
  echo "test: ../shared/testdata/torture not found beside the repository" >&2
  exit 1
fi
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-45}

passed=0
failed=0
failures=()
step() { # step NAME COMMAND...
  local name=$1 t0=$SECONDS; shift
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1)); echo "=== $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== $name: FAILED ($((SECONDS - t0)) s)"
  fi
}

build() { # build DIR cmake-args...
  local dir=$1; shift
  cmake -S . -B "$dir" "$@" >/dev/null && cmake --build "$dir" -j"$JOBS" 2>&1 | grep -vE '^\[|^-- ' ; return "${PIPESTATUS[0]}"
}

# the include graph runs downwards only, no file or function grows past its limit
step "structure" /usr/bin/python3 scripts/check-structure.py
step "build release" build build -DCMAKE_BUILD_TYPE=Release || true
step "build asan+ubsan" build build-asan -DCMAKE_BUILD_TYPE=Debug -DSIPEDGE_SANITIZE=ON || true

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

step "unit tests (release)" ctest --test-dir build --output-on-failure
step "unit tests (asan+ubsan)" ctest --test-dir build-asan --output-on-failure
step "fuzz (asan+ubsan, ${FUZZ_SECONDS}s per target)" scripts/run-fuzz.sh "$FUZZ_SECONDS"
# Every scenario runs against the sanitizer build (wire-level input must
# never produce a report); the release build gets the call flows.
step "scenarios (asan+ubsan build)" env SIPEDGE_BIN="$ROOT/build-asan/sipedge" tests/scenarios/run_all.sh
step "calls (release build)" env SIPEDGE_BIN="$ROOT/build/sipedge" \
  /usr/bin/python3 tests/scenarios/run_sipp_calls.py --small --legs udp-udp,tcp-tcp,tcp-udp

if [ "$failed" -ne 0 ]; then
  echo "failed steps: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
