"""forkserve behind a real nginx, configured from conf/nginx.conf.

nginx runs in the foreground with its own temporary prefix. It never
binds a port itself: the test binds 127.0.0.1:0 and hands the sockets to
nginx through its NGINX environment variable (the way nginx passes
sockets to a new binary), so no port is ever guessed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from certs import make_certs
from conftest import TESTS, wait_until
from procs import launch_nginx
from traffic import Traffic

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is installed by tests/install.sh"
)


class Nginx:
    def __init__(self, prefix: Path, ports: dict[str, int], proc: subprocess.Popen[bytes]) -> None:
        self.prefix, self.ports, self.proc = prefix, ports, proc

    def url(self, which: str) -> str:
        scheme = "https" if which == "tls" else "http"
        return f"{scheme}://127.0.0.1:{self.ports[which]}"


def start_nginx(tmp_path: Path, socket_path: Path, upstream: str) -> Nginx:
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    certs = make_certs(tmp_path / "certs")
    listeners = {}
    for which in ("unix", "tcp", "tls"):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        os.set_inheritable(sock.fileno(), True)
        listeners[which] = sock
    ports = {which: sock.getsockname()[1] for which, sock in listeners.items()}
    text = (TESTS.parent / "conf" / "nginx.conf").read_text()
    for token, value in {
        "@PREFIX@": str(prefix),
        "@SOCKET@": str(socket_path),
        "@UPSTREAM@": upstream,
        "@LISTEN_UNIX@": f"127.0.0.1:{ports['unix']}",
        "@LISTEN_TCP@": f"127.0.0.1:{ports['tcp']}",
        "@LISTEN_TLS@": f"127.0.0.1:{ports['tls']}",
        "@CERT@": str(certs.cert),
        "@KEY@": str(certs.key),
    }.items():
        text = text.replace(token, value)
    assert not re.search(r"@[A-Z_]+@", text)  # every placeholder filled
    config = prefix / "nginx.conf"
    config.write_text(text)
    proc = launch_nginx(prefix, config, listeners.values())
    for sock in listeners.values():
        sock.close()
    nginx = Nginx(prefix, ports, proc)
    nginx.ca = certs.ca  # type: ignore[attr-defined]
    assert wait_until(lambda: _answers(nginx.url("tcp")) or proc.poll() is not None, 15)
    assert proc.poll() is None, (prefix / "stderr.log").read_text() + (prefix / "error.log").read_text()
    return nginx


def _answers(url: str) -> bool:
    try:
        requests.get(url + "/", timeout=2)
    except requests.RequestException:
        return False
    return True


@pytest.fixture
def stack(serve, tmp_path) -> Iterator[tuple[Nginx, object]]:
    socket_path = tmp_path / "forkserve.sock"
    server = serve(
        "basic:app",
        "--bind",
        f"unix:{socket_path}",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
        listeners=2,
        workers=2,
    )
    nginx = start_nginx(tmp_path, socket_path, server.urls[1].removeprefix("http://"))
    yield nginx, server
    os.killpg(nginx.proc.pid, signal.SIGQUIT)  # nginx's graceful stop
    try:
        nginx.proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(nginx.proc.pid, signal.SIGKILL)
        nginx.proc.wait(5)


def raw_get(port: int, path: str, source: str = "127.0.0.2", headers: str = "") -> bytes:
    """GET from a chosen loopback source address, so the app can tell client from proxy."""
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: example.test\r\n{headers}Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def body_json(data: bytes) -> dict:
    import json

    return json.loads(data.split(b"\r\n\r\n", 1)[1])


@pytest.mark.parametrize("which", ["unix", "tcp"])
def test_app_sees_the_real_client_address(stack, which):
    nginx, _server = stack
    environ = body_json(raw_get(nginx.ports[which], "/environ"))
    assert environ["REMOTE_ADDR"] == "127.0.0.2"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == "example.test"


def test_app_sees_https_when_tls_ends_at_nginx(stack):
    nginx, _server = stack
    response = requests.get(nginx.url("tls") + "/environ", verify=str(nginx.ca), timeout=10)
    assert response.json()["wsgi.url_scheme"] == "https"


def test_forged_headers_from_an_untrusted_peer_change_nothing(stack):
    _nginx, server = stack
    port = int(server.urls[1].rsplit(":", 1)[1])
    forged = "X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nForwarded: for=7.7.7.7\r\n"
    environ = body_json(raw_get(port, "/environ", source="127.0.0.3", headers=forged))
    assert environ["REMOTE_ADDR"] == "127.0.0.3"
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_X_FORWARDED_FOR"] == "6.6.6.6"  # passed on untouched


@pytest.mark.parametrize("which", ["unix", "tcp"])
def test_large_upload_and_streamed_download_pass_intact(stack, which, tmp_path):
    nginx, _server = stack
    payload = os.urandom(20 * 1024 * 1024)
    response = requests.post(nginx.url(which) + "/sha256", data=payload, timeout=60)
    assert response.text == hashlib.sha256(payload).hexdigest()
    blob = tmp_path / "blob"
    blob.write_bytes(payload)
    response = requests.get(nginx.url(which) + "/file", headers={"X-File": str(blob)}, timeout=60)
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(payload).hexdigest()
    streamed = requests.get(nginx.url(which) + "/stream", timeout=10)
    assert streamed.text == "".join(f"part {i}\n" for i in range(5))


def test_sighup_reload_behind_nginx_loses_nothing(stack):
    nginx, server = stack
    before = set(server.workers())
    with Traffic(nginx.url("unix")) as traffic:
        traffic.wait_for(200)
        server.send_signal(signal.SIGHUP)
        assert server.wait_for_log("Reload complete", timeout=20)
        assert wait_until(lambda: not before & set(server.workers()), 20)
        traffic.wait_for(200)
    assert traffic.failures == []
