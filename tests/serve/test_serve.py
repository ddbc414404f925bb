"""`infer serve` driven by the official openai client and raw HTTP: completions and chat,
streaming and not, errors, batch invariance under concurrency, disconnects freeing KV
blocks, bad input, and 64 concurrent streams."""

import asyncio
import concurrent.futures
import json
import time
import urllib.error
import urllib.request

import openai
import pytest

from client_checks import client, completion_and_stream, error_case

PROMPTS = [
    "Once upon a time",
    "The little dog",
    "Lily wanted to",
    "One day, a big bear found a red ball in the park and",
    "Tom",
    "The sun was hot and the children",
    "She said",
    "In a small town there lived a girl who loved to sing. Every morning",
]


def raw(url, path, body, content_type="application/json"):
    req = urllib.request.Request(url + path, data=body, method="POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_completions_stream_and_not(stories):
    completion_and_stream(stories.url, stories.name)


def test_error_case(stories):
    error_case(stories.url, stories.name)


def test_chat_stream_and_not(smol):
    c = client(smol.url)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = c.chat.completions.create(model=smol.name, messages=msgs, max_tokens=20, temperature=0)
    text = r.choices[0].message.content
    assert "Paris" in text, text
    assert r.choices[0].message.role == "assistant"
    assert r.usage.prompt_tokens > 5 and r.usage.completion_tokens > 0
    chunks = list(c.chat.completions.create(model=smol.name, messages=msgs, max_tokens=20,
                                            temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    # Sampling parameters, logprobs and stop strings are accepted and honoured.
    r = c.chat.completions.create(model=smol.name, messages=msgs, max_tokens=8, temperature=0.8,
                                  top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.5,
                                  logit_bias={"28": -100}, logprobs=True, top_logprobs=3,
                                  extra_body={"top_k": 40, "min_p": 0.05})
    lp = r.choices[0].logprobs.content
    assert len(lp) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in lp)
    r2 = c.chat.completions.create(model=smol.name, messages=msgs, max_tokens=8, temperature=0.8,
                                   top_p=0.9, seed=7, presence_penalty=0.5, frequency_penalty=0.5,
                                   logit_bias={"28": -100}, extra_body={"top_k": 40, "min_p": 0.05})
    assert r2.choices[0].message.content == r.choices[0].message.content, "same seed, same text"
    r = c.chat.completions.create(model=smol.name, messages=msgs, max_tokens=20, temperature=0,
                                  stop=["Paris"])
    assert "Paris" not in r.choices[0].message.content and r.choices[0].finish_reason == "stop"


def test_concurrent_greedy_equals_one_at_a_time(stories):
    c = client(stories.url)

    def one(p):
        r = c.completions.create(model=stories.name, prompt=p, max_tokens=24, temperature=0,
                                 logprobs=1, extra_body={"ignore_eos": True})
        return r.choices[0].text, r.choices[0].logprobs.tokens, r.choices[0].logprobs.token_logprobs

    alone = [one(p) for p in PROMPTS]
    with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as ex:
        together = list(ex.map(one, PROMPTS))
    for p, a, t in zip(PROMPTS, alone, together):
        assert a == t, f"{p!r}: alone {a[0]!r} vs concurrent {t[0]!r}"


def test_disconnect_mid_stream_frees_kv_blocks(smol):
    """SmolLM2 (slow enough that 900 tokens take many steps) is dropped after 3 chunks."""
    import httpx

    before = smol.metrics()
    assert before["infer_kv_cache_blocks_used"] == 0
    body = {"model": smol.name, "prompt": "Once upon a time", "max_tokens": 900,
            "temperature": 0, "stream": True, "ignore_eos": True}
    with httpx.Client(timeout=60) as h:
        with h.stream("POST", smol.url + "/v1/completions", json=body) as r:
            assert r.status_code == 200
            n = 0
            lines = r.iter_lines()
            seen = []
            for line in lines:
                if line.startswith("data: {"):
                    n += 1
                    seen.append(line)
                if n == 3:
                    break
            held = smol.metrics()
            if held["infer_kv_cache_blocks_used"] == 0:
                # The sequence ended early: say how (the rest of the stream, the metrics and
                # the server's log) rather than only that it did.
                rest = [l for _, l in zip(range(5), lines)]
                raise AssertionError(f"no KV blocks held mid-stream; read {seen}, then {rest}; "
                                     f"metrics {held}; log {smol.log_text()[-2000:]}")
    deadline = time.time() + 10
    while time.time() < deadline:
        m = smol.metrics()
        if m["infer_kv_cache_blocks_used"] == 0:
            break
        time.sleep(0.05)
    assert m["infer_kv_cache_blocks_used"] == 0, m
    assert m["infer_cancelled_requests_total"] >= before["infer_cancelled_requests_total"] + 1
    assert m["infer_running_sequences"] == 0


def test_bad_input_gets_4xx_and_server_keeps_serving(stories):
    url, name = stories.url, stories.name
    cases = [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b"", 400),
        (json.dumps({"model": name, "prompt": "x", "temperature": "hot"}).encode(), 400),
        (json.dumps({"model": name, "prompt": 5}).encode(), 400),
        (json.dumps({"model": name}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "max_tokens": -1}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "max_tokens": 0}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "top_p": 2}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "n": 2}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "logit_bias": {"abc": 1}}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "logit_bias": {"999999": 1}}).encode(), 400),
        (json.dumps({"model": name, "prompt": "x", "stop": [""]}).encode(), 400),
        (json.dumps({"model": name, "prompt": [999999]}).encode(), 400),
        (json.dumps({"model": name, "prompt": []}).encode(), 400),
        (json.dumps({"model": "other", "prompt": "x"}).encode(), 404),
        (json.dumps({"model": name, "prompt": "x " * 600_000}).encode(), 413),
        (json.dumps({"model": name, "prompt": "once upon a time " * 200}).encode(), 413),
    ]
    for body, want in cases:
        status, err = raw(url, "/v1/completions", body)
        assert status == want, (body[:80], status, err)
        assert set(err["error"]) >= {"message", "type", "param", "code"}, err
    status, err = raw(url, "/v1/chat/completions", json.dumps({"model": name, "messages": "hi"}).encode())
    assert status == 400, err
    status, err = raw(url, "/v1/chat/completions", json.dumps({"model": name, "messages": [{"role": "wizard", "content": "x"}]}).encode())
    assert status == 400, err
    # Fields that would change the output and are not supported are refused by name, never
    # ignored (a json_schema answered with free text, tools dropped).
    chat_msg = [{"role": "user", "content": "x"}]
    for path, body, field in [
        ("/v1/chat/completions", {"messages": chat_msg, "response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/chat/completions", {"messages": chat_msg, "tools": []}, "tools"),
        ("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix"),
        ("/v1/completions", {"prompt": "x", "best_of": 2}, "best_of"),
    ]:
        status, err = raw(url, path, json.dumps({"model": name, **body}).encode())
        assert status == 400 and err["error"]["param"] == field, (field, status, err)
        assert field in err["error"]["message"], err
    status, err = raw(url, "/v1/chat/completions", json.dumps(
        {"model": name, "messages": [{"role": "user", "content": "x", "tool_calls": []}]}).encode())
    assert status == 400 and "tool_calls" in err["error"]["message"], err
    # An unknown route and a wrong method get JSON errors with their own codes.
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/v1/nope", timeout=10)
    assert e.value.code == 404 and json.loads(e.value.read())["error"]["code"] == "not_found"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/v1/completions", timeout=10)
    assert e.value.code == 405 and json.loads(e.value.read())["error"]["code"] == "method_not_allowed"
    # `user` (the caller's end-user id) changes nothing and is accepted.
    status, _ = raw(url, "/v1/completions", json.dumps(
        {"model": name, "prompt": "x", "max_tokens": 2, "user": "u1"}).encode())
    assert status == 200
    m = stories.metrics()
    assert m['infer_requests_total{status="400"}'] >= 15
    # Still serving.
    completion_and_stream(url, name)


def test_64_concurrent_streams_complete(stories):
    ac = openai.AsyncOpenAI(base_url=stories.url + "/v1", api_key="none", max_retries=0, timeout=300)

    async def one(i):
        s = await ac.completions.create(model=stories.name, prompt=PROMPTS[i % len(PROMPTS)],
                                        max_tokens=16 + i % 5, temperature=0, stream=True,
                                        extra_body={"ignore_eos": True})
        text, last = "", None
        async for ch in s:
            text += ch.choices[0].text
            last = ch
        return last.choices[0].finish_reason, last.usage.completion_tokens

    async def all_():
        return await asyncio.gather(*(one(i) for i in range(64)))

    out = asyncio.run(all_())
    assert len(out) == 64
    for i, (fin, n) in enumerate(out):
        assert fin == "length" and n == 16 + i % 5, (i, fin, n)
    m = stories.metrics()
    assert m["infer_kv_cache_blocks_used"] == 0 and m["infer_waiting_sequences"] == 0


def test_full_queue_answers_503_and_recovers():
    from conftest import STORIES, Server, model_path

    s = Server(model_path(STORIES), "small-queue", "--max-seqs", "1", "--max-batch-tokens", "16",
               "--max-waiting", "2")
    try:
        body = json.dumps({"model": "small-queue", "prompt": "Once upon a time", "max_tokens": 400,
                           "temperature": 0, "ignore_eos": True}).encode()
        with concurrent.futures.ThreadPoolExecutor(10) as ex:
            out = list(ex.map(lambda _: raw(s.url, "/v1/completions", body), range(10)))
        codes = sorted(c for c, _ in out)
        assert codes.count(503) >= 1 and codes.count(200) >= 3, codes
        assert set(codes) <= {200, 503}, codes
        for c, e in out:
            if c == 503:
                assert e["error"]["code"] == "queue_full", e
        completion_and_stream(s.url, "small-queue")
    finally:
        s.stop()


def test_prompt_lookup_speculation_is_token_identical_and_validated(stories):
    """Per-request prompt-lookup speculation: greedy text identical to plain decoding
    (streamed and not), drafts proposed and accepted (visible in /metrics), sampling with
    speculation answers, and bad speculative options are 400s."""
    url, name = stories.url, stories.name
    c = client(url)
    prompt = ("Once upon a time, there was a little girl named Lily. She loved to play. "
              "Once upon a time, there was a little girl named Lily. She")
    base = dict(model=name, prompt=prompt, max_tokens=48, temperature=0,
                extra_body={"ignore_eos": True})
    plain = c.completions.create(**base).choices[0].text
    before = stories.metrics()
    for k in [None, 1, 4]:
        extra = {"ignore_eos": True, "prompt_lookup": 3}
        if k:
            extra["draft_tokens"] = k
        r = c.completions.create(**{**base, "extra_body": extra})
        assert r.choices[0].text == plain, (k, r.choices[0].text, plain)
        assert r.usage.completion_tokens == 48
        chunks = list(c.completions.create(**{**base, "extra_body": extra}, stream=True))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == plain
    after = stories.metrics()
    drafted = after["infer_draft_tokens_total"] - before["infer_draft_tokens_total"]
    accepted = after["infer_accepted_draft_tokens_total"] - before["infer_accepted_draft_tokens_total"]
    assert drafted > 0 and accepted > 0, (drafted, accepted)
    # Sampling with speculation: the speculative-sampling rule, seeded.
    r1 = c.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0.8, seed=7,
                              extra_body={"prompt_lookup": 2})
    r2 = c.completions.create(model=name, prompt=prompt, max_tokens=24, temperature=0.8, seed=7,
                              extra_body={"prompt_lookup": 2})
    assert r1.choices[0].text == r2.choices[0].text and r1.usage.completion_tokens > 0
    for extra, param in [
        ({"prompt_lookup": -1}, "prompt_lookup"),
        ({"prompt_lookup": 99}, "prompt_lookup"),
        ({"prompt_lookup": 2, "draft_tokens": 0}, "draft_tokens"),
        ({"prompt_lookup": 2, "draft_tokens": 16}, "draft_tokens"),
        ({"draft_tokens": 3}, "draft_tokens"),
        ({"draft_model": "other"}, "draft_model"),
        ({"prompt_lookup": "two"}, None),
    ]:
        status, err = raw(url, "/v1/completions",
                          json.dumps({"model": name, "prompt": "x", **extra}).encode())
        assert status == 400, (extra, status, err)
        if param:
            assert err["error"]["param"] == param, err


