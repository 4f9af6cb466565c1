#!/usr/bin/env bash
# Config size and memory after bursts (issue 17): the release binary's start time and
# RSS with tens of thousands of users and models, and its RSS after bursts of streams.
#
#   benches/scale.sh            # prints the two tables (~5 minutes after the build)
#   benches/scale.sh --write    # … and puts them into BENCHMARKS.md
#   benches/scale.sh --only config|bursts   # one of the two
#
# Builds berry and the bench tools with --release.
set -euo pipefail
cd "$(dirname "$0")/.."
write=0 only=""
while [ $# -gt 0 ]; do
  case $1 in
    --write) write=1 ;;
    --only) only=$2; shift ;;
    *) echo "usage: benches/scale.sh [--write] [--only config|bursts]" >&2; exit 2 ;;
  esac
  shift
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -q -p berry -p berry-bench-tools
bin=target/release
out=target/bench
mkdir -p "$out"
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }
# Start berry on $1; prints "<pid> <ms to listening> <address>".
start() {
  local log="$tmp/berry.log" t0
  t0=$(now_ms)
  CONFIG_PATH="$1" BIND_ADDRESS=127.0.0.1:0 BERRY_CACHE_DIR="$tmp/cache" RUST_LOG=warn,berry=info \
    "$bin/berry" > "$log" 2>&1 &
  local pid=$!
  for _ in $(seq 60000); do
    if grep -q "listening on http://" "$log"; then
      echo "$pid $(( $(now_ms) - t0 )) $(grep -o 'listening on http://[^ ]*' "$log" | head -1 | sed 's|listening on http://||')"
      return
    fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.005
  done
  echo "berry did not start" >&2; cat "$log" >&2; exit 1
}
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

if [ "$only" != bursts ]; then
# --- config size -----------------------------------------------------------------
# config MODELS USERS hashed|plain STRATEGY → the file's path
config() {
  python3 - "$@" <<'PY'
import hashlib, sys
models, users, kind, strategy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = ['[providers.p1]\nbase_url = "mock://p1"\nmodels = ["up"]\n[providers.p2]\nbase_url = "mock://p2"\nmodels = ["up"]\n']
for m in range(models):
    out.append(f'[models.m{m}]\nname = "m{m}"\nstrategy = "{strategy}"\n'
               f'[[models.m{m}.backends]]\nprovider = "p1"\nmodel = "up"\ntags = ["premium"]\n'
               f'[[models.m{m}.backends]]\nprovider = "p2"\nmodel = "up"\nweight = 2\n')
for u in range(users):
    token = f"user-{u}"
    if kind == "hashed":
        out.append(f'[users.u{u}]\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\nallowed_models = ["m0", "m1"]\n')
    else:
        out.append(f'[users.u{u}]\ntoken = "{token}"\nallowed_models = ["m0", "m1"]\n')
print("".join(out))
PY
}
table="$out/scale-config.md"
{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD), $(nproc) cores; \`benches/scale.sh\`. Start: process start to listening, compiled plugins cached (second start); RSS 2 s after."
  echo
  echo "| configuration | config file | start (ms) | RSS idle (MB) |"
  echo "|---|---:|---:|---:|"
} > "$table"
for spec in "3 2 plain weighted_random" "3 1000 plain weighted_random" "3 10000 plain weighted_random" \
            "3 50000 plain weighted_random" "3 50000 hashed weighted_random" \
            "1000 2 plain weighted_random" "10000 2 plain weighted_random" "20000 2 plain weighted_random" \
            "20000 2 plain smart_ai" "20000 50000 hashed smart_ai"; do
  set -- $spec
  config "$@" > "$tmp/berry.toml"
  size=$(du -h "$tmp/berry.toml" | cut -f1)
  read -r pid _ _ < <(start "$tmp/berry.toml"); stop "$pid"     # fills the compile cache
  read -r pid ms _ < <(start "$tmp/berry.toml")
  sleep 2
  rss=$(rss_mb "$pid")
  stop "$pid"
  echo "| $1 models, $2 users ($3 tokens), $4 | $size | $ms | $rss |" >> "$table"
  echo "config $spec: start ${ms} ms, RSS ${rss} MB" >&2
done
cat "$table"; echo
[ "$write" = 1 ] && python3 benches/put_table.py scale-config-table "$table"
fi
[ "$only" = config ] && exit 0

# --- memory after bursts ---------------------------------------------------------
"$bin/berry" mock-provider --port 0 --chunks 20 --chunk-delay-ms 50 > "$tmp/mock.log" 2>&1 &
for _ in $(seq 2000); do grep -q "listening on http://" "$tmp/mock.log" && break; sleep 0.005; done
mock=$(grep -o 'listening on http://[^ /]*' "$tmp/mock.log" | sed 's|listening on http://||')
printf '[settings]\nclient_header_timeout_seconds = 5\n[providers.p]\nbase_url = "http://%s/v1"\napi_key = "sk-bench"\nmodels = ["mock"]\n[models.bench]\nname = "bench"\n[[models.bench.backends]]\nprovider = "p"\nmodel = "mock"\n[users.bench]\ntoken = "berry-bench-token"\n' "$mock" > "$tmp/burst.toml"
read -r pid _ addr < <(start "$tmp/burst.toml")
"$bin/stream-load" --url "http://$addr/v1/chat/completions" --token berry-bench-token --streams 20 --seconds 2 > /dev/null
sleep 3
idle=$(rss_mb "$pid")
samples="$tmp/rss"
: > "$samples"
( while kill -0 "$pid" 2>/dev/null; do rss_mb "$pid" >> "$samples"; echo >> "$samples"; sleep 0.2; done ) &
sampler=$!
for round in 1 2; do
  "$bin/stream-load" --url "http://$addr/v1/chat/completions" --token berry-bench-token --streams 5000 --seconds 8 > "$tmp/burst$round.json"
done
end_ms=$(now_ms)
peak=$(sort -n "$samples" | tail -1)
after() { # RSS n seconds after the bursts ended
  local wait_ms=$(( end_ms + $1 * 1000 - $(now_ms) ))
  [ "$wait_ms" -gt 0 ] && sleep "$(awk "BEGIN {print $wait_ms/1000}")"
  rss_mb "$pid"
}
a10=$(after 10); a30=$(after 30); a60=$(after 60); a120=$(after 120)
kill "$sampler" 2>/dev/null || true
stop "$pid"
bursts="$out/scale-bursts.md"
{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ), commit $(git rev-parse --short HEAD); \`benches/scale.sh\`: two bursts of 5,000 concurrent streams (8 s each, 20 chunks 50 ms apart), RSS of the release binary."
  echo
  echo "| idle (MB) | peak (MB) | 10 s after (MB) | 30 s after (MB) | 60 s after (MB) | 120 s after (MB) | 60 s after vs idle |"
  echo "|---:|---:|---:|---:|---:|---:|---:|"
  echo "| $idle | $peak | $a10 | $a30 | $a60 | $a120 | $(awk "BEGIN {printf \"%.2f×\", $a60/$idle}") |"
} > "$bursts"
cat "$bursts"
[ "$write" = 1 ] && python3 benches/put_table.py scale-bursts-table "$bursts"
exit 0
