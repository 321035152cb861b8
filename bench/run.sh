#!/usr/bin/env bash
# Compare rsmtpd with OpenSMTPD and Postfix (issue 8): the same cases against
# each server in turn, on loopback, with Postfix's smtp-source as the client
# and smtp-sink as the relay target; the machine's limits measured in the
# same run. Run bench/fetch.sh first (it unpacks the Debian packages).
#
#   bench/run.sh                                  # full run: see bench/README.md
#   BENCH_SCALE=0.1 BENCH_IDLE=1000 BENCH_RUNS=1 bench/run.sh   # a quick check
#   BENCH_SERVERS=rsmtpd bench/run.sh             # one server only
#
# Knobs: BENCH_SERVERS ("rsmtpd opensmtpd postfix"), BENCH_SCALE (1: the
# issue's message counts), BENCH_OPENSMTPD_SCALE (0.2: OpenSMTPD's share of
# them in its two relaying cases), BENCH_IDLE (idle connections, 10000),
# BENCH_RUNS (3), BENCH_SESSIONS (20), BENCH_SIZE (4096 bytes),
# BENCH_SOURCE_OPTS (extra smtp-source flags), BENCH_TIMEOUT (seconds one
# wait may take, 300), BENCH_REPORT (docs/performance.md), BENCH_KEEP (set:
# keep the servers' directories and logs under bench/.cache/tmp),
# BENCH_OPENSMTPD_NODELAY (1: TCP_NODELAY on OpenSMTPD's outgoing
# connections, an experiment, see bench/README.md).
# Writes the raw numbers to bench/results.tsv (and the run's description to
# bench/results.json), the summary to stdout and bench/results.md, and the
# report (bench/report.py) to BENCH_REPORT.
set -euo pipefail

started=$SECONDS
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/.." && pwd)"
cache="$here/.cache"
root="$cache/root"
sbin="$root/usr/sbin"
export LD_LIBRARY_PATH="$root/usr/lib/postfix${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

servers="${BENCH_SERVERS:-rsmtpd opensmtpd postfix}"
# The issue's counts times BENCH_SCALE.
scale="${BENCH_SCALE:-1}"
# OpenSMTPD relays at 50-80 messages/s here (its MTA waits for delayed ACKs,
# docs/performance.md): at the issue's counts its two relaying cases alone
# would take 5 minutes a round. It relays a fifth of the messages; its rate
# is set by each transaction's wait, not by the count.
opensmtpd_scale="${BENCH_OPENSMTPD_SCALE:-0.2}"
runs="${BENCH_RUNS:-3}"
sessions="${BENCH_SESSIONS:-20}"
size="${BENCH_SIZE:-4096}"
source_opts="${BENCH_SOURCE_OPTS:-}"
case_timeout="${BENCH_TIMEOUT:-300}"
report="${BENCH_REPORT:-$top/docs/performance.md}"

scaled() { python3 -c "import sys; print(max(int(sys.argv[2]), int(float(sys.argv[1]) * int(sys.argv[3]))))" "$scale" "$1" "$2"; }
n_limit="$(scaled 100 10000)"
n_relay="$(scaled 100 10000)"
n_maildir="$(scaled 50 5000)"
n_fsync="$(scaled 100 2000)"
n_many="$(scaled 200 6000)"
n_idle="${BENCH_IDLE:-10000}"
# fraction N: OpenSMTPD's count for a relaying case of N messages.
fraction() { python3 -c "import sys; print(max(100, int(float(sys.argv[1]) * int(sys.argv[2]))))" "$opensmtpd_scale" "$1"; }
many_sessions=200
many_size=512

for tool in smtp-source smtp-sink; do
    [[ -x "$sbin/$tool" ]] || { echo "run: $sbin/$tool missing; run bench/fetch.sh first" >&2; exit 1; }
done

# --- servers and users ------------------------------------------------------

