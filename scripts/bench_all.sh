#!/usr/bin/env bash
# Every figure of docs/benchmarks.md, three runs each, server on CPU 0, load on CPU 1.
# Usage: scripts/bench_all.sh OUT_DIR   (then: uv run python scripts/bench_table.py OUT_DIR)
#
# Environment:
#   ONLY="writes writes4 reads100k"  run only these rows (names below)
#   SKIP_1M=1                        leave out the 1M-user reads (the load takes long)
#   WORKERS=N                        `podium bench --workers N` on every run
#   SUBSCRIBER=websockets            the earlier pure-Python subscriber (default picows)
#   SERVER_PYTHON=PATH               the interpreter of the code under test, e.g. another
#                                    checkout's .venv/bin/python: the same bench measures
#                                    before and after
set -euo pipefail
out=${1:?usage: scripts/bench_all.sh OUT_DIR}
mkdir -p "$out"
extra=(--server-cpu 0 --client-cpu 1)
[[ -n "${WORKERS:-}" ]] && extra+=(--workers "$WORKERS")
[[ -n "${SUBSCRIBER:-}" ]] && extra+=(--subscriber "$SUBSCRIBER")
[[ -n "${SERVER_PYTHON:-}" ]] && extra+=(--server-python "$SERVER_PYTHON")
only=${ONLY:-writes writes4 fanout1k lat1k fan5k fan10k memory cluster reads100k reads1m}
[[ -n "${SKIP_1M:-}" ]] && only=${only//reads1m/}
want() { [[ " $only " == *" $1 "* ]]; }
run() {  # name, args...
    local name=$1; shift
    want "$name" || return 0
    for i in 1 2 3; do
        echo "== $name run $i" >&2
        uv run podium bench "$@" "${extra[@]}" --json "$out/$name-$i.json" > "$out/$name-$i.txt" 2>&1 \
            || echo "!! $name run $i failed (see $out/$name-$i.txt)" >&2
    done
}
once() {  # name, args...: one load of a board (the long part), measured three times
    local name=$1; shift
    want "$name" || return 0
    echo "== $name (one load, 3 measurements)" >&2
    uv run podium bench "$@" --repeat 3 "${extra[@]}" --json "$out/$name-1.json" \
        > "$out/$name-1.txt" 2>&1 || echo "!! $name failed (see $out/$name-1.txt)" >&2
}
run writes    writes --duration 10 --writers 64 --http-writers 32
run writes4   writes --duration 10 --writers 4 --transport ws
run fanout1k  fanout --duration 10 --subscribers 1000 --procs 4 --rate 0 --fanout-writers 32
run lat1k     fanout --duration 10 --subscribers 1000 --procs 4 --rate 25 --fanout-writers 4 --accounts 50 --floor
run fan5k     fanout --duration 10 --subscribers 5000 --procs 4 --rate 25 --fanout-writers 4 --accounts 250
run fan10k    fanout --duration 10 --subscribers 10000 --procs 4 --rate 25 --fanout-writers 4 --accounts 500
run memory    memory --subscribers 5000 --procs 4 --accounts 250
run cluster   cluster --duration 10 --subscribers 1000 --procs 4 --rate 25 --fanout-writers 4 --accounts 50
once reads100k reads --duration 10 --board-size 100000 --readers 32
once reads1m   reads --duration 10 --board-size 1000000 --readers 32
