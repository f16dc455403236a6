#!/usr/bin/env bash
# Server instructions per load and per commit, two zodbctl builds, counted by callgrind.
#
#   scripts/bench-stats-callgrind.sh BEFORE_BINARY AFTER_BINARY [ROUNDS]
#
# e.g. scripts/bench-stats-callgrind.sh ../wt-metrics-base/target/release/zodbctl \
#          target/release/zodbctl 2
#
# Instruction counts do not depend on the machine's load, unlike CPU time. For each build
# and round, every workload runs against a fresh server under
# `valgrind --tool=callgrind` (one network thread, a new Data.fs on /dev/shm), driven by
# `zodbctl bench` of the BEFORE build over one connection, and the server's total
# instruction count (start to SIGTERM exit) is read from the callgrind output:
#
#   base     -n 1 --phases add                      start, connect, 1 commit, stop
#   commits  -n 301 --phases add                    300 more 1-object commits
#   add      -n 2000 --objects-per-txn 100 --phases add            20 100-object commits
#   loads    -n 2000 --objects-per-txn 100 --phases add,cold-read  ... and 2000 loads
#
#   instructions per commit = (commits - base) / 300
#   instructions per load   = (loads - add) / 2000
#
# Loads use --pipeline 1 (one request per read: the most per-recv work, and the same
# number of reads every run). Not part of `cargo test`; about 25 s per round on 2 cores.
# KEEP=1 keeps the callgrind outputs (for callgrind_annotate) in /dev/shm.
set -euo pipefail

BEFORE=$(realpath "${1:?usage: $0 BEFORE_BINARY AFTER_BINARY [ROUNDS]}")
AFTER=$(realpath "${2:?usage: $0 BEFORE_BINARY AFTER_BINARY [ROUNDS]}")
ROUNDS=${3:-1}
CLIENT=$BEFORE
COMMITS=300
LOADS=2000
PORT=${PORT:-28470}

command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
WORK=$(mktemp -d /dev/shm/zodbctl-callgrind.XXXXXX)
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [ -n "${KEEP:-}" ]; then echo "callgrind outputs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# run_one BINARY NAME BENCH_ARGS... -> sets TOTAL, the server's total instruction count
run_one() {
    local bin=$1 name=$2
    shift 2
    local dir="$WORK/$name"
    rm -rf "$dir"
    mkdir -p "$dir"
    PORT=$((PORT + 1))
    (cd "$dir" && exec valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
        "$bin" serve -a "127.0.0.1:$PORT" -f "$dir/Data.fs" --threads 1 \
        >"$dir/server.log" 2>&1) &
    SERVER_PID=$!
    local i
    for i in $(seq 1 600); do  # at most 60 s for valgrind to start the server
        if grep -q "listening on" "$dir/server.log" 2>/dev/null; then break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server exited early:" >&2; cat "$dir/server.log" >&2; exit 1
        fi
        sleep 0.1
    done
    grep -q "listening on" "$dir/server.log" || { echo "server did not start" >&2; exit 1; }
    timeout 600 "$CLIENT" bench "127.0.0.1:$PORT" -c 1 --max-seconds 300 "$@" \
        >"$dir/bench.out" 2>&1 || { echo "bench failed:" >&2; cat "$dir/bench.out" >&2; exit 1; }
    kill -TERM "$SERVER_PID"
    for i in $(seq 1 600); do  # at most 60 s to exit and write the profile
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    wait "$SERVER_PID" || true
    SERVER_PID=
    TOTAL=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir/callgrind.out")
    [ -n "$TOTAL" ] || { echo "no total in $dir/callgrind.out" >&2; exit 1; }
}

measure() {  # measure LABEL BINARY -> sets PER_LOAD and PER_COMMIT
    local label=$1 bin=$2
    local base commits add loads
    run_one "$bin" "$label-base" -n 1 --phases add; base=$TOTAL
    run_one "$bin" "$label-commits" -n $((COMMITS + 1)) --phases add; commits=$TOTAL
    run_one "$bin" "$label-add" -n $LOADS --objects-per-txn 100 --phases add; add=$TOTAL
    run_one "$bin" "$label-loads" -n $LOADS --objects-per-txn 100 --pipeline 1 \
        --phases add,cold-read; loads=$TOTAL
    echo "  $label: base $base, commits $commits, add $add, loads $loads (server instructions)"
    PER_LOAD=$(awk -v a="$add" -v l="$loads" -v n=$LOADS 'BEGIN { printf "%.0f", (l - a) / n }')
    PER_COMMIT=$(awk -v b="$base" -v c="$commits" -v n=$COMMITS 'BEGIN { printf "%.0f", (c - b) / n }')
}

echo "before: $BEFORE"
echo "after:  $AFTER"
echo "client: $CLIENT bench -c 1; $LOADS cold loads, $COMMITS 1-object commits"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r:"
    measure before "$BEFORE"; bl=$PER_LOAD; bc=$PER_COMMIT
    measure after "$AFTER"; al=$PER_LOAD; ac=$PER_COMMIT
    awk -v bl="$bl" -v bc="$bc" -v al="$al" -v ac="$ac" 'BEGIN {
        printf "  %-22s %12s %12s %9s\n", "instructions per op", "before", "after", "diff"
        printf "  %-22s %12d %12d %+8.2f%%\n", "cold load", bl, al, (al - bl) * 100 / bl
        printf "  %-22s %12d %12d %+8.2f%%\n", "1-object commit", bc, ac, (ac - bc) * 100 / bc
    }'
done
