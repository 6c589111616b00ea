#!/usr/bin/env bash
# What echo-ws's heartbeat costs, and where: `perf record` of the server's measured rounds, with
# its Pings and without them, alternating, each sample put in one of four places by its call
# chain. The bullet on the heartbeat in the book's chapter "How many clients can one server
# hold?" comes from here.
#
# Usage: bash crates/loadgen/ping-cost.sh [PAIRS] [CLIENTS] [ROUNDS]    (default 2, 10000 and 50;
#        needs perf and jq; about 50 s a pair, after a build of a few minutes)
#
# The total CPU of two runs moves by a tenth between runs with the same settings, more than the
# Pings cost, so a difference of totals (profile.sh's "echo-ws, no Pings" row) cannot say what
# they cost. A sample's call chain can: a sample in a session's task, or in a worker thread
# parking and waking, is the heartbeat's; the shard writers' samples are the rounds'. Call chains
# through user code need frame pointers, so echo-ws and loadgen are built with them, into their
# own target directory. As in profile.sh, loadgen turns perf on and off where its measured window
# starts and ends (`--perf-control`), and reports that window's CPU (from /proc), its deliveries,
# and the Pings its clients answered in it.
set -euo pipefail
cd "$(dirname "$0")/../.."

pairs=${1:-2}
clients=${2:-10000}
rounds=${3:-50}
target=target/frame-pointers
# shellcheck source=crates/loadgen/perf-common.sh
source crates/loadgen/perf-common.sh
needs perf jq
RUSTFLAGS="-C force-frame-pointers=yes" cargo build --release --quiet -p echo-ws -p loadgen \
    --target-dir "$target"
bin=$target/release
mkfifo "$work/ctl" "$work/ack"

# places FILE: "writer waking sessions rest total", the samples of one `perf script` output by
# where their call chain passes. A chain is read from its leaf up; the first match decides.
places() {
    awk 'function flush() {
            if (chain == "") return
            if (chain ~ /write_shard/) writer++
            else if (chain ~ /park_internal|park_condvar|park_timeout|Driver::turn/) waking++
            else if (chain ~ /take_over|converse/) sessions++
            else rest++
            chain = ""
        }
        /^[^ \t]/ { flush(); next }
        /^[ \t]*$/ { flush(); next }
        { chain = chain " " $2 }
        END { flush(); print writer + 0, waking + 0, sessions + 0, rest + 0,
              writer + waking + sessions + rest }' "$1"
}

port=23600
rows=()
# run LABEL [ECHO-WS OPTIONS]: one server, one recorded loadgen run; appends a row of
# "label pings deliveries cpu_s writer waking sessions rest total" to rows.
run() {
    local label=$1
    shift
    start_server "$bin/echo-ws" --max-clients 20000 "$@"
    perf record -F 4000 -g -D -1 --control "fifo:$work/ctl,$work/ack" -p "$server_pid" \
        -o "$work/$label.data" >/dev/null 2>&1 &
    local perf_pid=$!
    sleep 0.5 # perf attaches to each of the server's threads
    "$bin/loadgen" ws-fanout --url "ws://127.0.0.1:$port/ws" --clients "$clients" \
        --rounds "$rounds" --pause 0.2 --server-pid "$server_pid" \
        --perf-control "$work/ctl,$work/ack" --json >"$work/$label.json" 2>/dev/null
    stop_server "$perf_pid"
    perf script -i "$work/$label.data" >"$work/$label.txt" 2>/dev/null
    local window
    window=$(jq -r '.window as $w
        | "\(.pings) \($w.deliveries) \($w.cpu.server.user_s + $w.cpu.server.system_s)"' \
        <"$work/$label.json")
    rows+=("$label $window $(places "$work/$label.txt")")
    sleep 2
}

for pair in $(seq "$pairs"); do
    echo "== pair $pair of $pairs: with Pings, then without" >&2
    run "pings-$pair"
    run "none-$pair" --ping-ms 3600000 --idle-timeout-ms 7200000
done

echo
echo "echo-ws's server, $clients clients, $rounds rounds 0.2 s apart ($(date -u '+%F %H:%M') UTC," \
    "$(nproc) cores), CPU µs per delivery by where its samples are:"
echo
echo "| run | Pings | all | shard writers | workers parking and waking | sessions | the rest |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${rows[@]}" | awk '{
    label = $1; pings = $2; n = $3; cpu = $4; total = $9
    us = cpu * 1e6 / n
    printf "| %s | %d | %.2f | %.2f | %.2f | %.2f | %.2f |\n", label, pings, us,
        us * $5 / total, us * $6 / total, us * $7 / total, us * $8 / total
    # The heartbeat'"'"'s own places, in µs of CPU per Ping, with Pings and without.
    if (label ~ /^pings/) { on += (cpu * ($6 + $7) / total); count += pings }
    else { off += (cpu * ($6 + $7) / total) }
    runs[label ~ /^pings/]++
}
END {
    if (count > 0 && runs[0] > 0) {
        printf "\nWorkers parking and waking, and sessions: %.1f µs of server CPU per Ping",
            (on - off * runs[1] / runs[0]) * 1e6 / count
        printf " (with Pings, less the same places without them).\n"
    }
}'
