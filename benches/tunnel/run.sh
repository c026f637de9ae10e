#!/usr/bin/env bash
# A real client through the tunnel, side by side in one run on loopback
# (issue 12): redis-benchmark GET through
#   direct | socat (plain TCP forwarder) | ssh -L | relink forward -> serve-forward
# with 1 and with 20 connections. Prints a markdown table: req/s and p50
# latency (median of RUNS runs), and the ratios relink/ssh and relink/socat.
#
#   benches/tunnel/run.sh                 # N=20000 RUNS=3
#   N=50000 RUNS=5 benches/tunnel/run.sh
#   RELINK=/path/to/relink benches/tunnel/run.sh   # another build
#
# Installs what is missing with apt-get (redis-server, redis-tools,
# openssh-server, openssh-client, socat; needs root or sudo for that).
# sshd runs from a temp dir with throwaway host and user keys, on
# loopback, as the current user (as root it needs /run/sshd: created).
set -euo pipefail

N=${N:-20000}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v socat >/dev/null || need+=(socat)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
fi

if [ -z "${RELINK:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p relink-cli)
    RELINK="$ROOT/target/release/relink"
fi

T=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$T"
}
trap cleanup EXIT

# A free loopback port (asked from the kernel).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}
# The address a relink command printed first on stderr (`listening on ADDR`).
relink_addr() {
    for _ in $(seq 1 100); do
        a=$(sed -n 's/^listening on //p' "$1" | head -1)
        [ -n "$a" ] && { echo "$a"; return 0; }
        sleep 0.05
    done
    echo "no 'listening on' in $1:" >&2; cat "$1" >&2
    return 1
}

# redis
REDIS=$(free_port)
redis-server --port "$REDIS" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize no --logfile "$T/redis.log" &
PIDS+=($!)
wait_port "$REDIS"
redis-cli -p "$REDIS" set key:__rand_int__ x >/dev/null

# socat: a plain forwarder, no crypto, a process per connection (fork)
SOCAT=$(free_port)
socat "TCP-LISTEN:$SOCAT,bind=127.0.0.1,reuseaddr,fork,nodelay" "TCP:127.0.0.1:$REDIS,nodelay" &
PIDS+=($!)
wait_port "$SOCAT"

# sshd with throwaway keys, and ssh -L
SSHD_PORT=$(free_port)
ssh-keygen -q -t ed25519 -N '' -f "$T/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$T/user_key"
cp "$T/user_key.pub" "$T/authorized_keys"
chmod 600 "$T/authorized_keys"
cat >"$T/sshd_config" <<EOF
ListenAddress 127.0.0.1:$SSHD_PORT
HostKey $T/host_key
AuthorizedKeysFile $T/authorized_keys
PidFile $T/sshd.pid
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
EOF
[ "$(id -u)" = 0 ] && mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$T/sshd_config" 2>"$T/sshd.log" &
PIDS+=($!)
wait_port "$SSHD_PORT"
SSH_L=$(free_port)
ssh -N -i "$T/user_key" -p "$SSHD_PORT" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR \
    -L "127.0.0.1:$SSH_L:127.0.0.1:$REDIS" "$(id -un)@127.0.0.1" &
PIDS+=($!)
wait_port "$SSH_L"

