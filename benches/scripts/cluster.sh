#!/usr/bin/env bash
# A three-node cluster of logbookd from BINDIR on loopback (client ports
# 7301-7303, replication ports 7311-7313), each over its own data directory
# under $BENCH_DIR (default /work/benchdir: on the disk being measured; the
# three nodes share it, as they would not in production), and what
# BENCHMARKS.md reports of it:
#   loads     W1, W2 (64 clients) and W3 against the leader, JSON lines in
#             $OUT_DIR/cluster-<time>.json
#   failover  ROUNDS times: SIGKILL the leader, time until the CLI (given
#             the three addresses) has an append acknowledged; the node is
#             restarted between rounds
#   catchup   a follower is stopped, W3 appends for 10 s, the follower is
#             started again: time until it holds the leader's events, and
#             the log bytes it took in per second
#   join      W3 appends for 10 s, then a fourth node is started with
#             --join and added (`logbook cluster add`): time until it holds
#             the leader's events, and the log bytes per second
#   restore   W3 appends for 10 s, `logbook backup` of a follower (timed),
#             the cluster stopped; a new cluster seeded from the backup
#             (`--seed`: time until it serves) and a node started with
#             --join and added: time until it holds every event
# LOAD_SECS: seconds of W3 before catchup, join and restore (default 10).
# NODE_ARGS: more arguments for every node (e.g. "--snapshot-every 0" to
# catch up by replaying the Raft log instead of from a snapshot).
# usage: cluster.sh BINDIR loads|failover|catchup|join|restore [ROUNDS]
set -u
BIN=$1; WHAT=$2; ROUNDS=${3:-5}
BENCH_DIR=${BENCH_DIR:-/work/benchdir}; OUT_DIR=${OUT_DIR:-.}
D=$BENCH_DIR/cluster-$$; rm -rf "$D"; mkdir -p "$D"
MEMBERS="1=127.0.0.1:7311/127.0.0.1:7301,2=127.0.0.1:7312/127.0.0.1:7302,3=127.0.0.1:7313/127.0.0.1:7303"
SERVERS=127.0.0.1:7301,127.0.0.1:7302,127.0.0.1:7303
declare -A PID

start() {
    # shellcheck disable=SC2086 # NODE_ARGS is a list of arguments
    "$BIN"/logbookd --data-dir "$D/n$1" --listen "127.0.0.1:730$1" --node-id "$1" \
        --cluster "$MEMBERS" ${NODE_ARGS:-} "${@:2}" >>"$D/n$1.log" 2>&1 &
    PID[$1]=$!
    for _ in $(seq 300); do grep -q "accepting" "$D/n$1.log" && return; sleep 0.1; done
    echo "node $1 did not start" >&2; exit 1
}

stats() { "$BIN"/logbook --server "127.0.0.1:730$1" stats --json 2>/dev/null; }

# The node that leads in the highest term any node knows (a deposed
# leader may not know it yet).
leader() {
    for _ in $(seq 200); do
        l=$(for i in 1 2 3; do stats "$i" | python3 -c "
import json,sys
try: c=json.load(sys.stdin)['cluster']
except Exception: sys.exit()
print(c['term'], c['role'], $i)"; done | sort -n | tail -1 | awk '$2=="leader"{print $3}')
        if [ -n "$l" ]; then echo "$l"; return; fi
        sleep 0.05
    done
    echo "no leader" >&2; exit 1
}

events() {
    stats "$1" | python3 -c '
import json,sys
try: print(json.load(sys.stdin)["events"])
except Exception: print(0)'
}

trap 'kill -9 ${PID[@]} 2>/dev/null; wait 2>/dev/null; rm -rf "$D"' EXIT
for i in 1 2 3; do start "$i"; done
"$BIN"/logbook --server "$SERVERS" append warmup --type Started --data '{}' >/dev/null
L=$(leader)

case $WHAT in
loads)
    "$BIN"/loadgen --server "127.0.0.1:730$L" --workload w1,w2,w3 --duration 5 \
        --fsync-probe-dir "$D" --json-only > "$OUT_DIR/cluster-$(date +%s).json" 2>"$D/lg.err" \
        || cat "$D/lg.err" >&2
    ;;
failover)
    for r in $(seq "$ROUNDS"); do
        L=$(leader)
        t0=$(date +%s.%N)
        kill -9 "${PID[$L]}"
        "$BIN"/logbook --server "$SERVERS" append failover --type Round --data "{\"round\":$r}" >/dev/null
        t1=$(date +%s.%N)
        echo "round $r: leader $L killed, append acknowledged after $(python3 -c "print(round(($t1-$t0)*1000))") ms"
        start "$L"
        # Caught up before the next round (so that any node may win).
        want=$(events "$(leader)")
        for _ in $(seq 200); do [ "$(events "$L")" -ge "$want" ] && break; sleep 0.05; done
    done
    ;;
