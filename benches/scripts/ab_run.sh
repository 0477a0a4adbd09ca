#!/usr/bin/env bash
# One benchmark run: a fresh logbookd from BINDIR on 127.0.0.1:7199 over a new
# data directory under $BENCH_DIR (default /work/benchdir, which must be on
# the disk being measured), then loadgen's workloads; JSON lines go to
# $OUT_DIR/LABEL-<time>.json. Interleave two builds for an A/B:
#   for i in 1 2 3 4 5; do ab_run.sh bin-a A; ab_run.sh bin-b B; done
#   python3 ab_summary.py A B
# usage: ab_run.sh BINDIR LABEL [workloads, default w1,...,w6]
set -u
BIN=$1; LABEL=$2; W=${3:-w1,w2,w3,w4,w5,w6}
BENCH_DIR=${BENCH_DIR:-/work/benchdir}; OUT_DIR=${OUT_DIR:-.}
D=$BENCH_DIR/$LABEL-$$; rm -rf "$D"; mkdir -p "$D"
"$BIN"/logbookd --data-dir "$D"/data --listen 127.0.0.1:7199 >"$D"/log 2>&1 &
P=$!
for _ in $(seq 50); do grep -q "accepting" "$D"/log && break; sleep 0.2; done
"$BIN"/loadgen --server 127.0.0.1:7199 --workload "$W" --duration 5 --fsync-probe-dir "$D" --json-only > "$OUT_DIR/$LABEL-$(date +%s).json" 2>"$D"/lg.err
kill "$P"; wait "$P"; rm -rf "$D"
