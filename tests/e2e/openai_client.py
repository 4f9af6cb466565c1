"""End-to-end check with the official `openai` Python SDK as the client.

Run by tests/integration/e2e.rs against a live gateway:
  BERRY_BASE_URL=http://127.0.0.1:PORT/v1 BERRY_TOKEN=... BERRY_MODEL=m python openai_client.py
Exits non-zero (with a traceback) on any failed expectation.
"""

import json
import os

import openai

base_url = os.environ["BERRY_BASE_URL"]
token = os.environ["BERRY_TOKEN"]
model = os.environ["BERRY_MODEL"]

client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=30)

# What the SDK reported, by request id: the test compares Berry's usage ledger with it.
seen_usage = []


def tagged(name):
    rid = f"req_sdk_openai_{name}"
    return rid, {"x-request-id": rid}


# Non-streaming chat.
rid, headers = tagged("plain")
reply = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "ping from the SDK"}], extra_headers=headers)
text = reply.choices[0].message.content
assert "ping from the SDK" in text, text
assert reply.usage is not None and reply.usage.total_tokens > 0, reply.usage
seen_usage.append((rid, reply.usage.prompt_tokens, reply.usage.completion_tokens))

# Streaming chat: content arrives in several chunks and reassembles.
pieces = []
chunks = 0
with client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "stream please"}], stream=True
) as stream:
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
assert chunks >= 3, chunks
assert "stream please" in "".join(pieces), pieces

# Model list: real creation times (when the model entered the gateway's config).
listed = list(client.models.list())
assert model in [m.id for m in listed], listed
assert all(m.created > 1_600_000_000 for m in listed), listed

# One rule for the answer's `model`: the upstream's own name, never the alias the
# client sent; the serving backend is named in a header.
raw = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "who"}])
assert raw.parse().model == "up-model", raw.parse().model
assert raw.headers.get("x-berry-backend") == "up/up-model", raw.headers

# Legacy completions, streamed: text_completion chunks the SDK can read.
pieces = [chunk.choices[0].text for chunk in client.completions.create(
    model=model, prompt="complete me", stream=True) if chunk.choices]
assert len(pieces) >= 2 and "".join(pieces).endswith("You said: complete me"), pieces

# Embeddings: the SDK asks for base64 by default and decodes it; the floats it gets
# are the ones asked for as floats.
decoded = client.embeddings.create(model=model, input="embed me").data[0].embedding
floats = client.embeddings.create(model=model, input="embed me", encoding_format="float").data[0].embedding
assert len(decoded) == 8 and any(abs(v) > 0.01 for v in decoded), decoded
assert all(abs(a - b) < 1e-6 for a, b in zip(decoded, floats)), (decoded, floats)

# A wrong key raises the SDK's AuthenticationError (HTTP 401, OpenAI-shaped body).
bad = openai.OpenAI(base_url=base_url, api_key="berry-not-a-real-token", max_retries=0)
try:
    bad.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
except openai.AuthenticationError as e:
    assert e.status_code == 401
    assert e.body and e.body.get("code") == "invalid_api_key", e.body
else:
    raise AssertionError("a wrong key must raise AuthenticationError")

# An unknown model raises NotFoundError.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
except openai.NotFoundError:
    pass
else:
    raise AssertionError("an unknown model must raise NotFoundError")

# A model whose backends speak OpenAI's, Anthropic's and Gemini's formats (round
# robin): every answer looks like OpenAI's to the SDK.
mixed = os.environ.get("BERRY_MIXED_MODEL")
if mixed:
    for i in range(3):
        rid, headers = tagged(f"mixed_{i}")
        reply = client.chat.completions.create(
            model=mixed, messages=[{"role": "user", "content": f"mixed {i}"}], extra_headers=headers)
        assert reply.choices[0].message.content.endswith(f"You said: mixed {i}"), reply
        assert reply.usage.completion_tokens > 0, reply.usage
        seen_usage.append((rid, reply.usage.prompt_tokens, reply.usage.completion_tokens))
        assert reply.model == "up-model", reply.model
    for i in range(3):
        pieces = []
        rid, headers = tagged(f"streamed_{i}")
        with client.chat.completions.create(
            model=mixed,
            messages=[{"role": "user", "content": f"streamed {i}"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers=headers,
        ) as stream:
            usage = None
            for chunk in stream:
                if chunk.usage:
                    usage = chunk.usage
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
        assert "".join(pieces).endswith(f"You said: streamed {i}"), pieces
        assert usage is not None and usage.completion_tokens > 0, usage
        seen_usage.append((rid, usage.prompt_tokens, usage.completion_tokens))
    tools = [{"type": "function", "function": {"name": "search", "description": "Search the web.",
              "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]
    for i in range(3):
        reply = client.chat.completions.create(
            model=mixed, messages=[{"role": "user", "content": "find cats"}], tools=tools)
        call = reply.choices[0].message.tool_calls[0]
        assert reply.choices[0].finish_reason == "tool_calls", reply
        assert call.function.name == "search" and json.loads(call.function.arguments) == {"query": "find cats"}, call
    for i in range(3):
        calls = {}
        with client.chat.completions.create(
            model=mixed, messages=[{"role": "user", "content": "find dogs"}], tools=tools, stream=True
        ) as stream:
            for chunk in stream:
                for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                    entry = calls.setdefault(tc.index, {"name": "", "arguments": ""})
                    if tc.function.name:
                        entry["name"] = tc.function.name
                    entry["arguments"] += tc.function.arguments or ""
        assert calls[0]["name"] == "search" and json.loads(calls[0]["arguments"]) == {"query": "find dogs"}, calls

# The Responses API and a single model's details.
response = client.responses.create(model=model, input="respond please")
assert response.output_text.endswith("You said: respond please"), response
events = [event.type for event in client.responses.create(model=model, input="stream it", stream=True)]
assert "response.output_text.delta" in events and events[-1] == "response.completed", events
assert client.models.retrieve(model).id == model

for rid, prompt, completion in seen_usage:
    print(f"USAGE {rid} {prompt} {completion}")
print("openai SDK end-to-end: OK")
