#!/usr/bin/env bash
# The load benchmark: Berry against a bare hyper pass-through proxy (and nginx, when
# installed), in one run, on loopback, against one mock provider. See BENCHMARKS.md
# for the method.
#
#   benches/load.sh                 # full run (~6 minutes after the build)
#   benches/load.sh --quick         # shorter phases, for trying the script
#   benches/load.sh --write         # also put the table into BENCHMARKS.md
#   benches/load.sh --cluster       # only: one replica with [cluster] (a real
#                                   # redis-server) against one node without it
#   benches/load.sh --ledger        # only: the usage ledger on against off, and the
#                                   # writer's backlog under sustained full load
#   benches/load.sh --client        # only: the upstream client A/B — hyper's pooled
#                                   # client (Berry's) against reqwest, each in the
#                                   # bare proxy, reading the body first as Berry does
#   benches/load.sh --otel          # only: trace export on (sampling 1.0, to a local
#                                   # OTLP sink) against off; BASELINE_BIN=<berry
#                                   # binary> adds an older build as a third target
#
# Needs wrk (Debian: apt-get install wrk); --cluster also redis-server; nginx is
# measured as a second classic proxy when it is installed (apt-get install nginx). Builds berry and the bench tools with
# --release. Writes target/bench/table.md and the raw results next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh

rounds=5 secs=4 stream_secs=10 streams=1000 many_streams=5000 write=0 cluster=0 ledger=0 otel=0 client=0
for arg in "$@"; do
  case $arg in
    --quick) rounds=3 secs=2 stream_secs=4 streams=200 many_streams=1000 ;;
    --write) write=1 ;;
    --cluster) cluster=1 ;;
    --ledger) ledger=1 ;;
    --otel) otel=1 ;;
    --client) client=1 ;;
    *) echo "usage: benches/load.sh [--quick] [--write] [--cluster] [--ledger] [--otel] [--client]" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release -q -p berry -p berry-bench-tools
bin=target/release
out=target/bench
mkdir -p "$out"
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

# --- helpers --------------------------------------------------------------------
now_ms() { date +%s%3N; }
wait_for() { # file pattern → the address after the pattern
  for _ in $(seq 2000); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -o "$2[^ /]*" "$1" | head -1 | sed "s|$2||"; return; fi
    sleep 0.005
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)
# Sample a process's RSS every 100 ms into a file until the sampler is killed.
sample_rss() { while kill -0 "$1" 2>/dev/null; do rss_mb "$1" >> "$2"; echo >> "$2"; sleep 0.1; done; }
max_of() { sort -n "$1" | tail -1; }
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

# --- start the three servers ----------------------------------------------------
# Streams: 20 chunks 50 ms apart, each stamped with its send time.
"$bin/berry" mock-provider --port 0 --chunks 20 --chunk-delay-ms 50 --stamp > "$tmp/mock.log" 2>&1 &
mock_pid=$!
mock=$(wait_for "$tmp/mock.log" "listening on http://")

"$bin/bare-proxy" --upstream "$mock" > "$tmp/bare.log" 2>&1 &
bare_pid=$!
bare=$(wait_for "$tmp/bare.log" "listening on http://")
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# nginx as a second classic proxy (when installed): one worker per core, upstream
# keepalive, no access log (the bare proxy writes none either).
nginx_pid=
if command -v nginx >/dev/null && [ "$cluster$ledger$otel$client" = 0000 ]; then
  nginx_port=$(free_port)
  mkdir -p "$tmp/nginx"
  cat > "$tmp/nginx/nginx.conf" <<NGINX
