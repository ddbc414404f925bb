"""--api-key: every route but /health needs `Authorization: Bearer <key>` (401 otherwise;
/metrics too unless --metrics-public); every response carries an x-request-id, the
client's own when it sends one."""

import urllib.error
import urllib.request

import openai
import pytest

from conftest import STORIES, Server, model_path


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_api_key_and_request_ids():
    s = Server(model_path(STORIES), "keyed", "--api-key", "s3cret", "--kv-tokens", "2048")
    try:
        ok = openai.OpenAI(base_url=s.url + "/v1", api_key="s3cret", max_retries=0)
        c = ok.completions.create(model=s.name, prompt="Once upon a time", max_tokens=4, temperature=0)
        assert c.choices[0].text
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.completions.create(model=s.name, prompt="x", max_tokens=1)
        assert get(s.url + "/v1/models")[0] == 401
        assert get(s.url + "/metrics")[0] == 401
        assert get(s.url + "/metrics", {"Authorization": "Bearer s3cret"})[0] == 200
        assert get(s.url + "/health")[0] == 200
        status, h = get(s.url + "/health", {"x-request-id": "abc-123"})
        assert h.get("x-request-id") == "abc-123", h
        status, h = get(s.url + "/health")
        assert h.get("x-request-id", "").startswith("req-"), h
        assert "abc-123 GET /health 200" in s.log_text()
    finally:
        s.stop()