# relink forward -> serve-forward, pinned server key: the build under test
# (row "relink") and the builds of RELINK_ALSO="label=/path/to/relink ..."
# (rows "relink (label)", e.g. an older commit's build for before/after).
"$RELINK" keygen --out "$T/relink.key" >/dev/null
PUB=$("$RELINK" pubkey "$T/relink.key")
declare -A PORT=([direct]=$REDIS [socat]=$SOCAT [ssh]=$SSH_L)
declare -A NAME=([direct]=direct [socat]="socat forwarder, no crypto" [ssh]='`ssh -L`')
PATHS=(direct socat ssh)
start_relink() { # label binary
    "$2" serve-forward 127.0.0.1:0 "127.0.0.1:$REDIS" --key "$T/relink.key" 2>"$T/serve-$1.log" &
    PIDS+=($!)
    local server local_addr
    server=$(relink_addr "$T/serve-$1.log")
    "$2" forward 127.0.0.1:0 "$server" --server-key "$PUB" 2>"$T/forward-$1.log" &
    PIDS+=($!)
    local_addr=$(relink_addr "$T/forward-$1.log")
    PORT[$1]=${local_addr##*:}
    PATHS+=("$1")
}
start_relink relink "$RELINK"
NAME[relink]='relink `forward` → `serve-forward`'
for spec in ${RELINK_ALSO:-}; do
    label=${spec%%=*}
    start_relink "relink-$label" "${spec#*=}"
    NAME[relink-$label]="relink ($label)"
done

# One redis-benchmark run: prints "rps p50_ms".
bench() {
    redis-benchmark -h 127.0.0.1 -p "$1" -t get -n "$N" -c "$2" --csv 2>/dev/null |
        awk -F, 'NR==2 { gsub(/"/, ""); print $2, $5 }'
}

# The paths take turns (run 1 of each, then run 2 of each...): a change in
# the machine's load hits all of them alike. Median of RUNS by req/s.
for path in "${PATHS[@]}"; do bench "${PORT[$path]}" 20 >/dev/null; done # warm-up
for r in $(seq 1 "$RUNS"); do
    for c in 1 20; do
        for path in "${PATHS[@]}"; do
            out=$(bench "${PORT[$path]}" "$c")
            echo "$out" >>"$T/res-$path-$c"
            echo "  run $r: $path -c $c: $out" >&2
        done
    done
done
declare -A R
for path in "${PATHS[@]}"; do
    for c in 1 20; do
        R[$path,$c]=$(sort -n "$T/res-$path-$c" | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }')
    done
done

fmt() { awk -v r="$1" -v l="$2" 'BEGIN { printf "%.1fk (%.3f ms)", r / 1000, l }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
echo
echo "redis-benchmark GET -n $N, median of $RUNS runs (paths taking turns), $(nproc) CPUs, load average $(cut -d" " -f1-3 /proc/loadavg), $(date -u +%Y-%m-%d)"
echo
echo "| path | 1 connection: req/s (p50) | 20 connections: req/s (p50) |"
echo "|---|---|---|"
for path in "${PATHS[@]}"; do
    name=${NAME[$path]}
    read -r r1 l1 <<<"${R[$path,1]}"
    read -r r20 l20 <<<"${R[$path,20]}"
    echo "| $name | $(fmt "$r1" "$l1") | $(fmt "$r20" "$l20") |"
done
echo
read -r rr1 rl1 <<<"${R[relink,1]}"; read -r rr20 rl20 <<<"${R[relink,20]}"
read -r sr1 sl1 <<<"${R[ssh,1]}"; read -r sr20 sl20 <<<"${R[ssh,20]}"
read -r cr1 cl1 <<<"${R[socat,1]}"; read -r cr20 cl20 <<<"${R[socat,20]}"
echo "| ratio | 1 connection: req/s, p50 | 20 connections: req/s, p50 |"
echo "|---|---|---|"
echo "| relink / ssh | $(ratio "$rr1" "$sr1"), $(ratio "$rl1" "$sl1") | $(ratio "$rr20" "$sr20"), $(ratio "$rl20" "$sl20") |"
echo "| relink / socat | $(ratio "$rr1" "$cr1"), $(ratio "$rl1" "$cl1") | $(ratio "$rr20" "$cr20"), $(ratio "$rl20" "$cl20") |"
echo
echo "(req/s: higher is better, goal relink/ssh ≥ 1 and relink/socat ≥ 0.67; p50: lower is better, goal relink/ssh ≤ 1 and relink/socat ≤ 1.5)"
