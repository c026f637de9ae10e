#!/usr/bin/env bash
# The fleet script: three relink nodes behind HAProxy on loopback, clients
# through a cutting relay (examples/fleet/README.md explains it and the
# HAProxy configuration line by line).
#
#   examples/fleet/run.sh                 # 50 clients x 8 MiB, scenarios normal, kill, drain
#   examples/fleet/run.sh --quick         # 10 clients x 1 MiB at 0.25 MiB/s each (CI)
#   examples/fleet/run.sh --scenarios normal,drain --clients 20 --mib 4 --keep --all-sessions
#   examples/fleet/run.sh --quick --debug # dev profile (FLEET_PROFILE=dev): reuses the build
#                                         # of `cargo test` (a cold release build takes minutes)
#
# It installs HAProxy (apt-get) when missing, builds the release `relink`
# CLI and the `fleet_clients` example (the dev profile with --debug), generates a fleet key, and per
# scenario starts three nodes (`relink serve-forward`, one server id each,
# forwarding every session to an echo service) and HAProxy in a temporary
# directory, runs the clients, prints per node what the node and HAProxy
# counted, and stops everything it started (also on failure or Ctrl-C).
# Times are seconds since the scenario's start. Exit status 0 when every
# scenario passed.
#
# Scenarios:
#   normal  every resume lands on its own node (no node answers an unknown
#           session), every byte echoed exactly, 0 failures
#   kill    node 3 is killed (SIGKILL) when 30% of the bytes were echoed and
#           restarted 2 s later with the same key, --server-id 3 and address
#           (as systemd's Restart=always would). Meanwhile nodes 1/2 answer
#           its clients' resumes with unauthenticated UnknownSessions (a node
#           does not vouch for another node's sessions), which the clients
#           do not believe: they keep retrying. The restarted node 3 owns
#           their ids and answers with the valid reset token: each ends at
#           once with the typed error SessionUnknown and its in-doubt range
#           (within 30 s of the kill, nothing duplicated); the others finish
#           exactly; with --reopen (always on here) each lost one opens a
#           new session on a live node and runs a fresh transfer
#   loss    (not in the default list) node 3 is killed at 30% and never
#           comes back; the nodes run with --resume-timeout 10: its clients
#           end with the typed error Expired at their give-up deadline (last
#           contact + the node's resume timeout + their idle timeout, 15 s:
#           checked within 45 s of the kill), then reopen as in kill
#   drain   node 2 is drained at 30% (HAProxy `set server ... state drain`,
#           then SIGTERM to the node, which runs with --drain-timeout): its
#           sessions finish with exact data and the node exits 0 once empty;
#           6 late clients started after the drain must avoid node 2
#
# Options: --clients N, --mib M, --rate MIB_PER_S (per session, 0 = no
# limit), --cut-ms LO-HI, --seed S, --scenarios LIST, --keep (keep the
# logs), --all-sessions (print sessions that ended ok too), --debug.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/examples/fleet"

CLIENTS=50
MIB=8
SCENARIOS=normal,kill,drain
CUT_MS=50-400
KEEP=0
SEED=${FLEET_SEED:-1}
DRAIN_TIMEOUT=20
RATE=0
PROFILE=${FLEET_PROFILE:-release}
ALL_SESSIONS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) CLIENTS=10; MIB=1; RATE=0.25 ;;
        --clients) CLIENTS=$2; shift ;;
        --mib) MIB=$2; shift ;;
        --scenarios) SCENARIOS=$2; shift ;;
        --cut-ms) CUT_MS=$2; shift ;;
        --rate) RATE=$2; shift ;;
        --seed) SEED=$2; shift ;;
        --keep) KEEP=1 ;;
        --debug) PROFILE=dev ;;
        --all-sessions) ALL_SESSIONS=1 ;;
        -h|--help) sed -n '2,47p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { printf 'run.sh: %s\n' "$*"; }
die() { printf 'run.sh: FAIL: %s\n' "$*" >&2; exit 1; }

START=$SECONDS

