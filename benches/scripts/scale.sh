#!/usr/bin/env bash
# usage: scale.sh BINDIR EVENTS LABEL : build a store of EVENTS events with loadgen's W5 populate,
# stop cleanly, then restart 3 times: time to "accepting clients" and RSS after start-up.
set -u
BIN=$1; N=$2; LABEL=$3
D=${BENCH_DIR:-/work/benchdir}/scale-$LABEL; rm -rf $D; mkdir -p $D
$BIN/logbookd --data-dir $D/data --listen 127.0.0.1:7197 >$D/log 2>&1 &
P=$!
for i in $(seq 100); do grep -q "accepting" $D/log && break; sleep 0.2; done
$BIN/loadgen --server 127.0.0.1:7197 --workload w5 --duration 1 --log-events $N --json-only > /dev/null 2>$D/lg.err
kill -TERM $P; wait $P
du -sh $D/data/log $D/data/index | tr '\n' ' '; echo
for r in 1 2 3; do
  : > $D/log2
  S=$(date +%s.%N)
  $BIN/logbookd --data-dir $D/data --listen 127.0.0.1:7197 >$D/log2 2>&1 &
  P=$!
  until grep -q "accepting" $D/log2; do sleep 0.01; done
  E=$(date +%s.%N)
  RSS=$(grep VmRSS /proc/$P/status | awk '{print $2}')
  echo "$LABEL events=$N startup_s=$(echo "$E - $S" | bc) rss_kib=$RSS"
  kill -TERM $P; wait $P
done
