#!/usr/bin/env bash
# Reproduces every figure of the book's chapter "How many clients can one server hold?"
# (book/src/capacity.md): builds the demos and loadgen in release mode, then for each
# measurement starts a fresh demo process on a loopback port, runs one loadgen scenario against
# it, and stops it. A fresh process per measurement matters for memory: a server that has
# already served and dropped 10,000 clients reuses their freed memory, and its RSS no longer
# grows with new ones.
#
# Every fan-out is read the way the floor is (loadgen's --reader epoll, the default: one epoll
# thread), so a ratio to the floor compares servers; one run each of chat-sse and echo-ws at
# $many with --reader tokio shows what the old, heavier reader added. Every fan-out is paced as
# the floor is, its rounds 0.2 s apart ($pace below); one run each at $many with the rounds back
# to back shows what that costs. The chat is also divided by the floor written in chat-sse's
# own events and read by the chat's reader (`loadgen floor --frame sse`).
#
# Absolute times on a shared machine move by 2-3x from day to day, so every fan-out figure is
# also printed as a ratio to two references measured in the same run (see
# ../shared/baselines/README.md): the machine's floor (raw TCP writes to N sockets, the C
# file fanout_floor.c next to loadgen's port of it, `loadgen floor`), and the Node replicas of
# the tutorials' servers where node and npm are installed. A summary table ends the run.
#
# Usage: [PAIRS=N] bash crates/loadgen/benchmarks.sh [--quick]
#   --quick   1,000 clients everywhere, to try the script in a minute or two.
#   PAIRS=N   the targets at 1,000 measured in N pairs instead of 3 (see $pairs below).
# Results: a table per run on standard output, and one JSON line per run in
# target/benchmarks/results.jsonl. Close other busy programs first: loadgen and the demo share
# this machine's cores, and every CPU figure depends on them being otherwise idle.
# Needs jq (the ratios), gcc (the C floor; without it the Rust port is the floor), and
# optionally node and npm (the replicas; npm ci fetches express and ws from the registry).
set -euo pipefail
cd "$(dirname "$0")/../.."

# 200 rounds a fan-out: a p99 of 50 rounds is the slowest round, one bad scheduling moment; of
# 200, the third slowest. The medians of 50 and 200 agree. The clock ticks every 0.3 s for the
# run, so that its 200 ticks take a minute and come at the floor's pace (see $pace).
many=10000 most=19000 rounds=200 ticks=200 tick_ms=300
# At 1,000 a round takes ~8 ms, and a few ms of the machine's own (another process, the host)
# move a p99 of 200 rounds by a third: the same binaries gave 0.78x to 1.47x the floor within
# ten minutes. So the fan-outs with a target at 1,000 are measured again at the end, each right
# after a floor run of its own, $pairs times, and their ratio is the median of the pairs'.
# PAIRS=N takes more (each pair of the three costs ~4.5 minutes) on a noisy day.
pairs=${PAIRS:-3}
# Time enough for them: 200 rounds of a Node replica at 10,000 take about 2 minutes, loadgen's
# default limit for a whole run.
deadline=400
# Seconds between fan-out rounds: fanout_floor.c and `loadgen floor` wait 0.2 s after each
# round. A round that follows the last at once costs more (the sockets' delayed ACKs and the
# reader's backlog land in it), so a ratio to the floor needs the floor's pace.
pace=0.2
if [[ "${1:-}" == "--quick" ]]; then
    many=1000 most=1000 rounds=20 ticks=20 pairs=${PAIRS:-1}
fi

# The build is niced (it can share the machine), the measurements are not.
nice -n 19 cargo build --release --quiet -p clock-sse -p chat-sse -p echo-ws -p stock-ticker -p loadgen
bin=${CARGO_TARGET_DIR:-target}/release
mkdir -p target/benchmarks
results=target/benchmarks/results.jsonl
: >"$results"
# Each connection is a file descriptor, in the demo and in loadgen.
ulimit -n "$(ulimit -Hn)"
# ../shared beside the checkout, as in CI; BASELINES=DIR points elsewhere.
baselines=${BASELINES:-../shared/baselines}
scratch=$(mktemp -d)
# The fan-out sizes measured everywhere: 1,000, and $many unless --quick made them the same.
sizes=(1000)
if ((many != 1000)); then sizes+=("$many"); fi