catchup)
    F=$(( L % 3 + 1 ))
    kill "${PID[$F]}"; wait "${PID[$F]}" 2>/dev/null
    "$BIN"/loadgen --server "127.0.0.1:730$L" --workload w3 --duration "${LOAD_SECS:-10}" --warmup 0 --json-only >/dev/null 2>"$D/lg.err"
    want=$(events "$L")
    bytes=$(stats "$L" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_bytes"])')
    have=$(du -sb "$D/n$F" | cut -f1)
    t0=$(date +%s.%N)
    start "$F"
    while [ "$(events "$F")" -lt "$want" ]; do sleep 0.02; done
    t1=$(date +%s.%N)
    python3 -c "
s=$t1-$t0; b=$bytes
print(f'follower {$F}: {$want} events ({b/2**20:.0f} MiB of log on the leader) caught up in {s:.2f} s (start-up included): {b/2**20/s:.1f} MiB/s')"
    ;;
join)
    "$BIN"/loadgen --server "127.0.0.1:730$L" --workload w3 --duration "${LOAD_SECS:-10}" --warmup 0 --json-only >/dev/null 2>"$D/lg.err"
    want=$(events "$L")
    bytes=$(stats "$L" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_bytes"])')
    MEMBERS="$MEMBERS,4=127.0.0.1:7314/127.0.0.1:7304"
    t0=$(date +%s.%N)
    start 4 --join
    "$BIN"/logbook --server "127.0.0.1:730$L" cluster add 4 127.0.0.1:7314 127.0.0.1:7304 >/dev/null 2>"$D/add.err" \
        || cat "$D/add.err" >&2
    while [ "$(events 4)" -lt "$want" ]; do sleep 0.02; done
    t1=$(date +%s.%N)
    how=$(grep -q "installed a snapshot's events" "$D/n4.log" && echo "from a snapshot" || echo "from the Raft log")
    echo "leader's data directory: $(du -sm "$D/n$L" | cut -f1) MiB, of which its Raft log $(du -sm "$D/n$L/raft/log" | cut -f1) MiB"
    python3 -c "
s=$t1-$t0; b=$bytes
print(f'node 4 ($how): {$want} events ({b/2**20:.0f} MiB of log on the leader) caught up in {s:.2f} s (start-up and the add included): {b/2**20/s:.1f} MiB/s')"
    ;;
restore)
    "$BIN"/loadgen --server "127.0.0.1:730$L" --workload w3 --duration "${LOAD_SECS:-10}" --warmup 0 --json-only >/dev/null 2>"$D/lg.err"
    want=$(events "$L")
    bytes=$(stats "$L" | python3 -c 'import json,sys; print(json.load(sys.stdin)["log_bytes"])')
    F=$(( L % 3 + 1 ))
    t0=$(date +%s.%N)
    "$BIN"/logbook --server "127.0.0.1:730$F" backup --to "$D/n5" >/dev/null 2>"$D/backup.err" \
        || cat "$D/backup.err" >&2
    t1=$(date +%s.%N)
    for i in 1 2 3; do kill "${PID[$i]}"; wait "${PID[$i]}" 2>/dev/null; done
    copied=$(du -sb "$D/n5" | cut -f1)
    MEMBERS="5=127.0.0.1:7315/127.0.0.1:7305"
    t2=$(date +%s.%N)
    start 5 --seed
    t3=$(date +%s.%N)
    MEMBERS="$MEMBERS,6=127.0.0.1:7316/127.0.0.1:7306"
    start 6 --join
    "$BIN"/logbook --server 127.0.0.1:7305 cluster add 6 127.0.0.1:7316 127.0.0.1:7306 >/dev/null 2>"$D/add.err" \
        || cat "$D/add.err" >&2
    while [ "$(events 6)" -lt "$want" ]; do sleep 0.02; done
    t4=$(date +%s.%N)
    python3 -c "
b=$bytes; c=$copied
print(f'backup of follower {$F}: {c/2**20:.0f} MiB in {$t1-$t0:.2f} s: {c/2**20/($t1-$t0):.1f} MiB/s')
print(f'seed of {$want} events ({b/2**20:.0f} MiB of log): serving after {$t3-$t2:.2f} s (start-up, the check for holes, a snapshot and the purge)')
print(f'node 6 joined and caught up in {$t4-$t3:.2f} s (start-up and the add included): {b/2**20/($t4-$t3):.1f} MiB/s')"
    ;;
esac
