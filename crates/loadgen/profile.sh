#!/usr/bin/env bash
# Where the time of one delivery goes: CPU (user and system), system calls and context switches
# per delivery, for the machine's fan-out floor and for the demos' fan-out, in one run. The
# breakdown in the book's chapter "How many clients can one server hold?" comes from here.
#
# Usage: bash crates/loadgen/profile.sh [CLIENTS]     (default 10000; needs perf, gcc)
#
# Each subject runs twice under `perf stat`, with few rounds and with more; the difference between
# the two runs, divided by the extra deliveries, is what the rounds cost, without the connecting
# and the start-up that both runs share. For a demo the server is counted alone, and then the
# server and loadgen together; the floor (../shared/baselines/fanout_floor.c) is counted as its
# two processes together, its writer and its reader, which play the server and loadgen; so is
# loadgen's port of it, written by OS threads (as the C file is), by one tokio task per core, and
# by one tokio task per socket, which separates what a runtime and a task per client cost.
set -euo pipefail
cd "$(dirname "$0")/../.."

clients=${1:-10000}
few=5 many=25
extra=$(( (many - few) * clients ))
events=task-clock,context-switches,raw_syscalls:sys_enter
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ulimit -n "$(ulimit -Hn)"

command -v perf >/dev/null || { echo "perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
cargo build --release --quiet -p echo-ws -p chat-sse -p loadgen
cp ../shared/baselines/fanout_floor.c "$work/"
gcc -O2 -pthread -o "$work/fanout_floor" "$work/fanout_floor.c"

# counts FILE: "task_ms user_s sys_s switches syscalls" from one `perf stat` output.
counts() {
    awk '/task-clock/ { gsub(",", "", $1); task = $1 }
         /context-switches/ { gsub(",", "", $1); switches = $1 }
         /raw_syscalls:sys_enter/ { gsub(",", "", $1); calls = $1 }
         /seconds user/ { user = $1 }
         /seconds sys/ { sys = $1 }
         END { print task, user, sys, switches, calls }' "$1"
}

# per_delivery LABEL FEW_FILE MANY_FILE: one row, the difference per extra delivery.
per_delivery() {
    read -r t1 u1 s1 w1 c1 < <(counts "$2")
    read -r t2 u2 s2 w2 c2 < <(counts "$3")
    awk -v label="$1" -v n="$extra" -v t1="$t1" -v t2="$t2" -v u1="$u1" -v u2="$u2" \
        -v s1="$s1" -v s2="$s2" -v w1="$w1" -v w2="$w2" -v c1="$c1" -v c2="$c2" 'BEGIN {
        printf "| %s | %.2f | %.2f | %.2f | %.2f | %.3f |\n", label,
            (t2 - t1) * 1000 / n, (u2 - u1) * 1e6 / n, (s2 - s1) * 1e6 / n,
            (c2 - c1) / n, (w2 - w1) / n }'
}

floor() { # floor ROUNDS: the C floor, both processes, two writer threads
    perf stat -e "$events" -o "$work/floor-$1.txt" -- "$work/fanout_floor" "$clients" "$1" 100 2 >/dev/null
}

writer() { # writer KIND ROUNDS: loadgen's floor written by KIND (threads, tokio-shards, tokio-tasks),
    # its writer and its reader process together, two threads or workers
    perf stat -e "$events" -o "$work/floor-$1-$2.txt" -- "$bin/loadgen" floor --clients "$clients" \
        --rounds "$2" --size 100 --writers 2 --writer "$1" --json >/dev/null 2>&1
}

port=23400
demo() { # demo NAME ROUNDS SCENARIO URL [SERVER OPTIONS]: one server and one loadgen run; PORT
    # in URL is replaced by the server's port
    local name=$1 rounds=$2 scenario=$3 path=$4
    port=$((port + 1))
    perf stat -e "$events" -o "$work/$name-server-$rounds.txt" -- \
        "$bin/$name" --port "$port" "${@:5}" >/dev/null 2>&1 &
    local perf_pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    perf stat -e "$events" -o "$work/$name-loadgen-$rounds.txt" -- "$bin/loadgen" "$scenario" \
        --url "${path/PORT/$port}" --clients "$clients" --rounds "$rounds" --json >/dev/null
    # The server is perf's child; it shuts down on SIGINT, and then perf prints its counts.
    kill -INT "$(pgrep -P "$perf_pid")" || true
    wait "$perf_pid" || true
    sleep 2
}

echo "== the floor, $clients clients, $few and $many rounds"
floor "$few"
floor "$many"
for kind in threads tokio-shards tokio-tasks; do
    echo "== loadgen floor --writer $kind"
    writer "$kind" "$few"
    writer "$kind" "$many"
done
echo "== echo-ws"
demo echo-ws "$few" ws-fanout "ws://127.0.0.1:PORT/ws" --max-clients 20000
demo echo-ws "$many" ws-fanout "ws://127.0.0.1:PORT/ws" --max-clients 20000
echo "== chat-sse"
demo chat-sse "$few" chat-fanout "http://127.0.0.1:PORT"
demo chat-sse "$many" chat-fanout "http://127.0.0.1:PORT"

echo
echo "Per delivery, $clients clients ($(date -u +%F), $(nproc) cores; differences of $few and $many rounds):"
echo
echo "| what is counted | CPU µs | user µs | system µs | system calls | context switches |"
echo "| --- | --- | --- | --- | --- | --- |"
per_delivery "floor: writer and reader" "$work/floor-$few.txt" "$work/floor-$many.txt"
for kind in threads tokio-shards tokio-tasks; do
    per_delivery "loadgen floor --writer $kind: writer and reader" \
        "$work/floor-$kind-$few.txt" "$work/floor-$kind-$many.txt"
done
for name in echo-ws chat-sse; do
    per_delivery "$name: server" "$work/$name-server-$few.txt" "$work/$name-server-$many.txt"
    per_delivery "$name: loadgen" "$work/$name-loadgen-$few.txt" "$work/$name-loadgen-$many.txt"
done
