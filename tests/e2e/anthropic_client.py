"""End-to-end check with the official `anthropic` Python SDK as the client, against
Berry's /v1/messages.

Run by tests/integration/e2e.rs against a live gateway:
  BERRY_BASE_URL=http://127.0.0.1:PORT BERRY_TOKEN=... BERRY_MODEL=mixed BERRY_NATIVE_MODEL=claude \
    python anthropic_client.py
BERRY_MODEL's backends do not speak Anthropic's API (Berry translates);
BERRY_NATIVE_MODEL's does (Berry passes the request through). Exits non-zero on any
failed expectation.
"""

import os

import anthropic

base_url = os.environ["BERRY_BASE_URL"]
token = os.environ["BERRY_TOKEN"]
models = [os.environ["BERRY_MODEL"], os.environ["BERRY_NATIVE_MODEL"]]

client = anthropic.Anthropic(base_url=base_url, api_key=token, max_retries=0, timeout=30)
tools = [{"name": "search", "description": "Search the web.",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]

# What the SDK reported, by request id: the test compares Berry's usage ledger with it.
seen_usage = []

for n, model in enumerate(models):
    for i in range(3):
        rid = f"req_sdk_anthropic_{n}_{i}"
        message = client.messages.create(
            model=model, max_tokens=100, system="Be brief.",
            messages=[{"role": "user", "content": f"hello {i}"}], extra_headers={"x-request-id": rid})
        seen_usage.append((rid, message.usage.input_tokens, message.usage.output_tokens))
        assert message.type == "message" and message.role == "assistant", message
        assert message.content[0].text.endswith(f"You said: hello {i}"), message
        assert message.stop_reason == "end_turn", message
        assert message.usage.output_tokens > 0, message.usage
        # The upstream's model name, translated or not; the SDK's request id.
        assert message.model == "up-model", message.model
        assert (message._request_id or "").startswith("req_"), message._request_id

        rid = f"req_sdk_anthropic_{n}_{i}_stream"
        with client.messages.stream(
            model=model, max_tokens=100, messages=[{"role": "user", "content": f"stream {i}"}],
            extra_headers={"x-request-id": rid},
        ) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        seen_usage.append((rid, final.usage.input_tokens, final.usage.output_tokens))
        assert text.endswith(f"You said: stream {i}"), text
        assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0, final
        assert final.model == "up-model", final.model

        # Tools, streamed: the SDK assembles the tool_use block from its JSON pieces.
        with client.messages.stream(
            model=model, max_tokens=100, tools=tools, messages=[{"role": "user", "content": "find cats"}]
        ) as stream:
            final = stream.get_final_message()
        use = [block for block in final.content if block.type == "tool_use"]
        assert final.stop_reason == "tool_use", final
        assert use and use[0].name == "search" and use[0].input == {"query": "find cats"}, final.content

        # ...and the tool's result comes back as text.
        answer = client.messages.create(
            model=model, max_tokens=100, tools=tools,
            messages=[
                {"role": "user", "content": "find cats"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": use[0].id, "name": "search",
                                                   "input": use[0].input}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use[0].id,
                                              "content": "three cats"}]},
            ])
        assert answer.content[0].text.endswith("You said: three cats"), answer

count = client.messages.count_tokens(model=models[1], messages=[{"role": "user", "content": "count me"}])
assert count.input_tokens > 0, count

bad = anthropic.Anthropic(base_url=base_url, api_key="berry-not-a-real-token", max_retries=0)
try:
    bad.messages.create(model=models[0], max_tokens=10, messages=[{"role": "user", "content": "x"}])
except anthropic.AuthenticationError as e:
    assert e.status_code == 401
    assert e.body["error"]["type"] == "authentication_error", e.body
else:
    raise AssertionError("a wrong key must raise AuthenticationError")

try:
    client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "x"}])
except anthropic.NotFoundError:
    pass
else:
    raise AssertionError("an unknown model must raise NotFoundError")

# A caller over its rate limit gets Anthropic's error shape too.
limited = anthropic.Anthropic(base_url=base_url, api_key=os.environ["BERRY_LIMITED_TOKEN"], max_retries=0)
limited.messages.create(model=models[0], max_tokens=10, messages=[{"role": "user", "content": "once"}])
try:
    limited.messages.create(model=models[0], max_tokens=10, messages=[{"role": "user", "content": "twice"}])
except anthropic.RateLimitError as e:
    assert e.status_code == 429
    assert e.body["type"] == "error" and e.body["error"]["type"] == "rate_limit_error", e.body
    assert e.response.headers.get("request-id", "").startswith("req_"), e.response.headers
else:
    raise AssertionError("a caller over its rate limit must raise RateLimitError")

for rid, prompt, completion in seen_usage:
    print(f"USAGE {rid} {prompt} {completion}")
print("anthropic SDK end-to-end: OK")
