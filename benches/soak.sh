#!/usr/bin/env bash
# The soak: Berry under mixed load for a long while (default 10 minutes) while its
# backends are killed and restarted in turn; its RSS is sampled throughout and must
# stay flat (within 10%) once warmed up. Request lines are logged to a file, as
# operators run it.
#
#   benches/soak.sh [--minutes N] [--write]
#
# Load, all at once: ~1,000 non-streaming req/s (wrk, paced), 100 concurrent SSE
# streams repeating, and a trickle of bad traffic (wrong token, unknown model,
# malformed and oversized bodies, clients that hang up mid-stream). Every 40 s one
# of the three mock providers is killed (SIGKILL) and restarted 10 s later on the
# same port. Needs wrk and curl. Writes target/bench/soak.md (and the RSS samples
# next to it); --write puts the table into BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=10 write=0
while [ $# -gt 0 ]; do
  case $1 in
    --minutes) minutes=$2; shift ;;
    --write) write=1 ;;
    *) echo "usage: benches/soak.sh [--minutes N] [--write]" >&2; exit 2 ;;
  esac
  shift
done
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
seconds=$((minutes * 60))
warmup=60

cargo build --release -q -p berry -p berry-bench-tools
bin=target/release
out=target/bench
mkdir -p "$out"
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; pkill -P $$ 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

wait_for() { # file pattern → the address after the pattern
  for _ in $(seq 2000); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -o "$2[^ /]*" "$1" | tail -1 | sed "s|$2||"; return; fi
    sleep 0.005
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }

