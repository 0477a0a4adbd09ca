#!/usr/bin/env bash
# usage: streams.sh BINDIR STREAMS LABEL [RUNS] : W2 with 64 clients, each
# append to one of STREAMS existing streams at random (loadgen --streams,
# which creates them first, once per data directory), RUNS times (default
# 3) against one logbookd over $BENCH_DIR/streams-LABEL; prints each run's
# JSON line, then the daemon's resident memory (now and peak).
set -u
BIN=$1; N=$2; LABEL=$3; RUNS=${4:-3}
D=${BENCH_DIR:-/work/benchdir}/streams-$LABEL; mkdir -p $D
$BIN/logbookd --data-dir $D/data --listen 127.0.0.1:7196 >$D/log 2>&1 &
P=$!
for i in $(seq 300); do grep -q "accepting" $D/log && break; sleep 0.2; done
for r in $(seq $RUNS); do
  $BIN/loadgen --server 127.0.0.1:7196 --workload w2 --clients 64 --streams $N \
    --duration 10 --json-only 2>>$D/lg.err
done
echo "$LABEL streams=$N rss_kib=$(grep VmRSS /proc/$P/status | awk '{print $2}') peak_rss_kib=$(grep VmHWM /proc/$P/status | awk '{print $2}')"
kill -TERM $P; wait $P
