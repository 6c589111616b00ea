# Sourced by profile.sh and ping-cost.sh, the two scripts that run a demo under perf: a scratch
# directory, a server started on the next port and stopped after its perf, and never outliving
# the script.

work=$(mktemp -d)
cleanup() {
    # A server left by a failed step must not outlive the script.
    if [[ -n "${server_pid:-}" ]]; then kill "$server_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

# needs TOOL...: stops the script with one line if a tool is missing.
needs() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$(basename "$0") needs $tool" >&2; exit 1; }
    done
}

# wait_for_port PORT: until a server accepts on 127.0.0.1:PORT, ten seconds at most.
wait_for_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
        sleep 0.1
    done
}

# start_server COMMAND...: the command with `--port` on the next port, in the background, once it
# accepts connections; its process id in server_pid.
start_server() {
    port=$((port + 1))
    "$@" --port "$port" >/dev/null 2>&1 &
    server_pid=$!
    wait_for_port "$port"
}

# stop_server PERF_PID: stops the perf attached to the server (so that it writes its counts), then
# the server.
stop_server() {
    kill -INT "$1"
    wait "$1" || true
    kill -INT "$server_pid"
    wait "$server_pid" || true
    server_pid=
}