port=23100
demo_pid=
sse=http://127.0.0.1:PORT
ws=ws://127.0.0.1:PORT

start() { # start <demo> [demo options...]: a fresh demo on the next port
    port=$((port + 1))
    # Each tokio worker on a core of its own: left free, both workers of a demo now and then
    # share one core for a whole round while the other core idles (the book's "Two workers on
    # one core"). The floor's writer threads are new each round, and Linux places new threads
    # apart.
    "$bin/$1" --port "$port" --pin-workers "${@:2}" >"target/benchmarks/$1.log" 2>&1 &
    demo_pid=$!
    wait_for_port "$1"
}

start_node() { # start_node <replica.js>: a fresh Node replica on the next port
    port=$((port + 1))
    PORT=$port node "$scratch/node/$1" >"target/benchmarks/$1.log" 2>&1 &
    demo_pid=$!
    wait_for_port "$1"
}

wait_for_port() { # wait_for_port <name>: until the server just started accepts, or give up
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
trap 'stop; rm -rf "$scratch"' EXIT

# The figures the ratios and the summary are made of, by name (chat/floor/1000, ...), in ms
# (KiB for the idle rows). A run that failed leaves its figure out, and its ratios print "-".
declare -A figure
last_run= # the JSON line of the run just made, empty if it wrote none

once() { # once <label> <demo and its options> <scenario> <url> [loadgen options...]
    local label=$1 demo=$2 scenario=$3 url=$4
    # shellcheck disable=SC2086 # the demo's options are split on purpose
    start $demo
    run_loadgen "$label" "$scenario" "$url" "${@:5}"
}

once_node() { # once_node <label> <replica.js> <scenario> <url> [loadgen options...]
    start_node "$2"
    # A replica that fails is reported and skipped: it is a reference, not what is measured.
    run_loadgen "$1" "$3" "$4" "${@:5}" || echo "(failed; see target/benchmarks/$2.log)"
}

run_loadgen() { # run_loadgen <label> <scenario> <url> [loadgen options...], then stop the server
    local lines status=0
    lines=$(wc -l <"$results")
    echo "== $1"
    "$bin/loadgen" "$2" --url "${3/PORT/$port}" --server-pid "$demo_pid" \
        --deadline "$deadline" --json-file "$results" "${@:4}" || status=$?
    last_run=
    if (($(wc -l <"$results") > lines)); then last_run=$(tail -n 1 "$results"); fi
    echo
    stop
    # Let the closed connections' ports leave TIME_WAIT's way and the machine settle.
    sleep 2
    return "$status"
}

keep() { # keep <name> <jq filter>: the figure of the run just made, under that name
    local value
    value=$(jq -r "$2 // empty" <<<"${last_run:-null}")
    if [[ -n "$value" ]]; then figure[$1]=$value; fi
}

keep_fanout() { # keep_fanout <name> <jq path of a latency>: its p99 as <name>, its p50 as <name>/p50
    keep "$1" "$2.p99_ms"
    keep "$1/p50" "$2.p50_ms"
}

ratio() { # ratio <numerator name> <denominator name>: "1.42x", or "-" if either is missing
    local top=${figure[$1]:-} bottom=${figure[$2]:-}
    if [[ -z "$top" || -z "$bottom" ]]; then echo "-"; return; fi
    awk -v a="$top" -v b="$bottom" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'
}

compare() { # compare <demo name> <N> [node name]: the ratios of a fan-out figure just kept
    local line="p99 ${figure[$1]:--} ms: $(ratio "$1" "floor/$2") the floor at N=$2 (${figure[floor/$2]:--} ms)"
    if [[ -n "${3:-}" ]]; then line+=", $(ratio "$1" "$3") the Node replica (${figure[$3]:--} ms)"; fi
    echo "-> $line"
    echo
}

# The floor, first: the C reference and loadgen's port of it, 2 writer threads (this machine's
# cores) and 1, at each size. The C file's p99 with 2 writers is the divisor; without gcc, the
# port's. Both print one JSON line; the C one joins the results as scenario "fanout_floor.c".
# As many rounds as the demos get, so that each p99 is taken over the same number of rounds.
floor_rounds=$rounds
have_gcc=
if command -v gcc >/dev/null; then
    cp "$baselines/fanout_floor.c" "$scratch/"
    gcc -O2 -pthread -o "$scratch/fanout_floor" "$scratch/fanout_floor.c"
    have_gcc=1
else
    echo "gcc not found: the floor is loadgen's port alone (apt-get install gcc for the C reference)"
fi
floor_c() { # floor_c <N> <writers> <name>: a run of fanout_floor.c; its p99 as <name>, p50 <name>/p50
    local line
    echo "== floor, C reference: $1 sockets, $2 writer threads"
    line=$("$scratch/fanout_floor" "$1" "$floor_rounds" 100 "$2" | jq -c '. + {scenario: "fanout_floor.c"}')
    echo "$line" | tee -a "$results"
    figure[$3]=$(jq -r .last_of_n_ms_p99 <<<"$line")
    figure[$3/p50]=$(jq -r .last_of_n_ms_p50 <<<"$line")
    figure[$3/cpu]=$(jq -r '.writer_us_per_delivery * 1000 | round / 1000' <<<"$line")
    echo
    sleep 2
}
floor_rs() { # floor_rs <N> <writers> <name>: the same from loadgen's port, as <name> and <name>/p50
    echo "== floor, loadgen floor (the Rust port): $1 sockets, $2 writer threads"
    "$bin/loadgen" floor --clients "$1" --rounds "$floor_rounds" --deadline "$deadline" --size 100 \
        --writers "$2" --json-file "$results"
    last_run=$(tail -n 1 "$results")
    keep_fanout "$3" .to_last_client
    keep "$3/cpu" '.writer_us_per_delivery * 1000 | round / 1000'
    echo
    sleep 2
}
for n in "${sizes[@]}"; do
    for writers in 2 1; do
        if [[ -n "$have_gcc" ]]; then floor_c "$n" "$writers" "floor-c/$n/$writers"; fi
        floor_rs "$n" "$writers" "floor-rs/$n/$writers"
    done
    figure[floor/$n]=${figure[floor-c/$n/2]:-${figure[floor-rs/$n/2]:-}}
    figure[floor/$n/p50]=${figure[floor-c/$n/2/p50]:-${figure[floor-rs/$n/2/p50]:-}}
done
echo "== the floor: C reference against the Rust port (p99 of the time to the last socket)"
printf '%-8s %-8s %-12s %-12s %-10s %-16s %-16s\n' N writers "C p99 ms" "Rust p99 ms" Rust/C \
    "C µs/delivery" "Rust µs/delivery"
for n in "${sizes[@]}"; do
    for writers in 2 1; do
        printf '%-8s %-8s %-12s %-12s %-10s %-16s %-16s\n' "$n" "$writers" \
            "${figure[floor-c/$n/$writers]:--}" "${figure[floor-rs/$n/$writers]:--}" \
            "$(ratio "floor-rs/$n/$writers" "floor-c/$n/$writers")" \
            "${figure[floor-c/$n/$writers/cpu]:--}" "${figure[floor-rs/$n/$writers/cpu]:--}"
    done
done
echo

# What a runtime adds to the floor, before any server's own work: the same writes, reader and
# sockets, written by tokio tasks on 2 workers. tokio-shards is one task per core writing its
# slice of the sockets (the design a room written per core would have); tokio-tasks is one task
# per socket woken through a broadcast channel (how echo-ws's and chat-sse's sessions are woken).
for n in "${sizes[@]}"; do
    for writer in tokio-shards tokio-tasks; do
        echo "== floor written by $writer: $n sockets, 2 workers"
        "$bin/loadgen" floor --clients "$n" --rounds "$floor_rounds" --deadline "$deadline" --size 100 \
            --writers 2 --writer "$writer" --json-file "$results"
        last_run=$(tail -n 1 "$results")
        keep "floor-$writer/$n" .to_last_client.p99_ms
        keep "floor-$writer-cpu/$n" '.writer_us_per_delivery * 1000 | round / 1000'
        compare "floor-$writer/$n" "$n"
        sleep 2
    done
done
echo "== what a runtime adds: p99 to the last socket, and writer CPU per delivery, 2 threads or workers"
printf '%-8s %-22s %-12s %-10s %-16s\n' N writer "p99 ms" "/floor" "µs/delivery"
for n in "${sizes[@]}"; do
    printf '%-8s %-22s %-12s %-10s %-16s\n' "$n" "OS threads (the floor)" "${figure[floor/$n]:--}" \
        "1.00x" "${figure[floor-c/$n/2/cpu]:-${figure[floor-rs/$n/2/cpu]:--}}"
    for writer in tokio-shards tokio-tasks; do
        printf '%-8s %-22s %-12s %-10s %-16s\n' "$n" "$writer" "${figure[floor-$writer/$n]:--}" \
            "$(ratio "floor-$writer/$n" "floor/$n")" "${figure[floor-$writer-cpu/$n]:--}"
    done
done
echo

# The floor of a chat: the same writes from 2 threads, each round one chat message exactly as
# chat-sse writes it to a direct stream, read by chat-fanout's own reader (de-chunked, scanned
# for the event's fields and the round's marker). The chat divided by this one compares the
# servers alone; divided by the raw floor, it also holds the reader's parsing.
for n in "${sizes[@]}"; do
    echo "== floor, SSE-framed (chat-sse's events, the chat's reader): $n sockets, 2 writer threads"
    "$bin/loadgen" floor --clients "$n" --rounds "$floor_rounds" --deadline "$deadline" --writers 2 --frame sse \
        --json-file "$results"
    last_run=$(tail -n 1 "$results")
    keep_fanout "floor-sse/$n" .to_last_client
    compare "floor-sse/$n" "$n"
    sleep 2
done

# The Node replicas, before the demos, so each demo figure can be divided by its replica's.
# Their clock (one setInterval per client, ids counted per client) has no shared tick to
# spread, so it is measured idle only. Their chat sends a stream's response head only with its
# first event, so loadgen posts unmeasured messages while the streams open (--prime-streams).
have_node=
if command -v node >/dev/null && command -v npm >/dev/null; then
    cp -r "$baselines/node" "$scratch/node"
    if (cd "$scratch/node" && npm ci --no-audit --no-fund --loglevel=error); then
        have_node=1
    else
        echo "npm ci failed in $scratch/node: the Node columns are skipped"
    fi
else
    echo "node or npm not found: the Node columns are skipped (install Node.js 20 or later with" \
        "npm, e.g. apt-get install nodejs npm, to measure the replicas too)"
fi
if [[ -n "$have_node" ]]; then
    for n in "${sizes[@]}"; do
        once_node "Node sse-chat.js: fan-out to $n streams" sse-chat.js chat-fanout "$sse" \
            --clients "$n" --rounds "$rounds" --pause "$pace" --stream-path /message-stream \
            --post-path /message --prime-streams && keep_fanout "node-chat/$n" .to_last_client
        once_node "Node ws-broadcast.js: broadcast to $n sockets" ws-broadcast.js ws-fanout "$ws/" \
            --clients "$n" --rounds "$rounds" --pause "$pace" && keep_fanout "node-ws/$n" .to_last_client
    done
    # Its streams' heads come with their first tick, up to a second later: open more at a time
    # than the default 256, or 10,000 take 40 s to open.
    once_node "Node clock-sse.js: $many idle streams" clock-sse.js sse-idle "$sse/events" \
        --clients "$many" --connect-batch 1000 && keep node-idle-sse .server_rss_kib.per_connection
    once_node "Node ws-broadcast.js: $many idle sockets" ws-broadcast.js ws-idle "$ws/" \
        --clients "$many" && keep node-idle-ws .server_rss_kib.per_connection
    once_node "Node ws-broadcast.js: throughput, 100 sockets, 10 senders, 64 B" ws-broadcast.js \
        ws-throughput "$ws/" --clients 100 --senders 10 --size 64 &&
        keep node-tp .deliveries_per_s && keep node-tp-cpu .server_cpu_us_per_delivery
fi

once "clock-sse --direct-streams: $most idle streams" "clock-sse --direct-streams" sse-idle "$sse/events" --clients "$most"
keep demo-idle-sse-direct .server_rss_kib.per_connection && keep demo-held .clients.connected
keep demo-held-failed .clients.failed
once "clock-sse --direct-streams: $many idle streams through hyper (--plain: no Accept header)" "clock-sse --direct-streams" sse-idle "$sse/events" --clients "$many" --plain
once "clock-sse (the default, hyper): $many idle streams" clock-sse sse-idle "$sse/events" --clients "$many"
keep demo-idle-sse .server_rss_kib.per_connection
once "clock-sse: tick spread, 1000 clients" "clock-sse --tick-ms $tick_ms" clock-spread "$sse/events" --clients 1000 --ticks "$ticks"
keep_fanout clock/1000 .tick_spread && compare clock/1000 1000
once "clock-sse: tick spread, $many clients" "clock-sse --tick-ms $tick_ms" clock-spread "$sse/events" --clients "$many" --ticks "$ticks"
keep_fanout "clock/$many" .tick_spread && compare "clock/$many" "$many"
# The three fan-outs with a target at 1,000, as this pass runs them and the pairs at the end run
# them again: one command each, so that a pair measures what this pass measures.
targeted() { # targeted <clock-direct|chat-direct|ws> <N> <name> [label prefix]: one run, kept as <name>
    case $1 in
    clock-direct)
        once "${4:-}clock-sse --direct-streams: tick spread, $2 clients" \
            "clock-sse --direct-streams --tick-ms $tick_ms" clock-spread "$sse/events" \
            --clients "$2" --ticks "$ticks"
        keep_fanout "$3" .tick_spread
        ;;
    chat-direct)
        once "${4:-}chat-sse --direct-streams: fan-out to $2 streams" "chat-sse --direct-streams" \
            chat-fanout "$sse" --clients "$2" --rounds "$rounds" --pause "$pace"
        keep_fanout "$3" .to_last_client
        ;;
    ws)
        once "${4:-}echo-ws: broadcast to $2 sockets" echo-ws ws-fanout "$ws/ws" --clients "$2" \
            --rounds "$rounds" --pause "$pace"
        keep_fanout "$3" .to_last_client
        ;;
    esac
}
# On the direct path the streams are written by one task per core (realtime_kit::fanout).
for n in "${sizes[@]}"; do
    targeted clock-direct "$n" "clock-direct/$n"
    compare "clock-direct/$n" "$n"
