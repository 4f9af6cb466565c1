#!/usr/bin/env bash
# Fuzz the config parser, the request-body rewrite, the SSE observers and the
# provider translations for a bounded time each (libFuzzer via cargo-fuzz). Not run by CI.
#
#   benches/fuzz.sh [SECONDS_PER_TARGET]      # default 120
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). libFuzzer wants nightly compiler
# flags; on the pinned stable toolchain RUSTC_BOOTSTRAP=1 allows them. Corpora grow
# in fuzz/corpus/<target>; a crash leaves its input in fuzz/artifacts/<target> and
# makes this script exit non-zero.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-120}"
export RUSTC_BOOTSTRAP=1
# No sanitizer: the code under test is safe Rust, and the targets look for panics
# and broken invariants; an uninstrumented build is several times faster.
mkdir -p corpus/config_parse corpus/request_body corpus/sse_events corpus/translations
# Seeds: the shipped configs, a typical body, a typical stream.
cp ../config/berry.toml ../config/examples/*.toml corpus/config_parse/
printf '%s' '{"model":"m","stream":true,"backend":"p:q","messages":[{"role":"user","content":"hi"}]}' \
  > corpus/request_body/seed.json
printf '\x05data: {"choices":[]}\n\nid: 1\nevent: x\ndata: {"usage":{"prompt_tokens":1}}\r\n\r\ndata: [DONE]\n\n' \
  > corpus/sse_events/seed.sse
printf '%s' '{"model":"m","system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AA"}}]},{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"tool_choice":"required","stop":["a"]}' \
  > corpus/translations/seed.json
for target in config_parse request_body sse_events translations; do
  echo "== $target (${seconds}s)"
  cargo fuzz run --sanitizer none "$target" "corpus/$target" -- -max_total_time="$seconds" -max_len=65536 2>&1 \
    | grep -E "^(#[0-9]+ +DONE|Done|==|INFO: seed|.*(panicked|ERROR|SUMMARY))" || true
  if ls "artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "$target: crash found, see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "no crashes"
