#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan+UBSan) into build-fuzz/ and runs each one.
# Usage: scripts/run-fuzz.sh [SECONDS]   (per target, default 60)
# Seeds are copied at run time into build-fuzz/corpus/<target>: the torture corpus for the
# parser targets, fuzz/corpus/fuzz_proxy/ (call flows) for the proxy target
# (git-ignored; the inputs libFuzzer adds are kept for the next run). Exits non-zero on
# any crash, timeout, leak or sanitizer report; the reproducer is left in
# build-fuzz/artifacts/<target>/.
set -euo pipefail

secs=${1:-60}
case $secs in '' | *[!0-9]*) echo "run-fuzz: SECONDS must be a number" >&2; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-fuzz
testdata=${SIPEDGE_TESTDATA:-$root/../shared/testdata}
torture=$testdata/torture
[ -d "$torture" ] || { echo "run-fuzz: no torture corpus in $torture" >&2; exit 2; }

cmake -S "$root" -B "$build" -DSIPEDGE_FUZZ=ON -DCMAKE_C_COMPILER=clang \
      -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null

status=0
for t in fuzz_sipmsg fuzz_framer fuzz_proxy; do
    corpus=$build/corpus/$t
    art=$build/artifacts/$t
    mkdir -p "$corpus" "$art"
    if [ "$t" = fuzz_proxy ]; then
        # call flows in the harness's own input format (fuzz/gen_proxy_seeds.py)
        cp "$root"/fuzz/corpus/fuzz_proxy/* "$corpus/"
    else
        for f in "$torture"/*.dat "$torture"/rfc5118/* "$torture"/variants/*; do
            [ -f "$f" ] || continue
            rel=${f#"$torture"/}
            cp "$f" "$corpus/seed-${rel//\//-}"
        done
    fi
    log=$build/$t.log
    echo "run-fuzz: $t for ${secs}s (log $log)"
    rc=0
    extra=()
    [ "$t" = fuzz_proxy ] && extra=(-max_len=16384) # a call flow is several messages
    "$build/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${extra[@]}" -artifact_prefix="$art/" "$corpus" >"$log" 2>&1 || rc=$?
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec):' "$log" || true
    if [ "$rc" -ne 0 ] || grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|check failed' "$log"; then
        echo "run-fuzz: $t FAILED (exit $rc); artifacts:" >&2
        ls -1 "$art" >&2 || true
        grep -E -m 20 'ERROR|runtime error|check failed|SUMMARY|#[0-9] 0x' "$log" >&2 || true
        status=1
    fi
done
exit $status
