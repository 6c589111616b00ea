#!/usr/bin/env bash
# Where the time of one delivery goes: CPU (user and system), system calls and context switches
# per delivery, for the machine's fan-out floor and for the demos' fan-out, in one run. The
# breakdown in the book's chapter "How many clients can one server hold?" comes from here.
#
# Usage: bash crates/loadgen/profile.sh [CLIENTS] [ROUNDS]    (default 10000 and 50; needs perf,
#        jq and gcc; about five minutes)
#
# Connecting 10,000 clients costs more than 50 rounds to them, and varies more, so counts of a
# whole run say little about a round. Each `perf stat` here therefore starts with its counters
# off (-D -1) and loadgen turns them on and off through perf's control FIFOs where its measured
# window starts and ends (`--perf-control`, src/perf_control.rs): the counts hold the rounds
# alone, paced 0.2 s apart as the floor's are, with nothing of the connecting. loadgen reports
# the same window's user and system CPU from /proc (`window` in its JSON), which perf's software
# clock cannot split, and the deliveries it holds.
#
# For a demo the server is counted alone (a `perf stat -p` attached to it) and loadgen alone;
# loadgen's port of the floor is counted as its two processes together, the writer and the
# reader, which play the server and loadgen, written by OS threads (as the C file is), by one
# tokio task per core, and by one tokio task per socket: what a runtime and a task per client
# cost. The C floor (../shared/baselines/fanout_floor.c) cannot be told when its rounds start,
# so it runs twice, with 5 and 25 rounds, and the difference is divided by the extra deliveries.
set -euo pipefail
cd "$(dirname "$0")/../.."

clients=${1:-10000}
rounds=${2:-50}
pace=0.2
few=5 many=25
events=task-clock,context-switches,raw_syscalls:sys_enter
bin=target/release
# shellcheck source=crates/loadgen/perf-common.sh
source crates/loadgen/perf-common.sh
needs perf jq gcc
cargo build --release --quiet -p echo-ws -p chat-sse -p loadgen
cp ../shared/baselines/fanout_floor.c "$work/"
gcc -O2 -pthread -o "$work/fanout_floor" "$work/fanout_floor.c"
mkfifo "$work/server-ctl" "$work/server-ack" "$work/loadgen-ctl" "$work/loadgen-ack"

# counts FILE: "task_ms switches syscalls" from one `perf stat` output.
counts() {
    awk '/task-clock/ { gsub(",", "", $1); task = $1 }
         /context-switches/ { gsub(",", "", $1); switches = $1 }
         /raw_syscalls:sys_enter/ { gsub(",", "", $1); calls = $1 }
         END { print task, switches, calls }' "$1"
}

