"""Graceful shutdown: SIGTERM / SIGINT stop the listener, let in-flight streams finish (or end
them, past --shutdown-timeout, with a final chunk saying why), and exit 0."""

import json
import os
import signal
import threading
import urllib.request

from conftest import STORIES, Server, model_path


def stream(url, name, max_tokens, got):
    """A raw SSE completion; `got` collects its data lines and `first` is set at the first."""
    body = json.dumps({"model": name, "prompt": "Once upon a time", "max_tokens": max_tokens,
                       "temperature": 0, "stream": True, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        for line in r:
            line = line.decode().strip()
            if line.startswith("data: "):
                got["lines"].append(line[len("data: "):])
                got["first"].set()


def start_stream(s, max_tokens):
    got = {"lines": [], "first": threading.Event()}
    t = threading.Thread(target=stream, args=(s.url, s.name, max_tokens, got), daemon=True)
    t.start()
    assert got["first"].wait(60), "no first chunk"
    return t, got


def test_sigterm_drains_in_flight_streams_and_exits_0():
    s = Server(model_path(STORIES), "drain", "--shutdown-timeout", "60", "--ctx-size", "512")
    try:
        t, got = start_stream(s, 400)
        os.kill(s.proc.pid, signal.SIGTERM)
        t.join(120)
        assert not t.is_alive()
        assert got["lines"][-1] == "[DONE]", got["lines"][-3:]
        last = json.loads(got["lines"][-2])
        assert last["choices"][0]["finish_reason"] == "length", last
        assert s.proc.wait(timeout=60) == 0
        assert "shut down" in s.log_text()
    finally:
        s.stop()


def test_past_the_shutdown_timeout_streams_end_with_a_chunk_saying_why():
    s = Server(model_path(STORIES), "abort", "--shutdown-timeout", "0", "--ctx-size", "512")
    try:
        t, got = start_stream(s, 480)
        os.kill(s.proc.pid, signal.SIGINT)
        t.join(120)
        assert not t.is_alive()
        assert got["lines"][-1] == "[DONE]", got["lines"][-3:]
        err = json.loads(got["lines"][-2])["error"]
        assert err["code"] == "shutting_down" and "shutting down" in err["message"], err
        assert s.proc.wait(timeout=60) == 0
    finally:
        s.stop()