worker_processes auto;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  upstream mock { server $mock; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
  nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" > "$tmp/nginx.log" 2>&1 &
  nginx_pid=$!
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.02; done
fi

{
  echo '[settings]'
  echo 'max_retries = 1'
  # The usage ledger on, as by default, in a fresh file (as on a new deployment;
  # the default path would carry every earlier run's rows).
  echo "usage_db = \"$tmp/usage.db\""
  echo 'admin_token = "berry-bench-admin"'
  for i in 1 2 3 4; do
    printf '[providers.p%s]\nbase_url = "http://%s/v1"\napi_key = "sk-bench-%s"\nmodels = ["mock"]\n' "$i" "$mock" "$i"
  done
  printf '[models.bench]\nname = "bench"\nstrategy = "smart_ai"\n'
  for i in 1 2 3 4; do
    printf '[[models.bench.backends]]\nprovider = "p%s"\nmodel = "mock"\nweight = %s\n' "$i" "$i"
  done
  printf '[auth]\npolicy = "token_auth"\n[users.bench]\ntoken = "berry-bench-token"\n'
  # Every other stock strategy loaded too (idle RSS is measured with all of them).
  for s in weighted_random round_robin least_latency failover random; do
    printf '[models.%s]\nname = "%s"\nstrategy = "%s"\n[[models.%s.backends]]\nprovider = "p1"\nmodel = "mock"\n' "$s" "$s" "$s" "$s"
  done
  # A plugin loaded from a file, for the hot-swap measurement at the end.
  printf '[plugins.router]\npath = "router.wasm"\nkind = "strategy"\n'
  printf '[models.swap]\nname = "swap"\nstrategy = "router"\n[[models.swap.backends]]\nprovider = "p1"\nmodel = "mock"\n'
} > "$tmp/berry.toml"
wasm=target/wasm-plugins/wasm32-wasip2/release
cp "$wasm/weighted_random.wasm" "$tmp/router.wasm"
export BERRY_CACHE_DIR="$tmp/cache"
# The first start fills the compile cache; the second is the one timed.
"$bin/berry" check-config "$tmp/berry.toml" > /dev/null
# Berry as operators run it: one log line per request, written to a file (stdout
# redirected, so no terminal colours).
t0=$(now_ms)
RUST_LOG=info "$bin/berry" serve --config "$tmp/berry.toml" --listen 127.0.0.1:0 > "$tmp/berry.log" 2>&1 &
berry_pid=$!
berry=$(wait_for "$tmp/berry.log" "listening on http://")
t1=$(now_ms)
startup_ms=$((t1 - t0))
# The same with per-request lines off (the bare proxy writes none either).
RUST_LOG=info,berry::request=warn "$bin/berry" serve --config "$tmp/berry.toml" --listen 127.0.0.1:0 \
  > "$tmp/quiet.log" 2>&1 &
quiet_pid=$!
quiet=$(wait_for "$tmp/quiet.log" "listening on http://")

# For time to first event at one connection: a mock whose streams are short (3
# events, 1 ms apart), behind its own bare proxy and Berry (the same config).
"$bin/berry" mock-provider --port 0 --chunks 3 --chunk-delay-ms 1 --stamp > "$tmp/mock_fast.log" 2>&1 &
fast_mock_pid=$!
fast_mock=$(wait_for "$tmp/mock_fast.log" "listening on http://")
"$bin/bare-proxy" --upstream "$fast_mock" > "$tmp/bare_fast.log" 2>&1 &
bare_fast_pid=$!
bare_fast=$(wait_for "$tmp/bare_fast.log" "listening on http://")
sed "s|http://$mock/v1|http://$fast_mock/v1|" "$tmp/berry.toml" > "$tmp/fast.toml"
RUST_LOG=info "$bin/berry" serve --config "$tmp/fast.toml" --listen 127.0.0.1:0 > "$tmp/berry_fast.log" 2>&1 &
berry_fast_pid=$!
berry_fast=$(wait_for "$tmp/berry_fast.log" "listening on http://")

sleep 2
idle_berry=$(rss_mb $berry_pid)
idle_bare=$(rss_mb $bare_pid)

declare -A url=(
  [direct]="http://$mock/v1/chat/completions"
  [bare]="http://$bare/v1/chat/completions"
  [berry]="http://$berry/v1/chat/completions"
  [quiet]="http://$quiet/v1/chat/completions"
)
declare -A pid=([direct]=$mock_pid [bare]=$bare_pid [berry]=$berry_pid [quiet]=$quiet_pid)
url[direct_fast]="http://$fast_mock/v1/chat/completions"
url[bare_fast]="http://$bare_fast/v1/chat/completions"
url[berry_fast]="http://$berry_fast/v1/chat/completions"
pid[direct_fast]=$fast_mock_pid; pid[bare_fast]=$bare_fast_pid; pid[berry_fast]=$berry_fast_pid
targets=(direct bare berry)
load_targets=(direct bare berry quiet)
if [ -n "$nginx_pid" ]; then
  url[nginx]="http://127.0.0.1:$nginx_port/v1/chat/completions"; pid[nginx]=$nginx_pid
  load_targets+=(nginx)
fi
# CPU ticks of a target: the process, and its workers (nginx).
cpu_of() {
  local total; total=$(cpu_ticks "${pid[$1]}")
  for child in $(pgrep -P "${pid[$1]}" 2>/dev/null); do total=$((total + $(cpu_ticks "$child"))); done
  echo "$total"
}
declare -A rps p50 p99 cpu_us fixed_p50 fixed_p99 ttfb50 ttfb99 chunk50 chunk99 load_rss many_rss

wrk_run() { # target connections seconds [delay ms] → RESULT json
  WRK_DELAY_MS=${4:-} wrk -t1 -c"$2" -d"${3}s" -s benches/chat.lua "${url[$1]}" | grep '^RESULT ' | sed 's/^RESULT //'
}

# Phases 1 and 2 run in rounds that alternate the targets, and each figure is the
# median over the rounds: a slow spell of this shared machine then hits every target
# alike instead of one.
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
m() { python3 -c "print(round($(median ${1}), 1))"; }   # the median of a space-separated list, rounded
ratio() { python3 -c "print(f'{$1/$2:.2f}×')"; }
delta() { python3 -c "print(f'{$1-$2:+.0f}')"; }
check() { python3 -c "print('✅' if $1 else '❌')"; }

# Alternating rounds over the given targets at 1 and 32 connections (--otel,
# --client): medians come from R_cpu, R_rps, R_p50, R_p99, indexed [target,conns].
declare -A R_cpu R_rps R_p50 R_p99
measure_rounds() {
  for t in "$@"; do wrk_run "$t" 8 1 > /dev/null; done
  for conns in 1 32; do
    for round in $(seq "$rounds"); do
      for t in "$@"; do
        before=$(cpu_ticks "${pid[$t]}")
        r=$(wrk_run "$t" "$conns" "$secs")
        after=$(cpu_ticks "${pid[$t]}")
        echo "$t c$conns round $round $r" | tee -a "$out/raw.txt" >&2
        R_rps[$t,$conns]+=" $(json "$r" rps)"; R_p50[$t,$conns]+=" $(json "$r" p50_us)"; R_p99[$t,$conns]+=" $(json "$r" p99_us)"
        R_cpu[$t,$conns]+=" $(python3 -c "print(($after-$before)*1e6/$clk_tck/$(json "$r" requests))")"
      done
    done
  done
}

# --- [cluster] on vs off (--cluster): the same config, its user rate-limited (so every
# request asks Redis: the worst case; users without a limit never do), served by one
# node without [cluster] and by one replica with it. ---------------------------------
if [ "$cluster" = 1 ]; then
  command -v redis-server >/dev/null || { echo "redis-server is needed: apt-get install redis-server" >&2; exit 1; }
  redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no > "$tmp/redis.log" 2>&1 &
  pid[redis]=$!
  sed 's/^token = "berry-bench-token"$/&\nrate_limit = { requests_per_minute = 1000000000 }/' "$tmp/berry.toml" > "$tmp/node.toml"
  { cat "$tmp/node.toml"; printf '\n[cluster]\nredis_url = "redis://127.0.0.1:%s"\n' "$redis_port"; } > "$tmp/fleet.toml"
  # The same replica asking Redis on every request (what a small limit costs).
  { cat "$tmp/fleet.toml"; echo 'lease_max = 1'; echo 'key_prefix = "exact:"'; } > "$tmp/exact.toml"
  for t in node fleet exact; do
    RUST_LOG=info "$bin/berry" serve --config "$tmp/$t.toml" --listen 127.0.0.1:0 > "$tmp/$t.log" 2>&1 &
    pid[$t]=$!
    url[$t]="http://$(wait_for "$tmp/$t.log" "listening on http://")/v1/chat/completions"
  done
  echo "== [cluster] on vs off: 1 and 32 connections, $rounds rounds of ${secs}s" >&2
  for t in node fleet exact; do wrk_run "$t" 8 1 > /dev/null; done
  declare -A c_cpu c_p50 c_rps c_redis
  for conns in 1 32; do
    for round in $(seq "$rounds"); do
      for t in node fleet exact; do
        before=$(cpu_ticks "${pid[$t]}"); redis_before=$(cpu_ticks "${pid[redis]}")
        r=$(wrk_run "$t" "$conns" "$secs")
        after=$(cpu_ticks "${pid[$t]}"); redis_after=$(cpu_ticks "${pid[redis]}")
        echo "$t c$conns round $round $r" | tee -a "$out/raw.txt" >&2
        c_rps[$t,$conns]+=" $(json "$r" rps)"; c_p50[$t,$conns]+=" $(json "$r" p50_us)"
        c_cpu[$t,$conns]+=" $(python3 -c "print(($after-$before)*1e6/$clk_tck/$(json "$r" requests))")"
        c_redis[$t,$conns]+=" $(python3 -c "print(($redis_after-$redis_before)*1e6/$clk_tck/$(json "$r" requests))")"
      done
    done
  done
  # A plugin uploaded to one replica, served by another (same fleet): ms until the
  # other replica's /admin/plugins shows the new version.
  RUST_LOG=info "$bin/berry" serve --config "$tmp/fleet.toml" --listen 127.0.0.1:0 > "$tmp/fleet2.log" 2>&1 &
  pid[fleet2]=$!
  fleet2=$(wait_for "$tmp/fleet2.log" "listening on http://")
  fleet_swap_ms=$(python3 - "${url[fleet]%/v1/chat/completions}" "http://$fleet2" "$wasm/round_robin.wasm" <<'PY'
import json, sys, time, urllib.request
one, two, wasm = sys.argv[1:]
auth = {"Authorization": "Bearer berry-bench-admin"}
def router_hash(base):
    plugins = json.load(urllib.request.urlopen(urllib.request.Request(f"{base}/admin/plugins", headers=auth)))["plugins"]
    return next(p["sha256"] for p in plugins if p["name"] == "router")
before = router_hash(two)
put = urllib.request.Request(f"{one}/admin/plugins/router", data=open(wasm, "rb").read(), headers=auth, method="PUT")
start = time.monotonic()
urllib.request.urlopen(put).read()
answered = time.monotonic()
while router_hash(two) == before:
    if time.monotonic() - start > 30:
        sys.exit("the other replica never served the new version")
    time.sleep(0.005)
print(round((answered - start) * 1000), round((time.monotonic() - start) * 1000))
PY
)
  {
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; \`benches/load.sh --cluster\`: the bench config with its user rate-limited, one log line per request to a file; medians of $rounds alternating rounds."
    echo
    echo "| connections | measure | one node | replica, permits leased (default) | ratio | target | met | replica, Redis on every request (\`lease_max = 1\`) | ratio |"
    echo "|---|---|---:|---:|---:|---|:-:|---:|---:|"
    for c in 1 32; do
      n=$(m "${c_cpu[node,$c]}"); f=$(m "${c_cpu[fleet,$c]}"); e=$(m "${c_cpu[exact,$c]}")
      echo "| $c | Berry CPU per request (µs) | $n | $f | $(ratio "$f" "$n") | ≤ 1.15× | $(check "$f <= 1.15 * $n") | $e | $(ratio "$e" "$n") |"
      echo "| $c | redis-server CPU per request (µs) | | $(m "${c_redis[fleet,$c]}") | | | | $(m "${c_redis[exact,$c]}") | |"
      n=$(m "${c_p50[node,$c]}"); f=$(m "${c_p50[fleet,$c]}"); e=$(m "${c_p50[exact,$c]}")
      echo "| $c | latency p50 (µs) | $n | $f | $(ratio "$f" "$n") | | | $e | $(ratio "$e" "$n") |"
      n=$(m "${c_rps[node,$c]}"); f=$(m "${c_rps[fleet,$c]}"); e=$(m "${c_rps[exact,$c]}")
      echo "| $c | throughput (req/s) | $n | $f | $(ratio "$f" "$n") | | | $e | $(ratio "$e" "$n") |"
    done
    read -r put_ms seen_ms <<< "$fleet_swap_ms"
    echo
    echo "Fleet plugin swap: \`PUT /admin/plugins/router\` on one replica answered after $put_ms ms (prepared and tried there); the other replica served the new version $seen_ms ms after the upload began (target ≤ 2,000 ms: $(check "$seen_ms <= 2000"))."
  } > "$out/cluster.md"
  cat "$out/cluster.md"
  if [ "$write" = 1 ]; then python3 benches/put_table.py cluster-table "$out/cluster.md"; fi
  exit 0
fi

# --- the usage ledger on vs off (--ledger): the bench config with the ledger off and
# on (a file in the run's folder); then the one with it on under sustained full load,
# the writer's backlog sampled from /metrics every second. --------------------------
if [ "$ledger" = 1 ]; then
  sed -e '/^usage_db = /d' -e '1a usage_db = ""' "$tmp/berry.toml" > "$tmp/off.toml"
  sed -e '/^usage_db = /d' -e "1a usage_db = \"$tmp/usage.db\"" "$tmp/berry.toml" > "$tmp/on.toml"
  for t in off on; do
    RUST_LOG=info "$bin/berry" serve --config "$tmp/$t.toml" --listen 127.0.0.1:0 > "$tmp/$t.log" 2>&1 &
    pid[$t]=$!
    url[$t]="http://$(wait_for "$tmp/$t.log" "listening on http://")/v1/chat/completions"
  done
  echo "== usage ledger on vs off: 32 connections, $rounds rounds of ${secs}s" >&2
  for t in off on; do wrk_run "$t" 8 1 > /dev/null; done
  declare -A l_cpu l_rps
  for round in $(seq "$rounds"); do
    for t in off on; do
      before=$(cpu_ticks "${pid[$t]}")
      r=$(wrk_run "$t" 32 "$secs")
      after=$(cpu_ticks "${pid[$t]}")
      echo "$t c32 round $round $r" | tee -a "$out/raw.txt" >&2
      l_rps[$t]+=" $(json "$r" rps)"
      l_cpu[$t]+=" $(python3 -c "print(($after-$before)*1e6/$clk_tck/$(json "$r" requests))")"
    done
  done
  sustain=$((secs * 5))
  echo "== the ledger under sustained load: 64 connections, ${sustain}s" >&2
  metrics_url="${url[on]%/v1/chat/completions}/metrics"
  gauge() { curl -fsS -H "Authorization: Bearer berry-bench-admin" "$metrics_url" | awk -v m="$1" '$1 == m {print $2}'; }
  : > "$tmp/backlog"
  ( for _ in $(seq "$sustain"); do gauge berry_usage_ledger_backlog >> "$tmp/backlog"; sleep 1; done ) &
  sampler=$!
  r=$(wrk_run on 64 "$sustain")
  wait $sampler 2>/dev/null || true
  sleep 1
  sustained_rps=$(json "$r" rps)
  backlog_max=$(sort -n "$tmp/backlog" | tail -1)
  backlog_end=$(gauge berry_usage_ledger_backlog)
  written=$(gauge berry_usage_ledger_written)
  dropped=$(gauge berry_usage_ledger_dropped)
  rows=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from requests').fetchone()[0])" "$tmp/usage.db")
  {
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; \`benches/load.sh --ledger\`: the bench config, one log line per request to a file; medians of $rounds alternating rounds at 32 connections."
    echo
    echo "| measure | ledger off | ledger on | ratio | target | met |"
    echo "|---|---:|---:|---:|---|:-:|"
    off=$(m "${l_cpu[off]}"); on=$(m "${l_cpu[on]}")
    echo "| Berry CPU per request (µs) | $off | $on | $(ratio "$on" "$off") | ≤ 1.05× | $(check "$on <= 1.05 * $off") |"
    echo "| throughput (req/s) | $(m "${l_rps[off]}") | $(m "${l_rps[on]}") | $(ratio "$(m "${l_rps[on]}")" "$(m "${l_rps[off]}")") | | |"
    echo
    echo "Sustained: ${sustain}s at 64 connections, $sustained_rps req/s with the ledger on; the writer's backlog sampled every second peaked at $backlog_max records and was $backlog_end at the end; $written records written, $dropped dropped; $rows rows in the file."
  } > "$out/ledger.md"
  cat "$out/ledger.md"
  if [ "$write" = 1 ]; then python3 benches/put_table.py ledger-table "$out/ledger.md"; fi
  exit 0
fi

# --- the upstream client A/B (--client): the bare proxy reading each body first and
# sending it with hyper's pooled client (as Berry does) or with reqwest. -----------
if [ "$client" = 1 ]; then
  for c in hyper reqwest; do
    "$bin/bare-proxy" --upstream "$mock" --client "$c" > "$tmp/$c.log" 2>&1 &
    pid[$c]=$!
    url[$c]="http://$(wait_for "$tmp/$c.log" "listening on http://")/v1/chat/completions"
  done
  echo "== upstream client A/B: 1 and 32 connections, $rounds rounds of ${secs}s" >&2
  measure_rounds hyper reqwest
  {
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; \`benches/load.sh --client\`: the bare proxy (\`bare-proxy --client hyper|reqwest\`), plain HTTP on loopback, the same mock; medians of $rounds alternating rounds."
    echo
    echo "| connections | measure | hyper (Berry's client) | reqwest | reqwest / hyper | reqwest allowed |"
    echo "|---|---|---:|---:|---:|---|"
    for c in 1 32; do
      h=$(m "${R_cpu[hyper,$c]}"); q=$(m "${R_cpu[reqwest,$c]}")
      echo "| $c | proxy CPU per request (µs) | $h | $q | $(ratio "$q" "$h") | ≤ 1.03× $(check "$q <= 1.03 * $h") |"
      echo "| $c | latency p50 (µs) | $(m "${R_p50[hyper,$c]}") | $(m "${R_p50[reqwest,$c]}") | $(ratio "$(m "${R_p50[reqwest,$c]}")" "$(m "${R_p50[hyper,$c]}")") | |"
      echo "| $c | latency p99 (µs) | $(m "${R_p99[hyper,$c]}") | $(m "${R_p99[reqwest,$c]}") | $(ratio "$(m "${R_p99[reqwest,$c]}")" "$(m "${R_p99[hyper,$c]}")") | |"
      echo "| $c | throughput (req/s) | $(m "${R_rps[hyper,$c]}") | $(m "${R_rps[reqwest,$c]}") | $(ratio "$(m "${R_rps[reqwest,$c]}")" "$(m "${R_rps[hyper,$c]}")") | |"
    done
  } > "$out/client.md"
  cat "$out/client.md"
  if [ "$write" = 1 ]; then python3 benches/put_table.py client-table "$out/client.md"; fi
  exit 0
fi

# --- trace export on vs off (--otel): the bench config without [telemetry] (every
# upstream request still carries a traceparent) and with export to a local OTLP/HTTP
# sink at sampling 1.0 (two spans per request); optionally an older build. ---------
if [ "$otel" = 1 ]; then
  # The sink: answers every POST with 200 and counts what it was sent.
  python3 - > "$tmp/sink.log" 2>&1 <<'PY' &
import http.server, sys
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(f"listening on http://127.0.0.1:{s.server_address[1]}", flush=True)
s.serve_forever()
PY
  pid[sink]=$!
  sink=$(wait_for "$tmp/sink.log" "listening on http://")
  cp "$tmp/berry.toml" "$tmp/off.toml"
  { cat "$tmp/berry.toml"; printf '\n[telemetry]\notlp_endpoint = "http://%s"\nsampling_ratio = 1.0\n' "$sink"; } > "$tmp/on.toml"
  targets=(off on)
  cp "$tmp/off.toml" "$tmp/base.toml"
  for t in off on base; do
    if [ "$t" = base ]; then
      [ -n "${BASELINE_BIN:-}" ] || continue
      RUST_LOG=info "$BASELINE_BIN" serve --config "$tmp/base.toml" --listen 127.0.0.1:0 > "$tmp/$t.log" 2>&1 &
      targets+=(base)
    else
      RUST_LOG=info "$bin/berry" serve --config "$tmp/$t.toml" --listen 127.0.0.1:0 > "$tmp/$t.log" 2>&1 &
    fi
    pid[$t]=$!
    url[$t]="http://$(wait_for "$tmp/$t.log" "listening on http://")/v1/chat/completions"
  done
  echo "== trace export on vs off: 1 and 32 connections, $rounds rounds of ${secs}s" >&2
  measure_rounds "${targets[@]}"
  dropped=$(curl -fsS -H "Authorization: Bearer berry-bench-admin" "${url[on]%/v1/chat/completions}/metrics" \
    | awk '$1 == "berry_trace_spans_dropped_total" {print $2}')
  {
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; \`benches/load.sh --otel\`: the bench config, one log line per request to a file; export on = \`[telemetry]\` to a local OTLP/HTTP sink, sampling 1.0 (a request span and an attempt span per request); medians of $rounds alternating rounds."
    echo
    header="| connections | measure | export off | export on | on / off | target | met |"
    [ -n "${BASELINE_BIN:-}" ] && header+=" before tracing (older build) | off / before |"
    echo "$header"
    [ -n "${BASELINE_BIN:-}" ] && echo "|---|---|---:|---:|---:|---|:-:|---:|---:|" || echo "|---|---|---:|---:|---:|---|:-:|"
    for c in 1 32; do
      for measure in cpu p50 p99 rps; do
        case $measure in
          cpu) name="Berry CPU per request (µs)"; target="≤ 1.10×" ;;
          p50) name="latency p50 (µs)"; target="" ;;
          p99) name="latency p99 (µs)"; target="" ;;
          rps) name="throughput (req/s)"; target="" ;;
        esac
        declare -n series="R_$measure"
        off=$(m "${series[off,$c]}"); on=$(m "${series[on,$c]}")
        met=""; [ "$measure" = cpu ] && met=$(check "$on <= 1.10 * $off")
        line="| $c | $name | $off | $on | $(ratio "$on" "$off") | $target | $met |"
        if [ -n "${BASELINE_BIN:-}" ]; then
          base=$(m "${series[base,$c]}"); line+=" $base | $(ratio "$off" "$base") |"
        fi
        echo "$line"
        unset -n series
      done
    done
    echo
    echo "Spans dropped by the exporter during the run: ${dropped:-0}."
  } > "$out/otel.md"
  cat "$out/otel.md"
  if [ "$write" = 1 ]; then python3 benches/put_table.py otel-table "$out/otel.md"; fi
  exit 0
fi

# --- 1. throughput at fixed concurrency (32 and 64 connections), CPU per request --
# Berry runs twice: with its per-request log lines (berry) and without (quiet).
echo "== throughput: wrk, 1, 32 and 64 connections, $rounds rounds of ${secs}s" >&2
for t in "${load_targets[@]}"; do wrk_run "$t" 8 1 > /dev/null; done   # warm the connection pools
for conns in 1 32 64; do
  declare -A r_rps=() r_p50=() r_p99=() r_cpu=()
  for round in $(seq "$rounds"); do
    for t in "${load_targets[@]}"; do
      before=$(cpu_of "$t")
      r=$(wrk_run "$t" "$conns" "$secs")
      after=$(cpu_of "$t")
      echo "$t c$conns round $round $r" | tee -a "$out/raw.txt" >&2
      r_rps[$t]+=" $(json "$r" rps)"
      r_p50[$t]+=" $(json "$r" p50_us)"; r_p99[$t]+=" $(json "$r" p99_us)"
      # CPU of the serving process only (for direct: the mock itself).
      r_cpu[$t]+=" $(python3 -c "print(($after-$before)*1e6/$clk_tck/$(json "$r" requests))")"
    done
  done
  for t in "${load_targets[@]}"; do
    rps[$t,$conns]=$(median ${r_rps[$t]}); p50[$t,$conns]=$(median ${r_p50[$t]}); p99[$t,$conns]=$(median ${r_p99[$t]})
    cpu_us[$t,$conns]=$(python3 -c "print(round($(median ${r_cpu[$t]}), 1))")
  done
done

# --- 2. latency at a fixed rate (~1,000 req/s: 10 connections, one request each 10 ms)
echo "== latency: ~1000 req/s, $rounds rounds of ${secs}s" >&2
declare -A f_p50 f_p99
for round in $(seq "$rounds"); do
  for t in "${targets[@]}"; do
    r=$(wrk_run "$t" 10 "$secs" 10)
    echo "$t fixed-rate round $round $r" | tee -a "$out/raw.txt" >&2
    f_p50[$t]+=" $(json "$r" p50_us)"; f_p99[$t]+=" $(json "$r" p99_us)"
  done
done
for t in "${targets[@]}"; do
  fixed_p50[$t]=$(median ${f_p50[$t]}); fixed_p99[$t]=$(median ${f_p99[$t]})
done

# --- 3. streaming: concurrent SSE streams, TTFB and per-chunk latency, RSS --------
stream_run() { # target streams seconds → JSON; samples the target's RSS
  : > "$tmp/rss"
  sample_rss "${pid[$1]}" "$tmp/rss" &
  local sampler=$!
  "$bin/stream-load" --url "${url[$1]}" --token berry-bench-token --model bench --streams "$2" --seconds "$3"
  kill $sampler 2>/dev/null || true; wait $sampler 2>/dev/null || true
}
echo "== streaming: $streams concurrent streams, ${stream_secs}s each" >&2
for t in "${targets[@]}"; do
  r=$(stream_run "$t" "$streams" "$stream_secs")
  echo "$t streams $r" | tee -a "$out/raw.txt" >&2
  ttfb50[$t]=$(json "$r" ttfb_p50_us); ttfb99[$t]=$(json "$r" ttfb_p99_us)
  chunk50[$t]=$(json "$r" chunk_p50_us); chunk99[$t]=$(json "$r" chunk_p99_us)
  load_rss[$t]=$(max_of "$tmp/rss")
done
echo "== streaming: $many_streams concurrent streams (RSS)" >&2
for t in bare berry; do
  r=$(stream_run "$t" "$many_streams" "$stream_secs")
  echo "$t many-streams $r" | tee -a "$out/raw.txt" >&2
  many_rss[$t]=$(max_of "$tmp/rss")
done

echo "== streaming: time to first event at one connection, $rounds rounds of ${secs}s" >&2
declare -A one_ttfb50 one_ttfb99
for round in $(seq "$rounds"); do
  for t in direct_fast bare_fast berry_fast; do
    r=$("$bin/stream-load" --url "${url[$t]}" --token berry-bench-token --model bench --streams 1 --seconds "$secs")
    echo "$t one-stream round $round $r" | tee -a "$out/raw.txt" >&2
    one_ttfb50[$t]+=" $(json "$r" ttfb_p50_us)"; one_ttfb99[$t]+=" $(json "$r" ttfb_p99_us)"
  done
done

# --- 4. hot swap: a plugin file replaced (written beside, renamed over) → the new
# version in service, seen by polling /admin/plugins ----------------------------------
swap_ms=$(python3 - "$berry" "$tmp" "$wasm/round_robin.wasm" <<'PY'
import json, os, shutil, sys, time, urllib.request
berry, tmp, new = sys.argv[1:]
def router_hash():
    req = urllib.request.Request(f"http://{berry}/admin/plugins", headers={"Authorization": "Bearer berry-bench-admin"})
    plugins = json.load(urllib.request.urlopen(req))["plugins"]
    return next(p["sha256"] for p in plugins if p["name"] == "router")
before = router_hash()
shutil.copy(new, f"{tmp}/router.wasm.new")
start = time.monotonic()
os.rename(f"{tmp}/router.wasm.new", f"{tmp}/router.wasm")
while router_hash() == before:
    if time.monotonic() - start > 30:
        sys.exit("the new plugin version never came into service")
    time.sleep(0.005)
print(round((time.monotonic() - start) * 1000))
PY
)

# --- 5. plugin call cost, from Berry's own histogram over everything above ---------
metrics=$(curl -fsS -H "Authorization: Bearer berry-bench-admin" "http://$berry/metrics")
plugin_calls() {
  echo "$metrics" | awk -v p="plugin=\"$1\"" '/^berry_plugin_calls_total/ && index($0,p) {print $2}'
}
strategy_us=$(plugin_mean_us "$metrics" smart_ai)
# With the principal cache, the policy is called once per caller (a handful of
# calls, all cold): the relayed requests against the calls tell how often it ran.
auth_calls=$(plugin_calls token_auth)
relayed=$(echo "$metrics" | awk '/^berry_requests_total/ {s += $2} END {print s}')

# --- the table --------------------------------------------------------------------
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); \`benches/load.sh\`. Berry writes one log line per request to a file unless a row says otherwise."
  echo
  ng() { [ -n "$nginx_pid" ] && echo "${1}" || echo "—"; }   # an nginx cell, when it ran
  echo "| measure | direct to mock | bare proxy | nginx | Berry | Berry vs bare | target | met |"
  echo "|---|---:|---:|---:|---:|---:|---|:-:|"
  for c in 1 32 64; do
    target="≥ 0.85×"; [ "$c" = 1 ] && target=""
    met=$(check "${rps[berry,$c]} >= 0.85 * ${rps[bare,$c]}"); [ "$c" = 1 ] && met=""
    echo "| throughput, $c connection$([ "$c" = 1 ] || echo s) (req/s, median of $rounds) | ${rps[direct,$c]} | ${rps[bare,$c]} | $(ng "${rps[nginx,$c]:-}") | ${rps[berry,$c]} | $(ratio "${rps[berry,$c]}" "${rps[bare,$c]}") | $target | $met |"
    echo "| … Berry with per-request log lines off | | | | ${rps[quiet,$c]} | $(ratio "${rps[quiet,$c]}" "${rps[bare,$c]}") | | |"
    echo "| CPU per request, $c connection$([ "$c" = 1 ] || echo s) (µs, serving processes) | ${cpu_us[direct,$c]} | ${cpu_us[bare,$c]} | $(ng "${cpu_us[nginx,$c]:-}") | ${cpu_us[berry,$c]} | $(ratio "${cpu_us[berry,$c]}" "${cpu_us[bare,$c]}") | ≤ 1.30× | $(check "${cpu_us[berry,$c]} <= 1.3 * ${cpu_us[bare,$c]}") |"
    echo "| … Berry with per-request log lines off | | | | ${cpu_us[quiet,$c]} | $(ratio "${cpu_us[quiet,$c]}" "${cpu_us[bare,$c]}") | | |"
    if [ "$c" = 1 ]; then
      echo "| latency p50 at 1 connection (µs) | ${p50[direct,1]} | ${p50[bare,1]} | $(ng "${p50[nginx,1]:-}") | ${p50[berry,1]} | $(delta "${p50[berry,1]}" "${p50[bare,1]}") µs | ≤ +30 µs | $(check "${p50[berry,1]} - ${p50[bare,1]} <= 30") |"
      echo "| latency p99 at 1 connection (µs) | ${p99[direct,1]} | ${p99[bare,1]} | $(ng "${p99[nginx,1]:-}") | ${p99[berry,1]} | $(delta "${p99[berry,1]}" "${p99[bare,1]}") µs | ≤ +60 µs | $(check "${p99[berry,1]} - ${p99[bare,1]} <= 60") |"
    else
      echo "| latency p50 / p99 at $c connections (µs) | ${p50[direct,$c]} / ${p99[direct,$c]} | ${p50[bare,$c]} / ${p99[bare,$c]} | $(ng "${p50[nginx,$c]:-} / ${p99[nginx,$c]:-}") | ${p50[berry,$c]} / ${p99[berry,$c]} | | | |"
    fi
  done
  t50d=$(m "${one_ttfb50[direct_fast]}"); t50b=$(m "${one_ttfb50[bare_fast]}"); t50y=$(m "${one_ttfb50[berry_fast]}")
  echo "| stream: time to first event at 1 connection, p50 (µs, median of $rounds) | $t50d | $t50b | | $t50y | $(delta "$t50y" "$t50b") µs | ≤ +50 µs | $(check "$t50y - $t50b <= 50") |"
  echo "| stream: time to first event at 1 connection, p99 (µs) | $(m "${one_ttfb99[direct_fast]}") | $(m "${one_ttfb99[bare_fast]}") | | $(m "${one_ttfb99[berry_fast]}") | $(delta "$(m "${one_ttfb99[berry_fast]}")" "$(m "${one_ttfb99[bare_fast]}")") µs | | |"
  echo "| latency p50 at ~1,000 req/s (µs, median of $rounds) | ${fixed_p50[direct]} | ${fixed_p50[bare]} | | ${fixed_p50[berry]} | $(delta "${fixed_p50[berry]}" "${fixed_p50[bare]}") µs | ≤ +100 µs | $(check "${fixed_p50[berry]} - ${fixed_p50[bare]} <= 100") |"
  echo "| latency p99 at ~1,000 req/s (µs, median of $rounds) | ${fixed_p99[direct]} | ${fixed_p99[bare]} | | ${fixed_p99[berry]} | $(delta "${fixed_p99[berry]}" "${fixed_p99[bare]}") µs | ≤ +1,000 µs | $(check "${fixed_p99[berry]} - ${fixed_p99[bare]} <= 1000") |"
  echo "| stream TTFB p50, $streams streams (µs) | ${ttfb50[direct]} | ${ttfb50[bare]} | | ${ttfb50[berry]} | $(delta "${ttfb50[berry]}" "${ttfb50[bare]}") µs | | |"
  echo "| stream TTFB p99, $streams streams (µs) | ${ttfb99[direct]} | ${ttfb99[bare]} | | ${ttfb99[berry]} | $(delta "${ttfb99[berry]}" "${ttfb99[bare]}") µs | | |"
  echo "| chunk latency p50, $streams streams (µs) | ${chunk50[direct]} | ${chunk50[bare]} | | ${chunk50[berry]} | $(delta "${chunk50[berry]}" "${chunk50[bare]}") µs | | |"
  echo "| chunk latency p99, $streams streams (µs) | ${chunk99[direct]} | ${chunk99[bare]} | | ${chunk99[berry]} | $(delta "${chunk99[berry]}" "${chunk99[bare]}") µs | | |"
  echo "| RSS idle (MB) | | $idle_bare | | $idle_berry | $(ratio "$idle_berry" "$idle_bare") | ≤ 40 MB | $(check "$idle_berry <= 40") |"
  echo "| RSS peak, $streams streams (MB) | | ${load_rss[bare]} | | ${load_rss[berry]} | $(ratio "${load_rss[berry]}" "${load_rss[bare]}") | | |"
  echo "| RSS peak, $many_streams streams (MB) | | ${many_rss[bare]} | | ${many_rss[berry]} | $(ratio "${many_rss[berry]}" "${many_rss[bare]}") | ≤ 200 MB | $(check "${many_rss[berry]} <= 200") |"
  echo "| startup to listening, plugins cached (ms) | | | | $startup_ms | | ≤ 300 ms | $(check "$startup_ms <= 300") |"
  echo "| hot swap: plugin file replaced → new version serving (ms) | | | | $swap_ms | | ≤ 1,000 ms | $(check "$swap_ms <= 1000") |"
  echo "| auth plugin calls for $relayed relayed requests (principal cache) | | | | $auth_calls | | | |"
  echo "| strategy plugin call, in the run (µs) | | | | $strategy_us | | ≤ 1 µs | $(check "$strategy_us <= 1") |"
} > "$out/table.md"
cat "$out/table.md"

if [ "$write" = 1 ]; then python3 benches/put_table.py load-table "$out/table.md"; fi