# --- what the script needs ------------------------------------------------
# haproxy lives in /usr/sbin, which a non-root PATH may lack.
PATH="$PATH:/usr/sbin:/sbin"
need_apt() {
    # $1 = command, $2 = Debian package
    command -v "$1" >/dev/null 2>&1 && return 0
    command -v apt-get >/dev/null 2>&1 || die "$1 is missing and there is no apt-get: install $2"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing $2 (apt-get)"
    if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1; then
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null || die "cannot install $2"
    fi
    command -v "$1" >/dev/null 2>&1 || die "$2 installed but $1 not found"
}
need_apt haproxy haproxy
command -v python3 >/dev/null 2>&1 || need_apt socat socat
say "$(haproxy -v 2>&1 | head -1)"

case "$PROFILE" in
    release) PROFILE_DIR=release ;;
    dev) PROFILE_DIR=debug ;;
    *) die "FLEET_PROFILE: release or dev, not $PROFILE" ;;
esac
say "building the relink CLI and the fleet_clients example (profile $PROFILE)"
(cd "$ROOT" && cargo build --quiet --profile "$PROFILE" -p relink-cli &&
    cargo build --quiet --profile "$PROFILE" --features tokio --example fleet_clients)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RELINK="$TARGET_DIR/$PROFILE_DIR/relink"
CLIENTS_BIN="$TARGET_DIR/$PROFILE_DIR/examples/fleet_clients"

