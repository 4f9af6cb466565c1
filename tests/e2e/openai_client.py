"""End-to-end check with the official `openai` Python SDK as the client.

Run by tests/integration/e2e.rs against a live gateway:
  BERRY_BASE_URL=http://127.0.0.1:PORT/v1 BERRY_TOKEN=... BERRY_MODEL=m python openai_client.py
Exits non-zero (with a traceback) on any failed expectation.
"""

import os

import openai

base_url = os.environ["BERRY_BASE_URL"]
token = os.environ["BERRY_TOKEN"]
model = os.environ["BERRY_MODEL"]

client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=30)

# Non-streaming chat.
reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "ping from the SDK"}])
text = reply.choices[0].message.content
assert "ping from the SDK" in text, text
assert reply.usage is not None and reply.usage.total_tokens > 0, reply.usage

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

# Model list.
ids = [m.id for m in client.models.list()]
assert model in ids, ids

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

print("openai SDK end-to-end: OK")