is_root=no
[[ "$(id -u)" == 0 ]] && is_root=yes
selected=()
for s in $servers; do
    case "$s" in
        rsmtpd) ;;
        opensmtpd)
            [[ -x "$sbin/smtpd" ]] || { echo "run: $sbin/smtpd missing; run bench/fetch.sh" >&2; exit 1; }
            if [[ "$is_root" != yes ]]; then
                echo "run: skipping OpenSMTPD: it needs root (its own users, a private mount namespace)" >&2
                continue
            fi ;;
        postfix)
            [[ -x "$root/usr/lib/postfix/sbin/master" ]] || { echo "run: Postfix's master missing; run bench/fetch.sh" >&2; exit 1; }
            if [[ "$is_root" != yes ]]; then
                echo "run: skipping Postfix: its master must start as root" >&2
                continue
            fi ;;
        *) echo "run: unknown server $s (rsmtpd, opensmtpd, postfix)" >&2; exit 1 ;;
    esac
    selected+=("$s")
done
((${#selected[@]})) || { echo "run: no server to measure" >&2; exit 1; }
has() { [[ " ${selected[*]} " == *" $1 "* ]]; }

# System users the daemons drop to, created when missing (as root only):
# Postfix's mail_owner and setgid group, and the users Debian's OpenSMTPD
# is built with (it does not use rsmtpd's _smtpd/_smtpq).
add_system_user() {
    getent passwd "$1" >/dev/null ||
        useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$1"
}
if has postfix; then
    add_system_user postfix
    getent group postdrop >/dev/null || groupadd --system postdrop
fi
if has opensmtpd; then
    add_system_user opensmtpd
    add_system_user opensmtpq
fi

if [[ "$is_root" == yes ]]; then
    sink_user=(-u nobody)
    # Local deliveries run as this user, for every server.
    deliver_user=nobody
else
    sink_user=()
    deliver_user="$(id -un)"
fi
deliver_uid="$(id -u "$deliver_user")"
deliver_gid="$(id -g "$deliver_user")"

if has rsmtpd; then
    echo "run: building rsmtpd (release)" >&2
    build_started=$SECONDS
    (cd "$top" && cargo build --release --quiet --bin smtpd)
    build_seconds=$((SECONDS - build_started))
    target_dir="$(cd "$top" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    smtpd="$target_dir/release/smtpd"
    [[ -x "$smtpd" ]] || { echo "run: $smtpd not built" >&2; exit 1; }
fi

# OpenSMTPD listens with a backlog of 5, compiled in; the shim raises it
# (bench/opensmtpd/listen-backlog.c).
backlog_shim=""
if has opensmtpd; then
    shim="$cache/listen-backlog.so"
    if [[ ! -e "$shim" || "$here/opensmtpd/listen-backlog.c" -nt "$shim" ]]; then
        if command -v cc >/dev/null; then
            cc -shared -fPIC -O2 -o "$shim" "$here/opensmtpd/listen-backlog.c" -ldl
        else
            echo "run: no C compiler: OpenSMTPD keeps its listen backlog of 5" >&2
        fi
    fi
    if [[ -e "$shim" ]]; then backlog_shim="$shim"; fi
fi

mkdir -p "$cache/tmp"
work="$(mktemp -d "$cache/tmp/run.XXXXXX")"
chmod 755 "$work"
if [[ -n "${smtpd:-}" ]]; then ln -s "$smtpd" "$work/smtpctl"; fi

# Everything started in the background is recorded here and stopped on exit.
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.5
    for p in "${pids[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true
    done
    if [[ -n "${BENCH_KEEP:-}" ]]; then
        echo "run: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -----------------------------------------------------------------

now() { date +%s.%N; }
# say MESSAGE: progress on stderr, with the round and the minutes elapsed.
say() { printf 'run: [%d:%02d] round %s/%s: %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$round" "$runs" "$1" >&2; }
# rate COUNT START END -> messages per second, one decimal
rate() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$1" "$2" "$3"; }
free_port() { python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
kib_to_mib() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / 1024))" "$1"; }
# cpu_ms START_S END_S COUNT -> milliseconds of CPU per message
cpu_ms() { python3 -c "import sys; print('%.3f' % ((float(sys.argv[2]) - float(sys.argv[1])) * 1000 / int(sys.argv[3])))" "$1" "$2" "$3"; }
tree_cpu() { python3 "$here/proctree.py" cpu "$1"; }

results="$here/results.tsv"
printf 'server\tcase\tmetric\trun\tvalue\n' >"$results"
# record SERVER CASE METRIC RUN VALUE
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 50 ms.
wait_for() {
    local limit="$1" what="$2"; shift 2
    local deadline=$((SECONDS + limit))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            echo "run: timed out after ${limit}s waiting for $what" >&2
            return 1
        fi
        sleep 0.05
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_sink PORT OUTFILE: smtp-sink with running counters into OUTFILE.
# Sets sink_pid.
start_sink() {
    setsid timeout "$((case_timeout + 120))" "$sbin/smtp-sink" "${sink_user[@]}" -c "127.0.0.1:$1" 1024 >"$2" 2>&1 &
    sink_pid=$!
    pids+=("$sink_pid")
    wait_for 10 "smtp-sink on port $1" port_open "$1"
}
# The last complete "mesg=N" counter smtp-sink printed (each record ends
# in \r; read skips a final one still being written).
sink_count() {
    local line c=""
    while IFS= read -r line; do
        [[ "$line" =~ mesg=([0-9]+) ]] && c="${BASH_REMATCH[1]}"
    done < <(tail -c 300 "$1" | tr '\r' '\n')
    echo "$c"
}
sink_has() { local c; c="$(sink_count "$1")"; [[ -n "$c" && "$c" -ge "$2" ]]; }
# group_alive PGID: a process of group PGID still runs (zombies aside).
group_alive() { ps -o stat= -g "$1" 2>/dev/null | grep -qv '^Z'; }
# stop_pid PID: SIGTERM to PID (every server's parent stops its children;
# Postfix's master signals its process group and exits at once), then
# once the group is gone or after 5 s, SIGKILL to what is left of it.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        group_alive "$1" || break
        sleep 0.05
    done
    kill -KILL -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    forget "$1"
}
# Drop PID from the list cleanup stops (it is gone; its number may be reused).
forget() {
    local p keep=()
    for p in "${pids[@]}"; do [[ "$p" == "$1" ]] || keep+=("$p"); done
    pids=("${keep[@]}")
}

# run_source PORT COUNT [SESSIONS [SIZE [RECIPIENT]]]: smtp-source, bounded.
run_source() {
    # shellcheck disable=SC2086
    timeout "$case_timeout" "$sbin/smtp-source" $source_opts -s "${3:-$sessions}" -m "$2" \
        -l "${4:-$size}" -M bench.example.org -f bench@example.org -t "${5:-sink@example.net}" \
        "127.0.0.1:$1"
}

# Sample the summed PSS (KiB) of server tree $1 into file $2 (the maximum
# seen) until file $3 exists. Sets sampler_pid.
start_pss_sampler() {
    python3 "$here/proctree.py" pss "$1" "$2" "$3" "$((case_timeout * 2))" &
    sampler_pid=$!
    pids+=("$sampler_pid")
}
# stop_pss_sampler OUT STOP: prints the peak in MiB.
stop_pss_sampler() {
    touch "$2"
    wait "$sampler_pid" || true
    forget "$sampler_pid"
    kib_to_mib "$(cat "$1" 2>/dev/null || echo 0)"
}

# no_files DIR...: none of the directories holds a file (a drained queue).
no_files() { [[ -z "$(find "$@" -type f -print -quit 2>/dev/null)" ]]; }
maildir_full() { [[ "$(find "$1" -maxdepth 1 -type f | wc -l)" -ge "$2" ]]; }

# --- the servers ---------------------------------------------------------------
# SERVER_start CASE SINKPORT starts the server configured for CASE (relay,
# many, maildir, idle; relay cases send everything to 127.0.0.1:SINKPORT)
# and waits until it takes connections. It sets srv_pid (the root of the
# server's process tree, leader of its own session), srv_port, srv_dir and
# srv_maildir (the Maildir local deliveries go to). SERVER_drained succeeds
# once the server's queue is empty. Every server is stopped with stop_pid.

new_server_dir() { # SERVER CASE
    srv_dir="$work/$1-$2-$round"
    mkdir -p "$srv_dir"
    chmod 755 "$srv_dir"
    srv_port="$(free_port)"
    srv_maildir="$srv_dir/Maildir"
    mkdir -p "$srv_maildir"/{cur,new,tmp}
    chown -R "$deliver_user" "$srv_maildir"
}

rsmtpd_start() {
    new_server_dir rsmtpd "$1"
    local conf="$srv_dir/smtpd.conf" limits="" action
    case "$1" in
        many) limits="smtp limit max-sessions 1000 max-sessions-per-address 1000" ;;
        idle) limits="smtp limit max-sessions 20000 max-sessions-per-address 20000" ;;
    esac
    case "$1" in
        relay|many) action="action \"out\" relay host \"smtp://127.0.0.1:$2\"" ;;
        *) action="action \"out\" maildir \"$srv_maildir\" user \"$deliver_user\"" ;;
    esac
    cat >"$conf" <<EOF
