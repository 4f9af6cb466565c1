-- wrk script: POST a small chat completion with a bearer token.
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BERRY_BENCH_TOKEN") or "berry-bench-token")
