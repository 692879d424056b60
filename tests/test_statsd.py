"""StatsD as Gunicorn sends it: the same names and wire format, read by a UDP receiver the test opens."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import requests
from conftest import run_forkserve


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def collect(sock: socket.socket, until: set[str], timeout: float = 10.0) -> list[str]:
    """Datagrams received until every name in ``until`` was seen (or ``timeout`` passes)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            lines.append(sock.recv(4096).decode())
        if all(any(line.startswith(name) for line in lines) for name in until):
            break
    return lines


def test_requests_workers_and_log_lines_reach_statsd_with_gunicorn_names(serve, receiver):
    port = receiver.getsockname()[1]
    server = serve(
        "basic:app",
        "--workers",
        "2",
        "--statsd-host",
        f"127.0.0.1:{port}",
        "--statsd-prefix",
        "shop.",
        "--dogstatsd-tags",
        "env:test,team:web",
        "--enable-backlog-metric",
        workers=2,
    )
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    assert requests.get(server.url + "/no-such-page", timeout=10).status_code == 404
    assert requests.get(server.url + "/error", timeout=10).status_code == 500
    lines = collect(
        receiver,
        {
            "shop.gunicorn.requests:",
            "shop.gunicorn.request.status.404:",
            "shop.gunicorn.request.status.500:",
            "shop.gunicorn.workers:",
            "shop.gunicorn.log.exception:",
            "shop.gunicorn.backlog:",
        },
    )
    tags = "|#env:test,team:web"
    assert f"shop.gunicorn.requests:1|c|@1.0{tags}" in lines
    assert f"shop.gunicorn.request.status.200:1|c|@1.0{tags}" in lines
    assert f"shop.gunicorn.request.status.404:1|c|@1.0{tags}" in lines
    assert f"shop.gunicorn.request.status.500:1|c|@1.0{tags}" in lines  # an exception's 500, as Gunicorn
    assert lines.count(f"shop.gunicorn.requests:1|c|@1.0{tags}") == 3
    durations = [line for line in lines if line.startswith("shop.gunicorn.request.duration:")]
    assert len(durations) == 3 and all(line.endswith(f"|ms{tags}") for line in durations)
    assert float(durations[0].split(":")[1].split("|")[0]) >= 0
    assert f"shop.gunicorn.workers:2|g{tags}" in lines
    assert f"shop.gunicorn.log.exception:1|c|@1.0{tags}" in lines  # the app's traceback was logged
    assert any(line.startswith("shop.gunicorn.backlog:") and f"|h{tags}" in line for line in lines)


def test_statsd_off_sends_nothing_and_a_bad_address_is_one_line(serve, receiver):
    server = serve("basic:app")
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    with pytest.raises(TimeoutError):
        receiver.recv(4096)
    result = run_forkserve("basic:app", "--statsd-host", "localhost:notaport", "--bind", "127.0.0.1:0")
    assert result.returncode == 2
    assert "statsd_host: 'localhost:notaport' is not HOST:PORT or unix:PATH" in result.stderr
