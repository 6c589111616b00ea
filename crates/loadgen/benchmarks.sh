#!/usr/bin/env bash
# Reproduces every figure of the book's chapter "How many clients can one server hold?"
# (book/src/capacity.md): builds the demos and loadgen in release mode, then for each
# measurement starts a fresh demo process on a loopback port, runs one loadgen scenario against
# it, and stops it. A fresh process per measurement matters for memory: a server that has
# already served and dropped 10,000 clients reuses their freed memory, and its RSS no longer
# grows with new ones.
#
# Usage: bash crates/loadgen/benchmarks.sh [--quick]
#   --quick   1,000 clients everywhere, to try the script in a minute.
# Results: a table per run on standard output, and one JSON line per run in
# target/benchmarks/results.jsonl. Close other busy programs first: loadgen and the demo share
# this machine's cores, and every CPU figure depends on them being otherwise idle.
set -euo pipefail
cd "$(dirname "$0")/../.."

many=10000 most=19000 rounds=50
if [[ "${1:-}" == "--quick" ]]; then
    many=1000 most=1000 rounds=20
fi

cargo build --release --quiet -p clock-sse -p chat-sse -p echo-ws -p stock-ticker -p loadgen
bin=target/release
mkdir -p target/benchmarks
results=target/benchmarks/results.jsonl
: >"$results"
# Each connection is a file descriptor, in the demo and in loadgen.
ulimit -n "$(ulimit -Hn)"

port=23100
demo_pid=

start() { # start <demo> [demo options...]: a fresh demo on the next port
    port=$((port + 1))
    "$bin/$1" --port "$port" "${@:2}" >"target/benchmarks/$1.log" 2>&1 &
    demo_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return; fi
        sleep 0.1
    done
    echo "$1 did not start; see target/benchmarks/$1.log" >&2
    exit 1
}

stop() {
    if [[ -n "$demo_pid" ]]; then
        kill "$demo_pid" 2>/dev/null || true
        wait "$demo_pid" 2>/dev/null || true
        demo_pid=
    fi
}
trap stop EXIT

once() { # once <label> <demo and its options> <scenario> <url> [loadgen options...]
    local label=$1 demo=$2 scenario=$3 url=$4
    # shellcheck disable=SC2086 # the demo's options are split on purpose
    start $demo
    echo "== $label"
    "$bin/loadgen" "$scenario" --url "${url/PORT/$port}" --server-pid "$demo_pid" \
        --json-file "$results" "${@:5}"
    echo
    stop
    # Let the closed connections' ports leave TIME_WAIT's way and the machine settle.
    sleep 2
}

sse=http://127.0.0.1:PORT
ws=ws://127.0.0.1:PORT
once "clock-sse --direct-streams: $most idle streams" "clock-sse --direct-streams" sse-idle "$sse/events" --clients "$most"
once "clock-sse --direct-streams: $many idle streams through hyper (--plain: no Accept header)" "clock-sse --direct-streams" sse-idle "$sse/events" --clients "$many" --plain
once "clock-sse (the default, hyper): $many idle streams" clock-sse sse-idle "$sse/events" --clients "$many"
once "clock-sse: tick spread, 1000 clients" clock-sse clock-spread "$sse/events" --clients 1000 --ticks 20
once "clock-sse: tick spread, $many clients" clock-sse clock-spread "$sse/events" --clients "$many" --ticks 20
once "chat-sse: fan-out to 1000 streams" chat-sse chat-fanout "$sse" --clients 1000 --rounds "$rounds"
once "chat-sse: fan-out to $many streams" chat-sse chat-fanout "$sse" --clients "$many" --rounds "$rounds"
once "chat-sse --direct-streams: fan-out to $many streams" "chat-sse --direct-streams" chat-fanout "$sse" --clients "$many" --rounds "$rounds"
once "echo-ws: $many idle room sockets" "echo-ws --max-clients 20000" ws-idle "$ws/ws" --clients "$many"
once "echo-ws: broadcast to 1000 sockets" echo-ws ws-fanout "$ws/ws" --clients 1000 --rounds "$rounds"
once "echo-ws: broadcast to $many sockets" "echo-ws --max-clients 20000" ws-fanout "$ws/ws" --clients "$many" --rounds "$rounds"
once "echo-ws: throughput, 100 sockets, 10 senders, 64 B" echo-ws ws-throughput "$ws/ws" --clients 100 --senders 10 --size 64
once "stock-ticker: $many SSE streams (quotes flowing)" stock-ticker sse-idle "$sse/quotes/stream" --clients "$many"
once "stock-ticker: $many idle WebSockets" stock-ticker ws-idle "$ws/quotes/ws" --clients "$many"
echo "JSON lines: $results"
