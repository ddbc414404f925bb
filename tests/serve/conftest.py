"""Fixtures for the serving tests: each test module starts `infer serve` itself on a free
port on 127.0.0.1 and stops it by its process id. Missing pieces (binary, model) SKIP
loudly, or fail under CI=true."""

import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CI = os.environ.get("CI") == "true"


def need(cond, what):
    if not cond:
        if CI:
            pytest.fail(f"CI=true and {what}")
        pytest.skip(f"SKIP: {what}")


def binary():
    env = os.environ.get("INFER_BIN")
    cands = [env] if env else [os.path.join(ROOT, "target", d, "infer") for d in ("release", "debug")]
    found = [c for c in cands if c and os.path.isfile(c)]
    need(found, f"no infer binary ({cands}); run `cargo build -p infer-cli`")
    # The newest build.
    return max(found, key=os.path.getmtime)


def model_path(rel):
    p = os.path.join(ROOT, rel)
    if os.path.exists(p):
        return p
    need(False, f"model {rel} is missing (cargo xtask model)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `infer serve` process."""

    def __init__(self, model, name, *extra):
        self.port = free_port()
        self.name = name
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(os.path.join(ROOT, "target", f"serve-{name}-{self.port}.log"), "w")
        env = dict(os.environ)
        env.setdefault("WGPU_BACKEND", "vulkan")
        self.proc = subprocess.Popen(
            [binary(), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(self.port),
             "--served-model-name", name, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"infer serve exited with {self.proc.returncode}: see {self.log.name}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("infer serve did not become healthy in 120 s")

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            out = {}
            for line in r.read().decode().splitlines():
                if line and not line.startswith("#"):
                    k, v = line.rsplit(" ", 1)
                    out[k] = float(v)
            return out

    def log_text(self):
        """What the server has written to its log so far."""
        self.log.flush()
        with open(self.log.name) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


STORIES = "tests/fixtures/stories260K"
SMOL = "models/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def stories():
    s = Server(model_path(STORIES), "stories260K", "--kv-tokens", "8192", "--max-seqs", "64",
               "--max-batch-tokens", "128")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def smol():
    s = Server(model_path(SMOL), "smollm2", "--kv-tokens", "4096", "--ctx-size", "1024",
               "--max-seqs", "16", "--max-batch-tokens", "64")
    yield s
    s.stop()
