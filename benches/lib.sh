# Helpers shared by the benchmark scripts (sourced, not run).

# plugin_mean_us METRICS PLUGIN → the plugin's mean call time in µs over the
# process's life, from `berry_plugin_call_duration_seconds` in a /metrics text.
plugin_mean_us() {
  local sum count
  sum=$(echo "$1" | awk -v p="plugin=\"$2\"" '/^berry_plugin_call_duration_seconds_sum/ && index($0,p) {print $2}')
  count=$(echo "$1" | awk -v p="plugin=\"$2\"" '/^berry_plugin_call_duration_seconds_count/ && index($0,p) {print $2}')
  python3 -c "print(round($sum/$count*1e6,2))"
}
