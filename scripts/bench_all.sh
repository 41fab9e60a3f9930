#!/usr/bin/env bash
# Every figure of docs/benchmarks.md, three runs each, server on CPU 0, load on CPU 1.
# Usage: scripts/bench_all.sh OUT_DIR   (then: uv run python scripts/bench_table.py OUT_DIR)
set -euo pipefail
out=${1:?usage: scripts/bench_all.sh OUT_DIR}
mkdir -p "$out"
pin=(--server-cpu 0 --client-cpu 1)
only=${ONLY:-writes fanout1k lat1k fan5k fan10k memory cluster reads}
want() { [[ " $only " == *" $1 "* ]]; }
run() {  # name, args...
    local name=$1; shift
    want "$name" || return 0
    for i in 1 2 3; do
        echo "== $name run $i" >&2
        uv run podium bench "$@" "${pin[@]}" --json "$out/$name-$i.json" > "$out/$name-$i.txt" 2>&1 \
            || echo "!! $name run $i failed (see $out/$name-$i.txt)" >&2
    done
}
run writes   writes --duration 10 --writers 64 --http-writers 32
run fanout1k fanout --duration 10 --subscribers 1000 --procs 4 --rate 0 --fanout-writers 32
run lat1k    fanout --duration 10 --subscribers 1000 --procs 4 --rate 25 --fanout-writers 4 --accounts 50 --floor
run fan5k    fanout --duration 10 --subscribers 5000 --procs 4 --rate 25 --fanout-writers 4 --accounts 250
run fan10k   fanout --duration 10 --subscribers 10000 --procs 4 --rate 25 --fanout-writers 4 --accounts 500
run memory   memory --subscribers 5000 --procs 4 --accounts 250
run cluster  cluster --duration 10 --subscribers 1000 --procs 4 --rate 25 --fanout-writers 4 --accounts 50
# One load of the board (the long part), measured three times.
if want reads; then
echo "== reads (one load, 3 measurements)" >&2
uv run podium bench reads --duration 10 --board-size "${BOARD_SIZE:-1000000}" --readers 32 \
    --repeat 3 "${pin[@]}" --json "$out/reads-1.json" > "$out/reads-1.txt" 2>&1 \
    || echo "!! reads failed (see $out/reads-1.txt)" >&2
fi