done
once "chat-sse: fan-out to 1000 streams" chat-sse chat-fanout "$sse" --clients 1000 --rounds "$rounds" --pause "$pace"
keep_fanout chat/1000 .to_last_client && compare chat/1000 1000 node-chat/1000
once "chat-sse: fan-out to $many streams" chat-sse chat-fanout "$sse" --clients "$many" --rounds "$rounds" --pause "$pace"
keep_fanout "chat/$many" .to_last_client && compare "chat/$many" "$many" "node-chat/$many"
# The same with loadgen's old reader (a tokio task per stream, kernel stamps): how much of the
# ratio to the floor the reader made, not the server.
once "chat-sse: fan-out to $many streams, tokio reader" chat-sse chat-fanout "$sse" --clients "$many" --rounds "$rounds" --pause "$pace" --reader tokio
keep_fanout "chat/$many/tokio" .to_last_client && compare "chat/$many/tokio" "$many" "node-chat/$many"
for n in "${sizes[@]}"; do
    targeted chat-direct "$n" "chat-direct/$n"
    compare "chat-direct/$n" "$n" "node-chat/$n"
    echo "-> p99 against the SSE-framed floor: $(ratio "chat-direct/$n" "floor-sse/$n") (${figure[floor-sse/$n]:--} ms)"
    echo
