#!/usr/bin/env bash
# Work per request in the tunnel, robust to the machine's load (issue 12):
# for each build, `relink forward` -> `serve-forward` -> redis-server on
# loopback, and `perf stat` on both relink processes during one
# redis-benchmark GET run (-c 1, then -c 20): CPU time, context switches
# and system calls per request (both processes together).
#
#   benches/tunnel/work.sh new=target/release/relink old=/tmp/relink-old
#   N=50000 benches/tunnel/work.sh label=/path/to/relink
#
# Needs perf (linux-perf; tracepoint raw_syscalls:sys_enter, so root or
# perf_event_paranoid <= -1), redis-server and redis-benchmark.
set -euo pipefail
N=${N:-20000}
T=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
REDIS=$(free_port)
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no --daemonize no --logfile "$T/redis.log" & PIDS+=($!)
sleep 0.5
redis-cli -p "$REDIS" set key:__rand_int__ x >/dev/null
addr() { for _ in $(seq 1 100); do a=$(sed -n 's/^listening on //p' "$1" | head -1); [ -n "$a" ] && { echo "$a"; return; }; sleep 0.05; done; }
for spec in "$@"; do
  label=${spec%%=*}; bin=${spec#*=}
  "$bin" keygen --out "$T/$label.key" >/dev/null 2>&1
  pub=$("$bin" pubkey "$T/$label.key")
  "$bin" serve-forward 127.0.0.1:0 "127.0.0.1:$REDIS" --key "$T/$label.key" 2>"$T/s-$label.log" & SP=$!; PIDS+=($SP)
  srv=$(addr "$T/s-$label.log")
  "$bin" forward 127.0.0.1:0 "$srv" --server-key "$pub" 2>"$T/f-$label.log" & FP=$!; PIDS+=($FP)
  loc=$(addr "$T/f-$label.log"); port=${loc##*:}
  redis-benchmark -p "$port" -t get -n 2000 -c 20 >/dev/null 2>&1
  for c in 1 20; do
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$FP,$SP" -o "$T/stat" -- redis-benchmark -p "$port" -t get -n "$N" -c "$c" --csv 2>/dev/null > "$T/rb"
    rps=$(awk -F, 'NR==2 { gsub(/"/, ""); print $2 }' "$T/rb")
    tc=$(awk -F, '/task-clock/ {print $1}' "$T/stat"); cs=$(awk -F, "/context-switches/ {print \$1}" "$T/stat"); sc=$(awk -F, "/sys_enter/ {print \$1}" "$T/stat")
    awk -v l="$label" -v c="$c" -v tc="$tc" -v cs="$cs" -v sc="$sc" -v n="$N" -v r="$rps" 'BEGIN { printf "%s -c %s: %.1f us CPU/request, %.2f context switches, %.2f syscalls per request (forward+serve-forward), %.1fk req/s\n", l, c, tc*1000/n, cs/n, sc/n, r/1000 }'
  done
  kill $FP $SP
done
