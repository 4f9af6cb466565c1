#!/usr/bin/env bash
# A/B: two berry binaries (say, the previous commit's and this one's) under the same
# load in one run, beside the bare proxy, rounds alternating so a slow spell of the
# machine hits all three: throughput, CPU per request and latency at 1 and 32
# connections, with one log line per request written to a file, as operators run it
# (the usage ledger off: it is the same code in both), and the strategy plugin's
# mean call time from each binary's own histogram.
#
#   benches/ab.sh OLD_BERRY NEW_BERRY [ROUNDS]
#
# Needs wrk; builds the bench tools (the bare proxy, the mock comes from NEW_BERRY).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
[ $# -ge 2 ] || { echo "usage: benches/ab.sh OLD_BERRY NEW_BERRY [ROUNDS]" >&2; exit 2; }
old=$(realpath "$1") new=$(realpath "$2") rounds=${3:-5}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -q -p berry-bench-tools
tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
wait_for() {
  for _ in $(seq 4000); do
    if grep -q "$2" "$1" 2>/dev/null; then grep -o "$2[^ /]*" "$1" | head -1 | sed "s|$2||"; return; fi
    sleep 0.005
  done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
json() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

"$new" mock-provider --port 0 > "$tmp/mock.log" 2>&1 &
mock=$(wait_for "$tmp/mock.log" "listening on http://")
target/release/bare-proxy --upstream "$mock" > "$tmp/bare.log" 2>&1 &
bare_pid=$!
bare=$(wait_for "$tmp/bare.log" "listening on http://")
{
  echo '[settings]'; echo 'max_retries = 1'; echo 'usage_db = ""'; echo 'admin_token = "berry-bench-admin"'
  for i in 1 2 3 4; do
    printf '[providers.p%s]\nbase_url = "http://%s/v1"\napi_key = "sk-bench-%s"\nmodels = ["mock"]\n' "$i" "$mock" "$i"
  done
  printf '[models.bench]\nname = "bench"\nstrategy = "smart_ai"\n'
  for i in 1 2 3 4; do printf '[[models.bench.backends]]\nprovider = "p%s"\nmodel = "mock"\nweight = %s\n' "$i" "$i"; done
  printf '[users.bench]\ntoken = "berry-bench-token"\n'
} > "$tmp/berry.toml"
declare -A pid url
for t in old new; do
  bin=$old; [ "$t" = new ] && bin=$new
  BERRY_CACHE_DIR="$tmp/cache-$t" RUST_LOG=info "$bin" serve --config "$tmp/berry.toml" --listen 127.0.0.1:0 \
    > "$tmp/$t.log" 2>&1 &
  pid[$t]=$!
  url[$t]="http://$(wait_for "$tmp/$t.log" "listening on http://")/v1/chat/completions"
done
pid[bare]=$bare_pid
url[bare]="http://$bare/v1/chat/completions"

declare -A rps cpu p50 p99
for t in bare old new; do wrk -t1 -c8 -d1s -s benches/chat.lua "${url[$t]}" > /dev/null; done
for conns in 1 32; do
  for round in $(seq "$rounds"); do
    for t in bare old new; do
      before=$(cpu_ticks "${pid[$t]}")
      r=$(wrk -t1 -c"$conns" -d4s -s benches/chat.lua "${url[$t]}" | grep '^RESULT ' | sed 's/^RESULT //')
      after=$(cpu_ticks "${pid[$t]}")
      rps[$t,$conns]+=" $(json "$r" rps)"; p50[$t,$conns]+=" $(json "$r" p50_us)"; p99[$t,$conns]+=" $(json "$r" p99_us)"
      cpu[$t,$conns]+=" $(python3 -c "print(($after-$before)*1e6/$clk_tck/$(json "$r" requests))")"
      echo "c$conns round $round $t $r" >&2
    done
  done
done
# The strategy's mean call time over the whole run, from each binary's histogram.
call_us() {
  plugin_mean_us "$(curl -fsS -H "Authorization: Bearer berry-bench-admin" "${url[$1]%/v1/chat/completions}/metrics")" smart_ai
}
echo "| connections | target | req/s | CPU µs per request | vs bare proxy (CPU) | p50 / p99 (µs) |"
echo "|---|---|---:|---:|---:|---|"
for conns in 1 32; do
  bare_cpu=$(median ${cpu[bare,$conns]})
  for t in bare old new; do
    c=$(median ${cpu[$t,$conns]})
    printf '| %s | %s | %.0f | %.1f | %.2f× | %.0f / %.0f |\n' "$conns" "$t" "$(median ${rps[$t,$conns]})" "$c" \
      "$(python3 -c "print($c/$bare_cpu)")" "$(median ${p50[$t,$conns]})" "$(median ${p99[$t,$conns]})"
  done
done
echo
echo "Strategy call (smart_ai over 4 backends), mean over the run: old $(call_us old) µs, new $(call_us new) µs."
