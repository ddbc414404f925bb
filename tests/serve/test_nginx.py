"""Scaling out: two stateless `infer serve` replicas behind nginx (least_conn) on
127.0.0.1, with the OpenAI-client checks run through nginx. nginx runs from a config in a
temporary folder (not the system service) and is stopped by its process id."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import pytest

from client_checks import completion_and_stream, error_case, client
from conftest import STORIES, Server, free_port, model_path, need

CONF = """
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    upstream infer {{
        least_conn;
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 2m;
        location / {{
            proxy_pass http://infer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


def nginx_binary():
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


def test_two_replicas_behind_nginx():
    ngx = nginx_binary()
    need(ngx, "nginx is not installed (apt-get install -y nginx)")
    model = model_path(STORIES)
    a = Server(model, "stories260K", "--kv-tokens", "2048")
    b = Server(model, "stories260K", "--kv-tokens", "2048")
    tmp = tempfile.mkdtemp(prefix="infer-nginx-")
    proc = None
    try:
        port = free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(user=user, tmp=tmp, a=a.port, b=b.port, port=port))
        proc = subprocess.Popen([ngx, "-p", tmp, "-c", conf, "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    log = open(os.path.join(tmp, "error.log")).read() if os.path.exists(os.path.join(tmp, "error.log")) else ""
                    pytest.fail(f"nginx did not start: {log}")
                time.sleep(0.2)
        text = completion_and_stream(url, "stories260K")
        error_case(url, "stories260K")
        # Spread over both replicas: a batch of concurrent requests gives the same greedy text.
        import concurrent.futures
        c = client(url)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            texts = list(ex.map(lambda _: c.completions.create(
                model="stories260K", prompt="Once upon a time", max_tokens=16, temperature=0,
                extra_body={"ignore_eos": True}).choices[0].text, range(8)))
        assert texts == [text] * 8
        served = [a.metrics().get('infer_requests_total{status="200"}', 0),
                  b.metrics().get('infer_requests_total{status="200"}', 0)]
        assert all(n > 0 for n in served), f"both replicas serve: {served}"
    finally:
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        a.stop()
        b.stop()
        shutil.rmtree(tmp, ignore_errors=True)