TMP=$(mktemp -d /tmp/relink-fleet.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
        say "logs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Remove a pid from PIDS (it ended or was killed on purpose).
forget() {
    local keep=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Wait (at most $2 s) for "listening on ADDR" in log $1; print ADDR.
listening_addr() {
    local i
    for ((i = 0; i < $2 * 20; i++)); do
        if grep -q 'listening on ' "$1" 2>/dev/null; then
            grep -m1 -o 'listening on [^ ]*' "$1" | cut -d' ' -f3
            return 0
        fi
        sleep 0.05
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# One command to HAProxy's admin socket.
admin() {
    if command -v socat >/dev/null 2>&1; then
        echo "$1" | socat - "UNIX-CONNECT:$SOCK"
    else
        python3 - "$SOCK" "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode())
EOF
    fi
}

# Field $2 (by header name) of server $1 in `show stat`.
stat_of() {
    admin "show stat" | awk -F, -v srv="$1" -v col="$2" '
        NR == 1 { sub(/^# /, ""); for (i = 1; i <= NF; i++) h[$i] = i; next }
        $1 == "relink_nodes" && $2 == srv { print $(h[col]) }'
}

# --- the fleet key and what the CLI can do --------------------------------
"$RELINK" keygen --out "$TMP/fleet.key" >"$TMP/keygen.out" 2>&1
PUBKEY=$("$RELINK" pubkey "$TMP/fleet.key" 2>/dev/null | grep -Eo '[0-9a-f]{64}' | head -1)
[ -n "$PUBKEY" ] || die "no public key from relink pubkey"
say "fleet key $TMP/fleet.key, public key $PUBKEY (every client pins it)"

SF_HELP=$("$RELINK" serve-forward --help 2>&1)
has_flag() { grep -q -- "$1" <<<"$SF_HELP"; }
NODE_FLAGS=()
if has_flag --server-id; then
    ROUTABLE=1
else
    ROUTABLE=0
    say "WARNING: relink serve-forward has no --server-id: connection ids carry no server id, HAProxy cannot route resumes (expect SessionUnknown failures)"
fi
SERVER_OPTS=""
if has_flag --proxy-protocol; then
    NODE_FLAGS+=(--proxy-protocol)
    SERVER_OPTS=" send-proxy-v2"
else
    say "note: no PROXY v2 support in the CLI: every transport comes from HAProxy's 127.0.0.1, one source for the per-source limits (32 handshakes in progress per node)"
fi
for f in --max-handshakes-per-source; do
    has_flag "$f" && NODE_FLAGS+=("$f" 1000)
done
HAS_DRAIN=0
has_flag --drain-timeout && HAS_DRAIN=1

# --- the echo service (shared by every scenario) --------------------------
"$CLIENTS_BIN" echo 127.0.0.1:0 2>"$TMP/echo.log" &
PIDS+=($!)
ECHO=$(listening_addr "$TMP/echo.log" 10) || die "the echo service did not start ($TMP/echo.log)"
say "echo service on $ECHO"

NODE_PID=()
NODE_ADDR=()
# Extra flags of every node of the current scenario (e.g. --resume-timeout).
SCENARIO_FLAGS=()

# The time now, in seconds since the scenario's start T0 (a Unix time).
T0=0
now_rel() { awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.2f", a - b }'; }

# Start node $2 of scenario $1 listening on $3 (127.0.0.1:0: a free
# port), its log appended to node$2.log; sets NODE_PID[$2].
start_node() {
    local dir="$TMP/$1" k=$2
    # -v: a log line per session, resume and lost transport (the node
    # logs are kept on failure and with --keep).
    local args=(-v serve-forward "$3" "$ECHO" --key "$TMP/fleet.key" "${NODE_FLAGS[@]}")
    [ "$ROUTABLE" = 1 ] && args+=(--server-id "$k")
    [ "$HAS_DRAIN" = 1 ] && args+=(--drain-timeout "$DRAIN_TIMEOUT")
    args+=("${SCENARIO_FLAGS[@]}")
    "$RELINK" "${args[@]}" 2>>"$dir/node$k.log" &
    NODE_PID[$k]=$!
    PIDS+=($!)
}

# Start three nodes and HAProxy for scenario $1; sets FRONT, SOCK.
start_fleet() {
    local dir="$TMP/$1" k
    mkdir -p "$dir"
    T0=$(date +%s.%N)
    for k in 1 2 3; do
        start_node "$1" "$k" 127.0.0.1:0
    done
    for k in 1 2 3; do
        NODE_ADDR[$k]=$(listening_addr "$dir/node$k.log" 10) ||
            die "node $k did not start ($dir/node$k.log)"
    done
    SOCK="$dir/haproxy.sock"
    FRONT="127.0.0.1:$(free_port)"
    sed -e "s|@ADMIN_SOCK@|$SOCK|" -e "s|@FRONT_ADDR@|$FRONT|" \
        -e "s|@NODE1_ADDR@|${NODE_ADDR[1]}|" -e "s|@NODE2_ADDR@|${NODE_ADDR[2]}|" \
        -e "s|@NODE3_ADDR@|${NODE_ADDR[3]}|" -e "s|@SERVER_OPTS@|$SERVER_OPTS|" \
        "$HERE/haproxy.cfg.in" >"$dir/haproxy.cfg"
    haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy rejects $dir/haproxy.cfg"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    PIDS+=($!)
    # Every node UP (two checks passed) before the clients start.
    local i up
    for ((i = 0; i < 100; i++)); do
        up=0
        if [ -S "$SOCK" ]; then
            for k in 1 2 3; do [ "$(stat_of node$k status 2>/dev/null)" = UP ] && up=$((up + 1)); done
        fi
        [ "$up" = 3 ] && break
        sleep 0.1
    done
    [ "$up" = 3 ] || die "HAProxy does not see three nodes UP ($dir/haproxy.log)"
    say "[$1] nodes ${NODE_ADDR[1]} ${NODE_ADDR[2]} ${NODE_ADDR[3]} (server ids 1 2 3) behind HAProxy $FRONT"
}

# Per node: HAProxy's counters and the node's own summary line.
report_nodes() {
    local dir="$TMP/$1" k
    for k in 1 2 3; do
        printf 'run.sh: [%s] node %d: haproxy: status %s, connections %s, retries %s, redispatched %s\n' \
            "$1" "$k" "$(stat_of node$k status)" "$(stat_of node$k stot)" \
            "$(stat_of node$k wretr)" "$(stat_of node$k wredis)"
    done
}

# Stop the nodes (SIGINT: abort what is left at once; they print their
# summary line) and HAProxy.
stop_fleet() {
    local dir="$TMP/$1" k pid
    for k in 1 2 3; do kill -INT "${NODE_PID[$k]}" 2>/dev/null || true; done
    for k in 1 2 3; do
        pid=${NODE_PID[$k]}
        if kill -0 "$pid" 2>/dev/null; then
            timeout 5 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
        forget "$pid"
    done
    kill -TERM "$HAPROXY_PID" 2>/dev/null || true
    wait "$HAPROXY_PID" 2>/dev/null || true
    forget "$HAPROXY_PID"
    for k in 1 2 3; do
        local line
        line=$(grep 'node summary:' "$dir/node$k.log" | tail -1 || true)
        printf 'run.sh: [%s] node %d: %s\n' "$1" "$k" "${line:-(no summary line in node$k.log)}"
    done
}

# Field $3 of node $2's summary line in scenario $1 (empty without one):
# `relink: node summary: server_id=1 sessions=12 resumes=340 unknown_session=0 ...`.
node_field() {
    { grep 'node summary:' "$TMP/$1/node$2.log" || true; } | tail -1 |
        { grep -o " $3=[0-9a-z]*" || true; } | cut -d= -f2
}

# The sum of field $2 over the three nodes' summary lines of scenario $1
# ("" when a node printed none).
nodes_sum() {
    local k v sum=0
    for k in 1 2 3; do
        v=$(node_field "$1" "$k" "$2")
        [ -n "$v" ] || { echo ""; return; }
        sum=$((sum + v))
    done
    echo "$sum"
}

# Run the clients (extra arguments are passed on, after the defaults) in
# the background, output to $dir/clients.out; sets CL_PID.
start_clients() {
    local dir="$TMP/$1"
    shift
    "$CLIENTS_BIN" run --target "$FRONT" --server-key "$PUBKEY" --clients "$CLIENTS" \
        --mib "$MIB" --cut-ms "$CUT_MS" --rate "$RATE" --seed "$SEED" --epoch-zero "$T0" \
        "$@" >"$dir/clients.out" 2>&1 &
    CL_PID=$!
    PIDS+=($!)
}

# Wait for the clients; print their lines; returns their exit status.
finish_clients() {
    local dir="$TMP/$1" rc=0
    wait "$CL_PID" || rc=$?
    forget "$CL_PID"
    # Sessions that ended ok only with --all-sessions.
    if [ "$ALL_SESSIONS" = 1 ]; then
        sed "s/^/run.sh: [$1] /" "$dir/clients.out"
    else
        { grep -v ': ok$' "$dir/clients.out" || true; } | sed "s/^/run.sh: [$1] /"
    fi
    return "$rc"
}

# Wait (at most $2 s) for the clients' mark line in scenario $1.
wait_mark() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        grep -q 'fleet: mark:' "$TMP/$1/clients.out" 2>/dev/null && return 0
        kill -0 "$CL_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

total() { { grep -o " $2=[0-9.]*" "$TMP/$1/clients.out" || true; } | tail -1 | cut -d= -f2; }

FAILED=()
pass() { say "[$1] PASS ($(( SECONDS - $2 )) s)"; }
fail() { say "[$1] FAIL: $2"; FAILED+=("$1"); }

scenario_normal() {
    local s=normal t0=$SECONDS rc=0
    SCENARIO_FLAGS=()
    start_fleet $s
    start_clients $s
    finish_clients $s || rc=$?
    report_nodes $s
    stop_fleet $s
    [ "$rc" = 0 ] || { fail $s "the clients exited $rc"; return; }
    local unknown misrouted resumes
    unknown=$(nodes_sum $s unknown_session)
    misrouted=$(nodes_sum $s misrouted)
    resumes=$(nodes_sum $s resumes)
    if [ -z "$unknown" ]; then
        say "[$s] (no node summary lines: the nodes' counters are not checked)"
    else
        say "[$s] nodes: $resumes resumes served, $unknown unknown-session answers, $misrouted misrouted"
        [ "$unknown" = 0 ] && [ "$misrouted" = 0 ] ||
            { fail $s "a resume reached another node than its own"; return; }
        [ "$resumes" -gt 0 ] || { fail $s "no resume at all: the relay did not cut"; return; }
    fi
    pass $s $t0
}

# How long node 3 stays dead in the kill scenario before it is restarted.
RESTART_AFTER=2
# The bound on a lost session's end after the kill: kill (restart: the
# restarted node answers at once, plus the client's backoff, at most 5 s)
# and loss (resume timeout 10 s + client idle timeout 15 s + backoff).
KILL_WITHIN=30
LOSS_WITHIN=45

# kill (node 3 restarted) and loss (node 3 gone for good): $1 = the
# scenario, $2 = 1 to restart node 3.
node3_lost() {
    local s=$1 restart=$2 t0=$SECONDS rc=0 within=$KILL_WITHIN reason=SessionUnknown
    local extra=(--node-returns)
    SCENARIO_FLAGS=()
    if [ "$restart" = 0 ]; then
        within=$LOSS_WITHIN
        reason=Expired
        extra=()
        SCENARIO_FLAGS=(--resume-timeout 10)
    fi
    start_fleet $s
    start_clients $s --mark-at 30 --expect-lost 3 --reopen --lost-within "$within" "${extra[@]}"
    wait_mark $s 600 || { finish_clients $s || true; stop_fleet $s; fail $s "no 30% mark"; return; }
    say "[$s] 30% echoed: SIGKILL node 3 (pid ${NODE_PID[3]}) at $(now_rel) s"
    kill -KILL "${NODE_PID[3]}"
    wait "${NODE_PID[3]}" 2>/dev/null || true
    forget "${NODE_PID[3]}"
    if [ "$restart" = 1 ]; then
        sleep "$RESTART_AFTER"
        echo "run.sh: --- node 3 restarted at $(now_rel) s ---" >>"$TMP/$s/node3.log"
        start_node $s 3 "${NODE_ADDR[3]}"
        # Its second `listening on` line (the log is appended to).
        local i
        for ((i = 0; i < 100; i++)); do
            [ "$(grep -c 'listening on ' "$TMP/$s/node3.log")" -ge 2 ] && break
            kill -0 "${NODE_PID[3]}" 2>/dev/null || break
            sleep 0.05
        done
        [ "$(grep -c 'listening on ' "$TMP/$s/node3.log")" -ge 2 ] ||
            say "[$s] WARNING: the restarted node 3 does not listen on ${NODE_ADDR[3]} ($TMP/$s/node3.log)"
        say "[$s] node 3 restarted (pid ${NODE_PID[3]}, --server-id 3, same key and address ${NODE_ADDR[3]}) at $(now_rel) s"
    fi
    finish_clients $s || rc=$?
    report_nodes $s
    stop_fleet $s
    [ "$rc" = 0 ] || { fail $s "the clients exited $rc"; return; }
    local unknown expired lost reopened after
    unknown=$(total $s session_unknown)
    expired=$(total $s expired)
    reopened=$(total $s reopened)
    after=$(total $s lost_after_mark_secs)
    if [ "$restart" = 1 ]; then lost=$unknown; else lost=$expired; fi
    say "[$s] ${unknown:-0} session(s) ended with SessionUnknown, ${expired:-0} with Expired, $reopened reopened; the last lost one ended ${after:-?} s after the mark (bound $within s)"
    [ "${lost:-0}" -gt 0 ] || { fail $s "no session of node 3 ended with the typed error $reason"; return; }
    [ $((unknown + expired)) = "$lost" ] ||
        { fail $s "sessions of node 3 ended with another reason than $reason"; return; }
    [ "$lost" = "$reopened" ] || { fail $s "$lost lost but $reopened reopened"; return; }
    local u1 u2 u3 m3
    u1=$(node_field $s 1 unknown_session)
    u2=$(node_field $s 2 unknown_session)
    if [ -n "$u1" ] && [ -n "$u2" ]; then
        say "[$s] unknown-session answers of nodes 1/2 (unauthenticated: node 3's ids, redispatched while it was down): $u1 and $u2"
    fi
    if [ "$restart" = 1 ]; then
        u3=$(node_field $s 3 unknown_session)
        m3=$(node_field $s 3 misrouted)
        if [ -n "$u3" ]; then
            say "[$s] the restarted node 3 answered $u3 resume(s) of its old sessions (authenticated; misrouted $m3)"
            [ "$u3" -ge "$lost" ] ||
                { fail $s "the restarted node 3 answered fewer resumes ($u3) than sessions lost ($lost)"; return; }
        fi
    fi
    pass $s $t0
}

scenario_kill() { node3_lost kill 1; }
scenario_loss() { node3_lost loss 0; }

scenario_drain() {
    local s=drain t0=$SECONDS rc=0 node_rc=0
    SCENARIO_FLAGS=()
    start_fleet $s
    start_clients $s --mark-at 30
    wait_mark $s 600 || { finish_clients $s || true; stop_fleet $s; fail $s "no 30% mark"; return; }
    local pid=${NODE_PID[2]}
    say "[$s] 30% echoed: HAProxy: set server relink_nodes/node2 state drain; SIGTERM node 2 (pid $pid) at $(now_rel) s"
    admin "set server relink_nodes/node2 state drain" >/dev/null
    [ "$HAS_DRAIN" = 1 ] ||
        say "[$s] WARNING: relink serve-forward has no --drain-timeout: SIGTERM aborts its sessions"
    local td=$SECONDS
    kill -TERM "$pid"
    # Late clients, started after the drain: none of their sessions may
    # land on node 2.
    local late_rc=0
    "$CLIENTS_BIN" run --target "$FRONT" --server-key "$PUBKEY" --clients 6 --mib 1 \
        --cut-ms "$CUT_MS" --seed $((SEED + 1000)) --avoid-node 2 --epoch-zero "$T0" \
        >"$TMP/$s/late.out" 2>&1 &
    local late=$!
    PIDS+=($late)
    finish_clients $s || rc=$?
    wait "$late" || late_rc=$?
    forget "$late"
    { grep -v ': ok$' "$TMP/$s/late.out" || true; } | sed "s/^/run.sh: [$s] late: /"
    # The node exits once its sessions ended (at the latest at its deadline).
    if ! timeout $((DRAIN_TIMEOUT + 15)) tail --pid="$pid" -f /dev/null; then
        say "[$s] node 2 still running $((DRAIN_TIMEOUT + 15)) s after the clients ended: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" || node_rc=$?
    forget "$pid"
    say "[$s] node 2 exited with status $node_rc, $((SECONDS - td)) s after SIGTERM"
    report_nodes $s
    stop_fleet $s
    [ "$rc" = 0 ] || { fail $s "the clients exited $rc"; return; }
    [ "$late_rc" = 0 ] || { fail $s "the late clients exited $late_rc"; return; }
    if [ "$node_rc" != 0 ]; then
        local aborted
        aborted=$(node_field $s 2 aborted_at_drain)
        # Which sessions, and how their clients saw them end.
        local id
        for id in $(grep 'shutting down' "$TMP/$s/node2.log" | grep -o 'session=[0-9a-f]*' | cut -d= -f2 | sort -u); do
            say "[$s] aborted at the deadline: session $id; its client: $(grep -h " id $id " "$TMP/$s/clients.out" | sed 's/^fleet: //' || echo '(not found)')"
            say "[$s]   node 2's last line about it before the drain: $(grep "session=$id" "$TMP/$s/node2.log" | grep -v 'shutting down' | tail -1 | cut -c1-160)"
        done
        fail $s "the drained node exited $node_rc: it aborted ${aborted:-?} session(s) at its drain deadline ($DRAIN_TIMEOUT s) although every client finished exact"
        return
    fi
    # Sessions the drain left closed both ways but with the client's last
    # acknowledgement missing (a cut took it): each client must have ended
    # ok, holding every byte.
    local unconfirmed line
    unconfirmed=$(node_field $s 2 unconfirmed_at_drain)
    for id in $(grep -o 'drain: session [0-9a-f]*' "$TMP/$s/node2.log" | awk '{print $3}' | sort -u); do
        line=$(grep -h " id $id " "$TMP/$s/clients.out" | sed 's/^fleet: //' || true)
        say "[$s] left unconfirmed by the drain: session $id; its client: ${line:-(not found)}"
        case "$line" in
            *": ok") ;;
            *) fail $s "session $id was left unconfirmed by the drain and its client did not end ok"; return ;;
        esac
    done
    say "[$s] node 2: ${unconfirmed:-0} session(s) left with the client's last acknowledgement missing, every one of their clients ended ok"
    pass $s $t0
}

IFS=, read -ra LIST <<<"$SCENARIOS"
for s in "${LIST[@]}"; do
    case "$s" in
        normal|kill|loss|drain) "scenario_$s" ;;
        *) die "unknown scenario $s" ;;
    esac
done

say "done in $((SECONDS - START)) s (build included); ${CLIENTS} clients x ${MIB} MiB each way per scenario"
if [ "${#FAILED[@]}" -gt 0 ]; then
    say "FAILED: ${FAILED[*]}"
    exit 1
fi
say "all scenarios passed: ${LIST[*]}"
