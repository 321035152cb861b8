#!/usr/bin/env bash
# Measure rsmtpd against the machine's limits with Postfix's smtp-source and
# smtp-sink (issue 8, first cut: rsmtpd only). Run bench/fetch.sh first.
#
#   bench/run.sh                   # full run, a few minutes
#   BENCH_SCALE=0.1 bench/run.sh   # a tenth of the message counts, for a quick check
#
# Other knobs: BENCH_RUNS (3), BENCH_SESSIONS (20), BENCH_SIZE (4096 bytes),
# BENCH_SOURCE_OPTS (extra smtp-source flags, e.g. -d to reuse connections),
# BENCH_TIMEOUT (seconds one case may take, 300).
# Writes a markdown table to stdout and to bench/results.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
top="$(cd "$here/.." && pwd)"
cache="$here/.cache"
root="$cache/root"
sbin="$root/usr/sbin"
export LD_LIBRARY_PATH="$root/usr/lib/postfix${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

scale="${BENCH_SCALE:-1}"
runs="${BENCH_RUNS:-3}"
sessions="${BENCH_SESSIONS:-20}"
size="${BENCH_SIZE:-4096}"
source_opts="${BENCH_SOURCE_OPTS:-}"
case_timeout="${BENCH_TIMEOUT:-300}"

scaled() { python3 -c "import sys; print(max(int(sys.argv[2]), int(float(sys.argv[1]) * int(sys.argv[3]))))" "$scale" "$1" "$2"; }
n_limit="$(scaled 100 10000)"
n_relay="$(scaled 100 10000)"
n_maildir="$(scaled 50 5000)"
n_fsync="$(scaled 100 2000)"
n_many="$(scaled 200 6000)"
n_idle="$(scaled 100 10000)"

for tool in smtp-source smtp-sink; do
    [[ -x "$sbin/$tool" ]] || { echo "run: $sbin/$tool missing; run bench/fetch.sh first" >&2; exit 1; }
done

if [[ "$(id -u)" == 0 ]]; then sink_user=(-u nobody); else sink_user=(); fi
daemon_user="$(id -un)"

echo "run: building rsmtpd (release)" >&2
(cd "$top" && cargo build --release --quiet --bin smtpd)
target_dir="$(cd "$top" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
smtpd="$target_dir/release/smtpd"
[[ -x "$smtpd" ]] || { echo "run: $smtpd not built" >&2; exit 1; }

mkdir -p "$cache/tmp"
work="$(mktemp -d "$cache/tmp/run.XXXXXX")"
chmod 755 "$work"
ln -s "$smtpd" "$work/smtpctl"

# Everything started in the background is recorded here and stopped on exit.
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.3
    for p in "${pids[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
# rate COUNT START END -> messages per second, one decimal
rate() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / (float(sys.argv[3]) - float(sys.argv[2]))))" "$1" "$2" "$3"; }
median() { printf '%s\n' "$@" | python3 -c "import sys, statistics; print(statistics.median(float(l) for l in sys.stdin if l.strip()))"; }
free_port() { python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }

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
    setsid timeout "$((case_timeout + 60))" "$sbin/smtp-sink" "${sink_user[@]}" -c "127.0.0.1:$1" 1024 >"$2" 2>&1 &
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
# stop_pid PID: SIGTERM to PID (the daemon's parent stops its children),
# then after 5 s SIGKILL to its process group.
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    local i
    for i in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || break
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

# source PORT COUNT [SESSIONS [SIZE]]: smtp-source, bounded.
run_source() {
    # shellcheck disable=SC2086
    timeout "$case_timeout" "$sbin/smtp-source" $source_opts -s "${3:-$sessions}" -m "$2" \
        -l "${4:-$size}" -M bench.example.org -f bench@example.org -t sink@example.net \
        "127.0.0.1:$1"
}

# --- the cases ------------------------------------------------------------
# Each runs in this shell (so cleanup sees every pid) and sets $result.

case_limit() {
    local port out t0 t1
    port="$(free_port)"
    out="$work/sink-limit.out"
    start_sink "$port" "$out"
    t0="$(now)"
    run_source "$port" "$n_limit"
    t1="$(now)"
    wait_for 10 "smtp-sink to count $n_limit" sink_has "$out" "$n_limit"
    stop_pid "$sink_pid"
    result="$(rate "$n_limit" "$t0" "$t1")"
}