done
once "chat-sse --direct-streams: fan-out to $many streams, rounds back to back" "chat-sse --direct-streams" chat-fanout "$sse" --clients "$many" --rounds "$rounds"
keep_fanout "chat-direct/$many/b2b" .to_last_client && compare "chat-direct/$many/b2b" "$many"
once "echo-ws: $many idle room sockets" "echo-ws --max-clients 20000" ws-idle "$ws/ws" --clients "$many"
keep demo-idle-ws .server_rss_kib.per_connection
targeted ws 1000 ws/1000
compare ws/1000 1000 node-ws/1000
once "echo-ws: broadcast to $many sockets" "echo-ws --max-clients 20000" ws-fanout "$ws/ws" --clients "$many" --rounds "$rounds" --pause "$pace"
keep_fanout "ws/$many" .to_last_client && compare "ws/$many" "$many" "node-ws/$many"
once "echo-ws: broadcast to $many sockets, tokio reader" "echo-ws --max-clients 20000" ws-fanout "$ws/ws" --clients "$many" --rounds "$rounds" --pause "$pace" --reader tokio
keep_fanout "ws/$many/tokio" .to_last_client && compare "ws/$many/tokio" "$many" "node-ws/$many"
once "echo-ws: broadcast to $many sockets, rounds back to back" "echo-ws --max-clients 20000" ws-fanout "$ws/ws" --clients "$many" --rounds "$rounds"
keep_fanout "ws/$many/b2b" .to_last_client && compare "ws/$many/b2b" "$many"
once "echo-ws: throughput, 100 sockets, 10 senders, 64 B" echo-ws ws-throughput "$ws/ws" --clients 100 --senders 10 --size 64
keep demo-tp .deliveries_per_s && keep demo-tp-cpu .server_cpu_us_per_delivery
once "stock-ticker: $many SSE streams (quotes flowing)" stock-ticker sse-idle "$sse/quotes/stream" --clients "$many"
once "stock-ticker: $many idle WebSockets" stock-ticker ws-idle "$ws/quotes/ws" --clients "$many"