queue path "$srv_dir/spool"
$limits
listen on 127.0.0.1 port $srv_port
$action
match from any for any action "out"
EOF
    setsid "$smtpd" -d -f "$conf" </dev/null >/dev/null 2>"$srv_dir/log" &
    srv_pid=$!
    pids+=("$srv_pid")
    rsmtpd_conf="$conf"
    if ! wait_for 30 "rsmtpd ready" grep -qs 'smtpd: ready' "$srv_dir/log"; then
        cat "$srv_dir/log" >&2
        return 1
    fi
}
rsmtpd_drained() {
    local q
    q="$(RSMTPD_CONFIG="$rsmtpd_conf" "$work/smtpctl" show queue 2>/dev/null)" || return 1
    [[ -z "$q" ]]
}

opensmtpd_start() {
    new_server_dir opensmtpd "$1"
    local conf="$srv_dir/smtpd.conf" action
    case "$1" in
        relay|many) action="action \"out\" relay host \"smtp://127.0.0.1:$2\"" ;;
        *) action="action \"out\" maildir \"$srv_maildir\" user \"$deliver_user\"" ;;
    esac
    # The MTA's default connection delays (5 s between two connections on
    # a route, 2 s per relay, 3 s after a disconnect before reconnecting)
    # throttle relaying to one host; rsmtpd has no such delays. Connection
    # counts (5 per route) and 100 messages per connection stay at the
    # defaults, which rsmtpd shares.
    cat >"$conf" <<EOF
