#!/usr/bin/env bash
# A first, rough throughput comparison: wrk against the mock provider directly, then
# against Berry (token_auth + smart_ai over 4 backends on that mock), same run.
# Usage: bench/rough.sh [seconds] [connections]     (needs `wrk`; builds --release)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}
cargo build --release -q
bin=target/release/berry
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

wait_for() { # file pattern → first match of the address after the pattern
  for _ in $(seq 100); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -o "$2[^ /]*" "$1" | head -1 | sed "s|$2||"; return; fi
    sleep 0.1
  done
  echo "timed out waiting for $2 in $1" >&2; exit 1
}

"$bin" mock-provider --port 0 > "$tmp/mock.log" 2>&1 &
mock=$(wait_for "$tmp/mock.log" "listening on http://")
{
  echo '[settings]'
  echo 'max_retries = 1'
  for i in 1 2 3 4; do
    printf '[providers.p%s]\nbase_url = "http://%s/v1"\napi_key = "sk-bench-%s"\nmodels = ["mock"]\n' "$i" "$mock" "$i"
  done
  printf '[models.bench]\nname = "bench"\nstrategy = "smart_ai"\n'
  for i in 1 2 3 4; do
    printf '[[models.bench.backends]]\nprovider = "p%s"\nmodel = "mock"\nweight = %s\n' "$i" "$i"
  done
  printf '[users.bench]\ntoken = "berry-bench-token"\n'
} > "$tmp/berry.toml"
# Per-request log lines off: this measures the proxy path, not the log sink.
RUST_LOG=info,berry::request=warn "$bin" serve --config "$tmp/berry.toml" --listen 127.0.0.1:0 > "$tmp/berry.log" 2>&1 &
berry=$(wait_for "$tmp/berry.log" "listening on http://")

run() { wrk -t2 -c"$conns" -d"${secs}s" --latency -s bench/chat.lua "$1" | tee "$tmp/$2.txt" | grep -E "Requests/sec|50%|99%"; }
echo "== direct to the mock ($mock)"; run "http://$mock/v1/chat/completions" direct
echo "== through Berry ($berry)";     run "http://$berry/v1/chat/completions" berry
d=$(grep Requests/sec "$tmp/direct.txt" | awk '{print $2}')
b=$(grep Requests/sec "$tmp/berry.txt" | awk '{print $2}')
echo "throughput ratio berry/direct: $(python3 -c "print(f'{$b/$d:.2f}')")"