# The fan-outs with a target at 1,000 again, each right after a floor run of its own (see
# $pairs above): the ratio of each pair, p99 to p99 and p50 to p50, and their medians.
paired=("chat-direct" "ws" "clock-direct")
declare -A paired_label=(
    [chat-direct]="chat-sse --direct-streams: to the last of 1000"
    [ws]="echo-ws: broadcast to the last of 1000 sockets"
    [clock-direct]="clock-sse --direct-streams: spread over 1000"
)
for pair in $(seq "$pairs"); do
    for demo in "${paired[@]}"; do
        name=pair/$pair/$demo
        if [[ -n "$have_gcc" ]]; then floor_c 1000 2 "$name/floor"; else floor_rs 1000 2 "$name/floor"; fi
        targeted "$demo" 1000 "$name" "pair $pair: "
        echo "-> p99 $(ratio "$name" "$name/floor"), p50 $(ratio "$name/p50" "$name/floor/p50") the floor run just before"
        echo
    done
done
median_ratio() { # median_ratio <demo> [/p50]: the median over the pairs of demo/floor, or "-"
    local demo=$1 at=${2:-} pair values=()
    for pair in $(seq "$pairs"); do
        values+=("$(ratio "pair/$pair/$demo$at" "pair/$pair/$demo/floor$at")")
    done
    if [[ " ${values[*]} " == *" - "* ]]; then echo "-"; return; fi
    printf '%s\n' "${values[@]}" | sort -n | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }'
}