listen on 127.0.0.1 port $srv_port
mta limit conn-delay-route 0 conn-delay-relay 0 reconn-delay-route 0
$action
match from any for any action "out"
EOF
    local env=()
    [[ -n "$backlog_shim" ]] && env=(LD_PRELOAD="$backlog_shim" BENCH_LISTEN_BACKLOG=1024
        BENCH_TCP_NODELAY="${BENCH_OPENSMTPD_NODELAY:-0}")
    setsid unshare -m --propagation private "$here/opensmtpd/ns-exec.sh" "$srv_dir/ns" "$root" \
        env "${env[@]}" "$sbin/smtpd" -d -f "$conf" </dev/null >/dev/null 2>"$srv_dir/log" &
    srv_pid=$!
    pids+=("$srv_pid")
    if ! wait_for 30 "OpenSMTPD on port $srv_port" port_open "$srv_port"; then
        cat "$srv_dir/log" >&2
        return 1
    fi
}
opensmtpd_drained() { no_files "$srv_dir/ns/spool/smtpd/queue" "$srv_dir/ns/spool/smtpd/incoming"; }

postfix_start() {
    new_server_dir postfix "$1"
    local conf="$srv_dir/conf" relay="#" maildir="#" d
    case "$1" in
        relay|many) relay="" ;;
        *) maildir="" ;;
    esac
    mkdir -p "$conf"
    sed -e "s|{root}|$root|g; s|{dir}|$srv_dir|g; s|{sinkport}|$2|g" \
        -e "s|{uid}|$deliver_uid|g; s|{gid}|$deliver_gid|g" \
        -e "s|^{relay}|$relay|; s|^{maildir}|$maildir|" \
        "$here/postfix/main.cf" >"$conf/main.cf"
    sed -e "s|{port}|$srv_port|g" "$here/postfix/master.cf" >"$conf/master.cf"
    # The queue as postfix-files lays it out (what `postfix check` would
    # create).
    for d in active bounce corrupt defer deferred flush hold incoming private saved trace; do
        install -d -o postfix -m 700 "$srv_dir/queue/$d"
    done
    install -d -o postfix -g postdrop -m 730 "$srv_dir/queue/maildrop"
    install -d -o postfix -g postdrop -m 710 "$srv_dir/queue/public"
    install -d -m 755 "$srv_dir/queue/pid"
    install -d -o postfix -m 700 "$srv_dir/data"
    setsid "$root/usr/lib/postfix/sbin/master" -d -c "$conf" </dev/null >/dev/null 2>"$srv_dir/log" &
    srv_pid=$!
    pids+=("$srv_pid")
    if ! wait_for 30 "Postfix on port $srv_port" port_open "$srv_port"; then
        cat "$srv_dir/log" "$srv_dir/maillog" >&2 2>/dev/null || true
        return 1
    fi
}
postfix_drained() { no_files "$srv_dir/queue/incoming" "$srv_dir/queue/active" "$srv_dir/queue/deferred"; }