# --- three mock providers, restartable on their ports -------------------------------
declare -A mock_pid mock_port
start_mock() { # index [port]
  "$bin/berry" mock-provider --port "${2:-0}" --name "m$1" --latency-ms 2 --chunks 10 --chunk-delay-ms 30 \
    >> "$tmp/mock$1.log" 2>&1 &
  mock_pid[$1]=$!
}
for i in 1 2 3; do
  start_mock $i
  addr=$(wait_for "$tmp/mock$i.log" "listening on http://")
  mock_port[$i]=${addr##*:}
done

{
  echo '[settings]'
  echo 'admin_token = "berry-soak-admin"'
  echo 'request_timeout_seconds = 5'
  echo 'first_byte_timeout_seconds = 3'
  echo 'connection_timeout_seconds = 1'
  echo 'circuit_breaker_threshold = 5'
  echo 'circuit_breaker_cooldown_seconds = 5'
  echo 'health_check_interval_seconds = 2'
  echo 'recovery_check_interval_seconds = 2'
  echo 'max_request_body_bytes = 65536'
  for i in 1 2 3; do
    printf '[providers.m%s]\nbase_url = "http://127.0.0.1:%s/v1"\napi_key = "sk-soak-%s"\nmodels = ["mock"]\n' \
      "$i" "${mock_port[$i]}" "$i"
  done
  for s in smart_ai round_robin; do
    printf '[models.%s]\nname = "%s"\nstrategy = "%s"\n' "$s" "$s" "$s"
    for i in 1 2 3; do printf '[[models.%s.backends]]\nprovider = "m%s"\nmodel = "mock"\n' "$s" "$i"; done
  done
  printf '[users.soak]\ntoken = "berry-soak-token"\n'
} > "$tmp/berry.toml"
export BERRY_CACHE_DIR="$tmp/cache" RUST_LOG=info
"$bin/berry" serve --config "$tmp/berry.toml" --listen 127.0.0.1:0 > "$tmp/berry.log" 2>&1 &
berry_pid=$!
berry=$(wait_for "$tmp/berry.log" "listening on http://")
url="http://$berry/v1/chat/completions"
echo "== soak: ${minutes} min against http://$berry (pid $berry_pid)" >&2

# --- RSS, every 5 s ------------------------------------------------------------------
: > "$out/soak-rss.csv"
( t0=$(date +%s); while kill -0 $berry_pid 2>/dev/null; do
    echo "$(( $(date +%s) - t0 )),$(rss_mb $berry_pid)" >> "$out/soak-rss.csv"; sleep 5
  done ) &

# --- the load --------------------------------------------------------------------------
# Non-streaming, ~1,000 req/s: 20 connections, each one request every 20 ms.
sed 's/"model":"bench"/"model":"smart_ai"/' benches/chat.lua > "$tmp/chat.lua"
BERRY_BENCH_TOKEN=berry-soak-token WRK_DELAY_MS=20 \
  wrk -t1 -c20 -d"${seconds}s" --timeout 10s -s "$tmp/chat.lua" "$url" > "$tmp/wrk.txt" 2>&1 &
wrk_pid=$!
# 100 concurrent streams, repeating.
"$bin/stream-load" --url "$url" --token berry-soak-token --model round_robin --streams 100 --seconds "$seconds" \
  > "$tmp/streams.txt" 2>&1 &
streams_pid=$!
# Bad traffic, about 10 requests a second.
(
  big=$(head -c 100000 /dev/zero | tr '\0' 'x')
  while kill -0 $wrk_pid 2>/dev/null; do
    c() { curl -s -o /dev/null --max-time 2 "$@" || true; }
    c -H 'Authorization: Bearer wrong' -d '{"model":"smart_ai"}' "$url"
    c -H 'Authorization: Bearer berry-soak-token' -d '{"model":"nope","messages":[]}' "$url"
    c -H 'Authorization: Bearer berry-soak-token' -d '{"model":' "$url"
    c -H 'Authorization: Bearer berry-soak-token' -d "{\"model\":\"smart_ai\",\"x\":\"$big\"}" "$url"
    # A client that hangs up after the first bytes of a stream.
    curl -s -o /dev/null --max-time 0.05 -H 'Authorization: Bearer berry-soak-token' \
      -d '{"model":"round_robin","stream":true,"messages":[]}' "$url" || true
    sleep 0.5
  done
) &

# --- chaos: kill a backend every 40 s, restart it 10 s later ---------------------------
kills=0
end=$(( $(date +%s) + seconds ))
i=1
while [ $(( $(date +%s) + 40 )) -lt "$end" ]; do
  sleep 30
  kill -9 "${mock_pid[$i]}" 2>/dev/null || true
  wait "${mock_pid[$i]}" 2>/dev/null || true
  kills=$((kills + 1))
  sleep 10
  start_mock $i "${mock_port[$i]}"
  i=$(( i % 3 + 1 ))
done
wait $wrk_pid || true
wait $streams_pid || true
sleep 6

# --- results ---------------------------------------------------------------------------
wrk_result=$(grep '^RESULT ' "$tmp/wrk.txt" | sed 's/^RESULT //')
stream_result=$(grep '^{' "$tmp/streams.txt" | tail -1)
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
log_mb=$(du -m "$tmp/berry.log" | cut -f1)
log_lines=$(wc -l < "$tmp/berry.log")
read -r first last lo hi samples < <(python3 - "$out/soak-rss.csv" "$warmup" <<'PY'
import sys
rows = [tuple(map(float, l.split(","))) for l in open(sys.argv[1]) if "," in l]
after = [rss for t, rss in rows if t >= float(sys.argv[2])]
print(after[0], after[-1], min(after), max(after), len(after))
PY
)
flat=$(python3 -c "print('✅' if $hi <= 1.10 * $lo else '❌')")
{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores; \`benches/soak.sh --minutes $minutes\`"
  echo
  echo "| measure | value |"
  echo "|---|---:|"
  echo "| duration | ${minutes} min, ${kills} backend kills (SIGKILL, restarted 10 s later) |"
  echo "| non-streaming requests (wrk, ~1,000 req/s) | $(json "$wrk_result" requests) |"
  echo "| … non-2xx or failed | $(json "$wrk_result" errors) |"
  echo "| streams (100 concurrent): completed / of which cut by an SSE error event / failed to start | $(json "$stream_result" completed) / $(json "$stream_result" interrupted) / $(json "$stream_result" errors) |"
  echo "| request log written | ${log_lines} lines, ${log_mb} MB |"
  echo "| RSS after ${warmup} s warm-up: first / last sample (MB) | $first / $last |"
  echo "| RSS after warm-up: min / max of $samples samples (MB) | $lo / $hi |"
  echo "| RSS flat within 10% after warm-up (max ≤ 1.10 × min) | $flat |"
} > "$out/soak.md"
cat "$out/soak.md"

if [ "$write" = 1 ]; then python3 benches/put_table.py soak-table "$out/soak.md"; fi
