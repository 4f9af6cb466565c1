#!/usr/bin/env bash
# Run the criterion micro-benchmarks and print their table (mean time per
# iteration; ratios against the native baseline of the same run).
#
#   benches/micro.sh            # cargo bench, then the table
#   benches/micro.sh --write    # … and put the table into BENCHMARKS.md
#   benches/micro.sh --table    # only print the table of the last run
set -euo pipefail
cd "$(dirname "$0")/.."
write=0 run=1
for arg in "$@"; do
  case $arg in
    --write) write=1 ;;
    --table) run=0 ;;
    *) echo "usage: benches/micro.sh [--write] [--table]" >&2; exit 2 ;;
  esac
done
[ "$run" = 1 ] && cargo bench -q -p berry --bench plugins --bench snapshot --bench sse -- --warm-up-time 1 --measurement-time 3 >&2
mkdir -p target/bench
python3 - <<'PY'
import json, pathlib, subprocess
root = pathlib.Path("target/criterion")
rows = {}
for est in sorted(root.glob("**/new/estimates.json")):
    bench = json.loads((est.parent / "benchmark.json").read_text())
    rows[bench["full_id"]] = json.loads(est.read_text())["mean"]["point_estimate"]
def fmt(ns):
    if ns >= 1e6:
        return f"{ns/1e6:.2f} ms"
    return f"{ns/1000:.2f} µs" if ns >= 1000 else f"{ns:.0f} ns"
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
out = [f"`cargo bench` (criterion, mean per iteration), commit {commit}, {cpu}", "",
       "| benchmark | time | vs native baseline | target |", "|---|---:|---:|---|"]
for name, ns in rows.items():
    group, _, rest = name.partition("/")
    size = rest.rsplit("/", 1)[-1]
    base = rows.get(f"strategy_select/native_baseline/{size}") if group == "strategy_select" else None
    ratio = f"{ns/base:.1f}×" if base and "native_baseline" not in name else ""
    target = ""
    # A strategy call (8 backends) within 1 µs since contract 0.2 (issue 22; SPEC
    # asks 2 µs); an auth call, uncached, within 2 µs (SPEC).
    if group == "strategy_select" and size == "8" and "native" not in name:
        target = "≤ 1 µs " + ("✅" if ns <= 1000 else "❌")
    if group == "auth_authorize":
        target = "≤ 2 µs " + ("✅" if ns <= 2000 else "❌")
    if group == "stream_translate":
        target = "≤ 5 µs per chunk " + ("✅" if ns <= 5000 else "❌")
    time = fmt(ns)
    if group == "sse_relay":
        time += f" ({fmt(ns / (int(size) + 1))} per chunk)"  # + the [DONE] event
    out.append(f"| {name} | {time} | {ratio} | {target} |")
table = "\n".join(out) + "\n"
pathlib.Path("target/bench/micro.md").write_text(table)
print(table)
PY
if [ "$write" = 1 ]; then python3 benches/put_table.py micro-table target/bench/micro.md; fi