# --- the cases -------------------------------------------------------------------
# Each runs in this shell (so cleanup sees every pid) and records its
# numbers with `record`; a case that fails or times out records what it
# has and the run goes on.

case_limit() { # COUNT SESSIONS SIZE METRIC
    local port out t0 t1
    port="$(free_port)"
    out="$work/sink-limit.out"
    start_sink "$port" "$out"
    t0="$(now)"
    if run_source "$port" "$1" "$2" "$3" && wait_for 10 "smtp-sink to count $1" sink_has "$out" "$1"; then
        t1="$(now)"
        record machine limit "$4" "$round" "$(rate "$1" "$t0" "$t1")"
    fi
    stop_pid "$sink_pid"
}

case_fsync() {
    record machine disk fsync "$round" "$(python3 - "$work/fsync.dat" "$n_fsync" <<'PY'
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
buf = b"x" * 4096
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
t0 = time.monotonic()
for _ in range(n):
    os.write(fd, buf)
    os.fsync(fd)
t1 = time.monotonic()
os.close(fd)
os.unlink(path)
print("%.1f" % (n / (t1 - t0)))
PY
)"
}

# case_load SERVER CASE COUNT SESSIONS SIZE: relay (to a sink) or maildir;
# records accept and end-to-end rates, peak PSS and CPU ms per message.
case_load() {
    local srv="$1" kind="$2" n="$3" s="$4" l="$5"
    local sinkport="" out="" t0 t1 t2 c0 c1 pss stop ok=yes done_cmd rcpt
    if [[ "$kind" != maildir ]]; then
        sinkport="$(free_port)"
        out="$work/sink-$srv-$kind-$round.out"
        start_sink "$sinkport" "$out"
    fi
    if ! "${srv}_start" "$kind" "$sinkport"; then
        echo "run: $srv did not start for $kind" >&2
        [[ -n "$out" ]] && stop_pid "$sink_pid"
        return 0
    fi
    # Local deliveries go to a user that exists: OpenSMTPD rejects a
    # recipient that is no user (the others take any).
    rcpt=sink@example.net
    if [[ "$kind" == maildir ]]; then
        rcpt="$deliver_user@example.net"
        done_cmd=(maildir_full "$srv_maildir/new" "$n")
    else
        done_cmd=(sink_has "$out" "$n")
    fi
    stop="$srv_dir.pss-stop"
    start_pss_sampler "$srv_pid" "$srv_dir.pss" "$stop"
    c0="$(tree_cpu "$srv_pid")"
    t0="$(now)"
    run_source "$srv_port" "$n" "$s" "$l" "$rcpt" || { echo "run: smtp-source failed against $srv ($kind)" >&2; ok=no; }
    t1="$(now)"
    [[ "$ok" == yes ]] && record "$srv" "$kind" accept "$round" "$(rate "$n" "$t0" "$t1")"
    if [[ "$ok" == yes ]] && wait_for "$case_timeout" "$n messages through $srv ($kind)" "${done_cmd[@]}"; then
        t2="$(now)"
        record "$srv" "$kind" e2e "$round" "$(rate "$n" "$t0" "$t2")"
        # The CPU the server spends after the last delivery (removing
        # queue files) belongs to the case too.
        wait_for 30 "$srv's queue to drain" "${srv}_drained" || true
        c1="$(tree_cpu "$srv_pid")"
        record "$srv" "$kind" cpu "$round" "$(cpu_ms "$c0" "$c1" "$n")"
    fi
    pss="$(stop_pss_sampler "$srv_dir.pss" "$stop")"
    record "$srv" "$kind" pss "$round" "$pss"
    stop_pid "$srv_pid"
    [[ -n "$out" ]] && stop_pid "$sink_pid"
    return 0
}