# One table for the whole run: each fan-out figure (p99, ms) next to the floor and the Node
# replica at the same N, the demo's ratio to each, and the ratio of the medians (p50) to the
# floor's: a p99 is the third slowest of 200 rounds, the median the steadier figure.
row() { # row <figure> <floor name> <Node name> <demo name>
    printf '%-52s %-9s %-9s %-9s %-11s %-10s %-10s\n' "$1" "${figure[$2]:--}" "${figure[$3]:--}" \
        "${figure[$4]:--}" "$(ratio "$4" "$2")" "$(ratio "$4" "$3")" "$(ratio "$4/p50" "$2/p50")"
}
echo "== summary (p99 in ms; the idle rows in KiB per stream; floor: fanout_floor.c, 2 writer threads;"
echo "   every fan-out paced as the floor, rounds $pace s apart, unless it says back to back)"
if [[ -z "$have_node" ]]; then echo "(Node columns skipped: node and npm not found or npm ci failed)"; fi
printf '%-52s %-9s %-9s %-9s %-11s %-10s %-10s\n' figure floor Node demo demo/floor demo/Node "p50 /floor"
for n in "${sizes[@]}"; do
    row "floor in chat-sse's events, the chat's reader, $n" "floor/$n" none "floor-sse/$n"
done
for n in "${sizes[@]}"; do
    row "chat-sse: POST to the last of $n streams" "floor/$n" "node-chat/$n" "chat/$n"