def test_non_streaming_client_gone_frees_kv_blocks(smol):
    """A non-streaming request whose client gives up (read timeout) is cancelled and its
    KV blocks freed, like a dropped stream."""
    import httpx

    before = smol.metrics()
    body = {"model": smol.name, "prompt": "Once upon a time", "max_tokens": 900,
            "temperature": 0, "ignore_eos": True}
    with httpx.Client(timeout=1.5) as h:
        try:
            h.post(smol.url + "/v1/completions", json=body)
            raise AssertionError("900 tokens of SmolLM2 should not finish in 1.5 s")
        except httpx.ReadTimeout:
            pass
    deadline = time.time() + 10
    while time.time() < deadline:
        m = smol.metrics()
        if m["infer_kv_cache_blocks_used"] == 0 and m["infer_running_sequences"] == 0:
            break
        time.sleep(0.05)
    assert m["infer_kv_cache_blocks_used"] == 0, m
    assert m["infer_cancelled_requests_total"] >= before["infer_cancelled_requests_total"] + 1


def test_tokenize_and_detokenize(stories):
    url, name = stories.url, stories.name
    status, t = raw(url, "/tokenize", json.dumps({"model": name, "prompt": "Once upon a time"}).encode())
    assert status == 200 and t["count"] == len(t["tokens"]) and t["tokens"][0] == 1, t
    assert t["max_model_len"] > 0
    # The same ids a completion reports as its prompt.
    c = client(url).completions.create(model=name, prompt="Once upon a time", max_tokens=1, temperature=0)
    assert c.usage.prompt_tokens == t["count"]
    status, d = raw(url, "/detokenize", json.dumps({"model": name, "tokens": t["tokens"][1:]}).encode())
    assert status == 200 and d["prompt"] == "Once upon a time", d
    status, nb = raw(url, "/tokenize", json.dumps(
        {"model": name, "prompt": "Once upon a time", "add_special_tokens": False}).encode())
    assert status == 200 and nb["tokens"] == t["tokens"][1:], nb
    for path, body, field in [
        ("/tokenize", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "prompt"),
        ("/tokenize", {"prompt": "x", "temperature": 0}, "temperature"),
        ("/detokenize", {"tokens": [999999]}, "tokens"),
    ]:
        status, err = raw(url, path, json.dumps({"model": name, **body}).encode())
        assert status == 400 and err["error"]["param"] == field, (path, body, err)
    status, _ = raw(url, "/tokenize", json.dumps({"model": "other", "prompt": "x"}).encode())
    assert status == 404