# case_idle SERVER: $n_idle connections opened and greeted, none saying
# anything; the peak summed PSS meanwhile and how many were greeted.
case_idle() {
    local srv="$1" stop greeted pss
    if ! "${srv}_start" idle ""; then
        echo "run: $srv did not start for idle" >&2
        return 0
    fi
    stop="$srv_dir.pss-stop"
    start_pss_sampler "$srv_pid" "$srv_dir.pss" "$stop"
    greeted="$(timeout "$case_timeout" python3 "$here/idle.py" "$srv_port" "$n_idle" 2)" || greeted=""
    pss="$(stop_pss_sampler "$srv_dir.pss" "$stop")"
    record "$srv" idle pss "$round" "$pss"
    [[ -n "$greeted" ]] && record "$srv" idle greeted "$round" "$greeted"
    stop_pid "$srv_pid"
    return 0
}

# --- run ---------------------------------------------------------------------------

# The idle case holds thousands of sockets: the servers inherit this limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
for round in $(seq 1 "$runs"); do
    say "limit ($n_limit messages, $sessions sessions)"
    case_limit "$n_limit" "$sessions" "$size" relay
    say "limit ($n_many messages, $many_sessions sessions)"
    case_limit "$n_many" "$many_sessions" "$many_size" many
    say "fsync ($n_fsync)"
    case_fsync
    # Each round starts with the next server: what one server leaves
    # behind (ext4 skips inodes freed in the last minutes when it
    # allocates, docs/performance.md) does not always weigh on the same one.
    order=()
    for i in "${!selected[@]}"; do
        order+=("${selected[$(( (i + round - 1) % ${#selected[@]} ))]}")
    done
    for srv in "${order[@]}"; do
        n_r="$n_relay" n_m="$n_many"
        if [[ "$srv" == opensmtpd ]]; then
            n_r="$(fraction "$n_relay")" n_m="$(fraction "$n_many")"
        fi
        say "$srv relay ($n_r messages)"
        case_load "$srv" relay "$n_r" "$sessions" "$size"
        say "$srv maildir ($n_maildir messages)"
        case_load "$srv" maildir "$n_maildir" "$sessions" "$size"
        say "$srv, $many_sessions sessions ($n_m messages of $many_size B)"
        case_load "$srv" many "$n_m" "$many_sessions" "$many_size"
        say "$srv, $n_idle idle connections"
        case_idle "$srv"
    done
done

fs="$(df -PT "$cache" | awk 'NR == 2 { print $2 }')"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
osmtpd_version="$(dpkg-deb -f "$(compgen -G "$cache/debs/opensmtpd_*.deb" | head -1)" Version 2>/dev/null || echo '?')"
postfix_version="$(dpkg-deb -f "$(compgen -G "$cache/debs/postfix_*.deb" | head -1)" Version 2>/dev/null || echo '?')"
# The run's description, for the report (and to redo it with report.py).
python3 -c 'import json, sys; json.dump(dict(a.split("=", 1) for a in sys.argv[2:]), open(sys.argv[1], "w"), indent=1)' \
    "$here/results.json" \
    "machine=$(nproc) cores ($cpu), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr), bench/.cache on $fs" \
    "date=$(date -u +%Y-%m-%dT%H:%MZ)" \
    "commit=$(cd "$top" && git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "versions=OpenSMTPD $osmtpd_version, Postfix $postfix_version (Debian packages)" \
    "counts=relay $n_relay × $size B over $sessions sessions; maildir $n_maildir × $size B over $sessions sessions; $n_many × $many_size B over $many_sessions sessions (OpenSMTPD: relay $(fraction "$n_relay"), 200 sessions $(fraction "$n_many")); $n_idle idle connections; fsync $n_fsync; BENCH_SCALE=$scale${source_opts:+; smtp-source flags $source_opts}" \
    "runs=$runs" \
    "elapsed=$((SECONDS - started))" \
    "build=${build_seconds:-0}"
python3 "$here/report.py" "$results" "$report" --meta "$here/results.json" --summary "$here/results.md"
cat "$here/results.md"
