# Helpers for scripts that run the Go test target and the exporter (scripts/bench,
# scripts/link-order); sourced, not run. The caller sets WORK (a scratch directory)
# and PIDS (an array its exit trap kills), and has built "$WORK/loadgen".

# start_loadgen N M: starts testdata/loadgen with N goroutines on M stacks, sets LG_URL
# and LG_PID.
start_loadgen() {
    "$WORK/loadgen" -goroutines "$1" -stacks "$2" >"$WORK/lg.out" 2>&1 &
    LG_PID=$!; PIDS+=("$LG_PID")
    for _ in $(seq 200); do
        LG_URL=$(sed -n 's/^listening on //p' "$WORK/lg.out")
        [ -n "$LG_URL" ] && return 0
        sleep 0.05
    done
    echo "loadgen did not start" >&2; return 1
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# metrics_ready URL TRIES: waits, 0.1 s a try, until URL/metrics has a goroutine
# profile; the last body is left in "$WORK/m.txt".
metrics_ready() {
    for _ in $(seq "$2"); do
        curl -sf -o "$WORK/m.txt" "$1/metrics" 2>/dev/null &&
            grep -q '^pprof_profile_goroutines' "$WORK/m.txt" && return 0
        sleep 0.1
    done
    return 1
}
