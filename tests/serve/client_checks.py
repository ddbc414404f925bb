"""The OpenAI-client checks, shared by the direct tests and the nginx replica test."""

import openai


def client(url):
    return openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)


def completion_and_stream(url, model):
    c = client(url)
    assert [m.id for m in c.models.list().data] == [model]
    r = c.completions.create(model=model, prompt="Once upon a time", max_tokens=16, temperature=0,
                             extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 16 and r.usage.prompt_tokens > 0
    assert r.choices[0].finish_reason == "length"
    text = r.choices[0].text
    assert len(text) > 0
    chunks = list(c.completions.create(model=model, prompt="Once upon a time", max_tokens=16,
                                       temperature=0, stream=True, extra_body={"ignore_eos": True}))
    assert "".join(ch.choices[0].text for ch in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 16
    return text


def error_case(url, model):
    c = client(url)
    try:
        c.completions.create(model=model + "-nope", prompt="x", max_tokens=2)
        raise AssertionError("an unknown model must fail")
    except openai.NotFoundError as e:
        assert e.status_code == 404
    try:
        c.completions.create(model=model, prompt="x", max_tokens=2, temperature=7)
        raise AssertionError("temperature 7 must fail")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in str(e)