done
for n in "${sizes[@]}"; do
    row "chat-sse --direct-streams: to the last of $n" "floor/$n" "node-chat/$n" "chat-direct/$n"
    row "  the same, over the SSE-framed floor" "floor-sse/$n" none "chat-direct/$n"
done
row "chat-sse --direct-streams: $many, back to back" "floor/$many" none "chat-direct/$many/b2b"
row "chat-sse: to the last of $many (tokio reader)" "floor/$many" "node-chat/$many" "chat/$many/tokio"
for n in "${sizes[@]}"; do
    row "echo-ws: broadcast to the last of $n sockets" "floor/$n" "node-ws/$n" "ws/$n"
done
row "echo-ws: to the last of $many, back to back" "floor/$many" none "ws/$many/b2b"
row "echo-ws: to the last of $many sockets (tokio reader)" "floor/$many" "node-ws/$many" "ws/$many/tokio"
for n in "${sizes[@]}"; do
    row "clock-sse: tick spread over $n clients" "floor/$n" none "clock/$n"
    row "clock-sse --direct-streams: spread over $n" "floor/$n" none "clock-direct/$n"
done
echo "  at 1000, each right after its own floor run, $pairs pairs: p99/floor of each pair (p50/floor); median"
for demo in "${paired[@]}"; do
    line=$(printf '  %-50s' "${paired_label[$demo]}")
    for pair in $(seq "$pairs"); do
        name=pair/$pair/$demo
        line+=" $(ratio "$name" "$name/floor") ($(ratio "$name/p50" "$name/floor/p50"))"
    done
    echo "$line; median $(median_ratio "$demo") ($(median_ratio "$demo" /p50))"
done
row "idle SSE stream, server KiB each ($many)" none node-idle-sse demo-idle-sse
row "idle SSE stream, KiB each, --direct-streams ($most)" none node-idle-sse demo-idle-sse-direct
row "idle WebSocket, server KiB each ($many)" none node-idle-ws demo-idle-ws
row "WebSocket deliveries per second" none node-tp demo-tp
row "WebSocket server CPU µs per delivery" none node-tp-cpu demo-tp-cpu
echo "SSE streams held by clock-sse --direct-streams: ${figure[demo-held]:--} of $most, ${figure[demo-held-failed]:--} failed"
echo
echo "JSON lines: $results"