def test_prefix_cache_gives_the_same_tokens_bit_for_bit(stories):
    """Prompts sharing leading blocks reuse their cached K and V (counted in /metrics) and
    get exactly the tokens and log-probabilities of a server that computes every prompt."""
    from conftest import STORIES, Server, model_path
    cold = Server(model_path(STORIES), "nocache", "--no-prefix-cache", "--kv-tokens", "4096")
    try:
        system = "Once upon a time there was a little girl named Lily who loved to play. " * 6
        prompts = [system + "One day", system + "One day", system + "She saw a big dog", system]

        def ask(server, p):
            c = client(server.url).completions.create(
                model=server.name, prompt=p, max_tokens=16, temperature=0, logprobs=5,
                extra_body={"ignore_eos": True})
            lp = c.choices[0].logprobs
            return c.choices[0].text, lp.token_logprobs, lp.top_logprobs

        before = stories.metrics()["infer_prefix_cache_hit_tokens_total"]
        with_cache = [ask(stories, p) for p in prompts]
        hits = stories.metrics()["infer_prefix_cache_hit_tokens_total"] - before
        without = [ask(cold, p) for p in prompts]
        assert with_cache == without
        # The three later prompts each found the shared system prompt's whole blocks.
        assert hits >= 3 * 16 * 5, hits
        assert cold.metrics()["infer_prefix_cache_hit_tokens_total"] == 0
    finally:
        cold.stop()