case_fsync() {
    result="$(python3 - "$work/fsync.dat" "$n_fsync" <<'PY'
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

# start_daemon NAME BODY: write DIR/smtpd.conf ({port}, {spool}, {maildir}
# replaced) and start smtpd -d in its own process group. Sets daemon_pid,
# daemon_port, daemon_dir, daemon_conf.
start_daemon() {
    daemon_dir="$work/$1"
    mkdir -p "$daemon_dir"
    chmod 755 "$daemon_dir"
    daemon_port="$(free_port)"
    daemon_conf="$daemon_dir/smtpd.conf"
    local body="$2"
    body="${body//\{port\}/$daemon_port}"
    body="${body//\{spool\}/$daemon_dir/spool}"
    body="${body//\{maildir\}/$daemon_dir/Maildir}"
    printf '%s\n' "$body" >"$daemon_conf"
    setsid "$smtpd" -d -f "$daemon_conf" </dev/null >/dev/null 2>"$daemon_dir/log" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    if ! wait_for 30 "smtpd ready" grep -q 'smtpd: ready' "$daemon_dir/log"; then
        cat "$daemon_dir/log" >&2
        return 1
    fi
}

# Sample the summed PSS (KiB) of the processes in process group $1 into
# file $2 (the maximum seen) until file $3 exists.
start_pss_sampler() {
    python3 - "$1" "$2" "$3" "$case_timeout" <<'PY' &
import os, sys, time
pgid, out, stop, limit = int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
peak = 0
deadline = time.monotonic() + limit
while not os.path.exists(stop) and time.monotonic() < deadline:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except (OSError, IndexError, ValueError):
            continue
    peak = max(peak, total)
    with open(out, "w") as f:
        f.write(str(peak))
    time.sleep(0.1)
PY
    sampler_pid=$!
    pids+=("$sampler_pid")
}

queue_empty() {
    local q
    q="$(RSMTPD_CONFIG="$daemon_conf" "$work/smtpctl" show queue 2>/dev/null)" || return 1
    [[ -z "$q" ]]
}

# Sets result to "ACCEPT_RATE END_TO_END_RATE PEAK_PSS_MIB".
case_relay() {
    local sinkport out t0 t1 t2 stop peak
    sinkport="$(free_port)"
    out="$work/sink-relay-$1.out"
    start_sink "$sinkport" "$out"
    start_daemon "relay-$1" "queue path \"{spool}\"
listen on 127.0.0.1 port {port}
action \"out\" relay host \"smtp://127.0.0.1:$sinkport\"
match from any for any action \"out\""
    stop="$work/relay-$1.stop"
    start_pss_sampler "$daemon_pid" "$work/relay-$1.pss" "$stop"
    t0="$(now)"
    run_source "$daemon_port" "$n_relay"
    t1="$(now)"
    wait_for "$case_timeout" "the sink to receive $n_relay relayed messages" sink_has "$out" "$n_relay"
    t2="$(now)"
    wait_for 30 "the queue to be empty" queue_empty || true
    touch "$stop"
    wait "$sampler_pid" || true
    forget "$sampler_pid"
    peak="$(cat "$work/relay-$1.pss" 2>/dev/null || echo 0)"
    stop_pid "$daemon_pid"
    stop_pid "$sink_pid"
    result="$(rate "$n_relay" "$t0" "$t1") $(rate "$n_relay" "$t0" "$t2") $(python3 -c "print('%.1f' % ($peak / 1024))")"
}

# Sets result to the end-to-end rate of 6,000 small messages over 200
# concurrent sessions, relayed to a sink.
case_many() {
    local sinkport out t0 t2
    sinkport="$(free_port)"
    out="$work/sink-many-$1.out"
    start_sink "$sinkport" "$out"
    start_daemon "many-$1" "queue path \"{spool}\"
smtp limit max-sessions 1000 max-sessions-per-address 1000
listen on 127.0.0.1 port {port}
action \"out\" relay host \"smtp://127.0.0.1:$sinkport\"
match from any for any action \"out\""
    t0="$(now)"
    run_source "$daemon_port" "$n_many" 200 512
    wait_for "$case_timeout" "the sink to receive $n_many messages" sink_has "$out" "$n_many"
    t2="$(now)"
    stop_pid "$daemon_pid"
    stop_pid "$sink_pid"
    result="$(rate "$n_many" "$t0" "$t2")"
}

# Sets result to the summed PSS (MiB) of the daemon holding $n_idle idle
# connections (each greeted, none saying anything).
case_idle() {
    local stop
    start_daemon "idle-$1" "queue path \"{spool}\"
smtp limit max-sessions 20000 max-sessions-per-address 20000
listen on 127.0.0.1 port {port}
action \"local\" maildir \"{maildir}\" user \"$daemon_user\"
match from any for any action \"local\""
    stop="$work/idle-$1.stop"
    start_pss_sampler "$daemon_pid" "$work/idle-$1.pss" "$stop"
    python3 - "$daemon_port" "$n_idle" <<'PY'
import resource, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    conns.append(s)
# Every session greeted: all of them are open in the daemon.
for s in conns:
    s.settimeout(30)
    if not s.recv(512).startswith(b"220"):
        sys.exit("no greeting")
time.sleep(2)
for s in conns:
    s.close()
PY
    touch "$stop"
    wait "$sampler_pid" || true
    forget "$sampler_pid"
    stop_pid "$daemon_pid"
    result="$(python3 -c "print('%.1f' % ($(cat "$work/idle-$1.pss" 2>/dev/null || echo 0) / 1024))")"
}

maildir_full() { [[ "$(find "$1" -maxdepth 1 -type f | wc -l)" -ge "$2" ]]; }

# Sets result to "ACCEPT_RATE END_TO_END_RATE".
case_maildir() {
    local t0 t1 t2
    start_daemon "maildir-$1" "queue path \"{spool}\"
listen on 127.0.0.1 port {port}
action \"local\" maildir \"{maildir}\" user \"$daemon_user\"
match from any for any action \"local\""
    mkdir -p "$daemon_dir/Maildir/new"
    t0="$(now)"
    run_source "$daemon_port" "$n_maildir"
    t1="$(now)"
    wait_for "$case_timeout" "$n_maildir files in Maildir/new" maildir_full "$daemon_dir/Maildir/new" "$n_maildir"
    t2="$(now)"
    stop_pid "$daemon_pid"
    result="$(rate "$n_maildir" "$t0" "$t1") $(rate "$n_maildir" "$t0" "$t2")"
}

# --- run ------------------------------------------------------------------

declare -a limit=() fsync=() r_acc=() r_e2e=() r_pss=() m_acc=() m_e2e=() many=() idle=()
# The idle case holds thousands of sockets: the daemon inherits this limit.
ulimit -n "$(( n_idle + 4096 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
for i in $(seq 1 "$runs"); do
    echo "run: round $i/$runs: limit ($n_limit messages)" >&2
    case_limit; limit+=("$result")
    echo "run: round $i/$runs: fsync ($n_fsync)" >&2
    case_fsync; fsync+=("$result")
    echo "run: round $i/$runs: rsmtpd relay ($n_relay messages)" >&2
    case_relay "$i"; read -r a e p <<<"$result"
    r_acc+=("$a"); r_e2e+=("$e"); r_pss+=("$p")
    echo "run: round $i/$runs: rsmtpd maildir ($n_maildir messages)" >&2
    case_maildir "$i"; read -r a e <<<"$result"
    m_acc+=("$a"); m_e2e+=("$e")
    echo "run: round $i/$runs: rsmtpd, 200 sessions ($n_many small messages)" >&2
    case_many "$i"; many+=("$result")
    echo "run: round $i/$runs: rsmtpd, $n_idle idle connections" >&2
    case_idle "$i"; idle+=("$result")
done

row() { # NAME UNIT VALUES...
    local name="$1" unit="$2"; shift 2
    printf '| %s | %s | %s | %s |\n' "$name" "$unit" "$(median "$@")" "$(IFS=,; echo "$*" | sed 's/,/, /g')"
}

fs="$(df -PT "$cache" | awk 'NR == 2 { print $2 " (" $1 ")" }')"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
{
    echo "# rsmtpd benchmark"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores ($cpu), $(uname -sr), bench/.cache on $fs."
    echo "rsmtpd $(cd "$top" && git rev-parse --short HEAD 2>/dev/null || echo '?'), daemon run as $daemon_user."
    echo "smtp-source: $sessions sessions, $size-byte messages${source_opts:+, extra flags \`$source_opts\`}; BENCH_SCALE=$scale; median of $runs runs."
    echo
    echo "| case | unit | median | runs |"
    echo "|---|---|---|---|"
    row "limit: smtp-source → smtp-sink ($n_limit msgs)" "msg/s" "${limit[@]}"
    row "disk: 4 KiB write + fsync ($n_fsync)" "fsync/s" "${fsync[@]}"
    row "rsmtpd relay, accept ($n_relay msgs)" "msg/s" "${r_acc[@]}"
    row "rsmtpd relay, end to end" "msg/s" "${r_e2e[@]}"
    row "rsmtpd relay, peak PSS (all processes)" "MiB" "${r_pss[@]}"
    row "rsmtpd maildir, accept ($n_maildir msgs)" "msg/s" "${m_acc[@]}"
    row "rsmtpd maildir, end to end" "msg/s" "${m_e2e[@]}"
    row "rsmtpd 200 sessions, end to end ($n_many msgs of 512 B)" "msg/s" "${many[@]}"
    row "rsmtpd $n_idle idle connections, PSS" "MiB" "${idle[@]}"
} | tee "$here/results.md"
