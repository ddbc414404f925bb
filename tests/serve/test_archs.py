"""Every architecture through `infer serve`: the tiny Phi-3, Gemma, Gemma 2 and GPT-2
checkpoints of tests/fixtures/arch (made by scripts/fixtures/make_arch_fixtures.py; Phi-3
and Gemma folders carry the word-level tokenizers of make_wordlevel_tokenizers.py) answer
greedy completions, streamed and not, with exactly transformers' greedy tokens."""

import json
import os

import pytest

from client_checks import client
from conftest import ROOT, Server

CASES = [
    # (case, extra serve flags, greedy tokens to check)
    ("phi3_partial_rotary", [], 16),
    # Serving context 16 = original_max_position_embeddings: short LongRoPE factors
    # throughout, as transformers used for the first 16 positions.
    ("phi3_longrope", ["--ctx-size", "16"], 9),
    ("gemma", [], 16),
    ("gemma2", [], 16),
    ("gpt2", [], 16),
]


@pytest.mark.parametrize("case,extra,n", CASES, ids=[c[0] for c in CASES])
def test_architecture_serves_transformers_greedy_tokens(case, extra, n):
    d = os.path.join(ROOT, "tests", "fixtures", "arch", case)
    with open(os.path.join(d, "expected.json")) as f:
        expected = json.load(f)
    prompt = expected["prompt_ids"]
    want = expected["greedy_ids"][:n]
    s = Server(d, case, "--kv-tokens", "256", "--max-seqs", "4", "--max-batch-tokens", "16", *extra)
    try:
        c = client(s.url)
        # Token ids in, text out: compare the text with the tokenizer's decoding of
        # transformers' ids (the prompt as ids avoids any BOS / pre-tokenizer question).
        r = c.completions.create(model=case, prompt=prompt, max_tokens=n, temperature=0,
                                 extra_body={"ignore_eos": True})
        text = r.choices[0].text
        assert r.usage.completion_tokens == n, r.usage
        want_text = c.completions.create(model=case, prompt=want, max_tokens=1, temperature=0,
                                         echo=True, extra_body={"ignore_eos": True})
        # echo: the decoded prompt (transformers' ids) followed by one more token.
        echoed = want_text.choices[0].text
        assert text and echoed.startswith(text), (case, text, echoed)
        chunks = list(c.completions.create(model=case, prompt=prompt, max_tokens=n,
                                           temperature=0, stream=True,
                                           extra_body={"ignore_eos": True}))
        assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == text
    finally:
        s.stop()
