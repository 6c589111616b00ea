# Sourced by profile.sh and ping-cost.sh, the two scripts that run a demo under perf: a scratch
# directory, a server that never outlives the script, and a wait for the server's port.

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