rows=()
# row LABEL PERF_FILE JSON_FILE PROCESS...: one table row, the window's counts per delivery;
# user and system time are the named processes' in loadgen's `window`.
row() {
    local label=$1 perf_file=$2 json=$3
    shift 3
    read -r task switches calls < <(counts "$perf_file")
    read -r deliveries user system < <(jq -r --args '.window as $w
        | [$ARGS.positional[] as $p | $w.cpu[$p]] as $cpu
        | "\($w.deliveries) \([$cpu[].user_s] | add) \([$cpu[].system_s] | add)"' "$@" <"$json")
    rows+=("$(awk -v label="$label" -v n="$deliveries" -v t="$task" -v u="$user" -v s="$system" \
        -v c="$calls" -v w="$switches" 'BEGIN {
        printf "| %s | %.2f | %.2f | %.2f | %.2f | %.3f |", label,
            t * 1000 / n, u * 1e6 / n, s * 1e6 / n, c / n, w / n }')")
}

# c_floor: the C floor, both processes, two writer threads, by difference of two runs.
c_floor() {
    local file
    for file in "$few" "$many"; do
        perf stat -e "$events" -o "$work/c-$file.txt" -- \
            "$work/fanout_floor" "$clients" "$file" 100 2 >/dev/null
    done
    local n=$(( (many - few) * clients ))
    read -r t1 w1 c1 < <(counts "$work/c-$few.txt")
    read -r t2 w2 c2 < <(counts "$work/c-$many.txt")
    read -r u1 s1 < <(awk '/seconds user/ { u = $1 } /seconds sys/ { s = $1 } END { print u, s }' "$work/c-$few.txt")
    read -r u2 s2 < <(awk '/seconds user/ { u = $1 } /seconds sys/ { s = $1 } END { print u, s }' "$work/c-$many.txt")
    rows+=("$(awk -v n="$n" -v t1="$t1" -v t2="$t2" -v u1="$u1" -v u2="$u2" -v s1="$s1" \
        -v s2="$s2" -v w1="$w1" -v w2="$w2" -v c1="$c1" -v c2="$c2" 'BEGIN {
        printf "| floor (C, by difference): writer and reader | %.2f | %.2f | %.2f | %.2f | %.3f |",
            (t2 - t1) * 1000 / n, (u2 - u1) * 1e6 / n, (s2 - s1) * 1e6 / n,
            (c2 - c1) / n, (w2 - w1) / n }')")
}

# writer KIND: loadgen's floor written by KIND, its writer and its reader process together.
writer() {
    perf stat -D -1 --control "fifo:$work/loadgen-ctl,$work/loadgen-ack" -e "$events" \
        -o "$work/floor-$1.txt" -- "$bin/loadgen" floor --clients "$clients" --rounds "$rounds" \
        --size 100 --writers 2 --writer "$1" --json \
        --perf-control "$work/loadgen-ctl,$work/loadgen-ack" >"$work/floor-$1.json" 2>/dev/null
    row "loadgen floor --writer $1: writer and reader" "$work/floor-$1.txt" \
        "$work/floor-$1.json" writer reader
    # The two processes apart, from /proc only: perf counted them together.
    apart+=("$(jq -r --arg kind "$1" '.window as $w | [$w.cpu.writer, $w.cpu.reader]
        | map((.user_s + .system_s) * 1e6 / $w.deliveries * 100 | round / 100)
        | "| --writer \($kind) | \(.[0]) | \(.[1]) |"' <"$work/floor-$1.json")")
}
apart=()

port=23400
# demo LABEL COMMAND SCENARIO URL [LOADGEN OPTIONS]: one server, one loadgen run; PORT in URL is
# replaced by the server's port.
demo() {
    local label=$1 command=$2 scenario=$3 url=$4 name
    name=$(tr -c 'a-z0-9\n' - <<<"$label")
    # shellcheck disable=SC2086 # the command's words are its options
    start_server $bin/$command
    perf stat -D -1 --control "fifo:$work/server-ctl,$work/server-ack" -e "$events" \
        -o "$work/$name-server.txt" -p "$server_pid" 2>/dev/null &
    local perf_pid=$!
    sleep 0.5 # perf attaches to each of the server's threads
    perf stat -D -1 --control "fifo:$work/loadgen-ctl,$work/loadgen-ack" -e "$events" \
        -o "$work/$name-loadgen.txt" -- "$bin/loadgen" "$scenario" --url "${url/PORT/$port}" \
        --clients "$clients" --rounds "$rounds" --pause "$pace" --server-pid "$server_pid" \
        --perf-control "$work/server-ctl,$work/server-ack" \
        --perf-control "$work/loadgen-ctl,$work/loadgen-ack" "${@:5}" --json \
        >"$work/$name.json" 2>/dev/null
    stop_server "$perf_pid"
    row "$label: server" "$work/$name-server.txt" "$work/$name.json" server
    row "$label: loadgen" "$work/$name-loadgen.txt" "$work/$name.json" loadgen
    sleep 2
}

echo "== the C floor, $clients clients, $few and $many rounds" >&2
c_floor
for kind in threads tokio-shards tokio-tasks; do
    echo "== loadgen floor --writer $kind, $rounds rounds" >&2
    writer "$kind"
done
echo "== echo-ws" >&2
demo "echo-ws" "echo-ws --max-clients 20000" ws-fanout "ws://127.0.0.1:PORT/ws"
# The same room without its heartbeat: 10,000 clients pinged every 15 s are ~1,300 Pings a
# second and as many Pongs, inside the rounds; this row is what they cost.
echo "== echo-ws, no Pings" >&2
demo "echo-ws, no Pings" "echo-ws --max-clients 20000 --ping-ms 3600000 --idle-timeout-ms 7200000" \
    ws-fanout "ws://127.0.0.1:PORT/ws"
echo "== chat-sse --direct-streams" >&2
demo "chat-sse --direct-streams" "chat-sse --direct-streams" chat-fanout "http://127.0.0.1:PORT"
echo "== chat-sse through hyper" >&2
demo "chat-sse through hyper" "chat-sse" chat-fanout "http://127.0.0.1:PORT"

echo
echo "Per delivery, $clients clients, $rounds rounds 0.2 s apart ($(date -u '+%F %H:%M') UTC, $(nproc) cores):"
echo
echo "| what is counted | CPU µs | user µs | system µs | system calls | context switches |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}"
echo
echo "The floor's writer and reader apart, CPU µs per delivery (user and system, from /proc):"
echo
echo "| loadgen floor | writer | reader |"
echo "| --- | --- | --- |"
printf '%s\n' "${apart[@]}"
