"""The gevent worker (-k gevent), as a user runs it: real processes, real sockets, port 0.

What every worker class shares (hostile input, reload, recycling, graceful
and quick stops, the busy-loop abort) runs under both classes in
test_hostile.py and test_supervision.py. Here: what only a greenlet worker
does — blocking I/O served side by side, the worker_connections cap, a
request timed out while the hub stays alive, the hub itself held, patching
after the fork (and with --preload), and a config file that patches the
master.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from certs import make_certs
from conftest import ResponseReader, wait_until
from traffic import Traffic

APP = "gevent_app:app"


class Upstream(ThreadingHTTPServer):
    """A small HTTP server on 127.0.0.1:0 that the app calls out to."""

    daemon_threads = True
    request_queue_size = 512  # 200 calls arrive at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), UpstreamHandler)
        self.calls = 0
        self.lock = threading.Lock()


class UpstreamHandler(BaseHTTPRequestHandler):
    server: Upstream

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.calls += 1
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(b"upstream")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def get_all(urls: list[str]) -> list[requests.Response]:
    """GET every url at once, one thread and one connection each."""
    with ThreadPoolExecutor(len(urls)) as pool:
        return list(
            pool.map(lambda url: requests.get(url, timeout=60, headers={"Connection": "close"}), urls)
        )


def test_blocking_io_of_200_requests_runs_side_by_side(serve, upstream):
    server = serve(APP, "-k", "gevent", "--workers", "2", workers=2)
    port = upstream.server_address[1]
    started = time.monotonic()
    responses = get_all([f"{server.url}/fetch?{port}"] * 200)
    elapsed = time.monotonic() - started
    assert [(r.status_code, r.text) for r in responses] == [(200, "upstream")] * 200
    assert upstream.calls == 200
    # Each request sleeps 0.5 s and then calls out: two sync workers would need
    # 200 * 0.5 / 2 = 50 s. Greenlets wait side by side.
    assert elapsed < 200 * 0.5 / 2 / 4, f"{elapsed:.1f}s"


def test_worker_connections_caps_the_requests_a_worker_holds(serve):
    capped = serve(APP, "-k", "gevent", "--worker-connections", "4")
    started = time.monotonic()
    assert all(r.text == "slept" for r in get_all([f"{capped.url}/sleep?0.5"] * 12))
    elapsed = time.monotonic() - started
    assert requests.get(capped.url + "/peak", timeout=10).text == "4"
    assert elapsed >= 3 * 0.5 - 0.1  # 12 requests, 4 at a time
    uncapped = serve(APP, "-k", "gevent")
    assert all(r.text == "slept" for r in get_all([f"{uncapped.url}/sleep?1"] * 12))
    assert requests.get(uncapped.url + "/peak", timeout=10).text == "12"


def test_request_past_the_timeout_gets_504_while_the_others_finish(serve):
    server = serve(APP, "-k", "gevent", "--timeout", "2")
    first = server.workers()[0]
    with ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(requests.get, server.url + "/sleep?60", timeout=30)
        time.sleep(0.5)
        quick = pool.submit(requests.get, server.url + "/sleep?1", timeout=30)
        assert (quick.result().status_code, quick.result().text) == (200, "slept")
        assert stuck.result().status_code == 504
        assert "timed out" in stuck.result().text
    assert server.wait_for_log(r"GET /sleep\?60 aborted past the timeout")
    assert wait_until(lambda: server.workers() and first not in server.workers(), 10)
    assert requests.get(server.url + "/", timeout=10).status_code == 200
    # The hub kept beating while the request waited: the worker timed it out
    # itself and left gracefully; the master never had to abort it.
    assert "WORKER TIMEOUT" not in server.log()
    assert server.wait_for_log(rf"Worker {first} exited \(exit code 0\)")


def test_greenlet_holding_the_hub_silences_the_heartbeat_and_is_aborted(serve):
    server = serve(APP, "-k", "gevent", "--timeout", "1")
    first = server.workers()[0]
    response = requests.get(server.url + "/spin?60", timeout=30)
    assert response.status_code == 504
    assert server.wait_for_log(rf"WORKER TIMEOUT \(pid:{first}\)")
    assert server.wait_for_log(rf"Worker {first} died \(exit code 5\)")
    assert wait_until(lambda: server.workers() and first not in server.workers(), 10)
    assert requests.get(server.url + "/", timeout=10).status_code == 200


def test_graceful_stop_finishes_every_request_in_flight(serve):
    server = serve(APP, "-k", "gevent")
    socks = [server.connect() for _ in range(10)]
    for sock in socks:
        sock.sendall(b"GET /sleep?1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert wait_until(lambda: requests.get(server.url + "/peak", timeout=10).text == "11", 10)
    server.send_signal(signal.SIGTERM)
    answers = [ResponseReader(sock).read() for sock in socks]
    assert [(status, body) for status, _, body in answers] == [(200, b"slept")] * 10
    assert all(headers["connection"] == "close" for _, headers, _ in answers)
    assert server.stop() == 0


def test_patched_after_the_fork_and_only_where_chosen(serve):
    green = serve(APP, "-k", "gevent")
    assert requests.get(green.url + "/patched", timeout=10).text == "yes"
    # The master forks the workers but never loads gevent itself.
    assert "gevent" not in Path(f"/proc/{green.pid}/maps").read_text()
    sync = serve(APP)
    assert requests.get(sync.url + "/gevent-loaded", timeout=10).text == "no"


def test_preloaded_app_is_warned_about_and_still_patched(serve):
    server = serve(APP, "-k", "gevent", "--preload")
    assert server.wait_for_log(r"\[WARNING\] The app was preloaded before the fork")
    assert requests.get(server.url + "/patched", timeout=10).text == "yes"
    started = time.monotonic()
    assert all(r.text == "slept" for r in get_all([f"{server.url}/sleep?1"] * 20))
    assert time.monotonic() - started < 10  # side by side, not 20 s one after another


def test_config_file_that_patches_the_master_is_supervised_as_usual(serve, tmp_path):
    config = tmp_path / "patching.conf.py"
    config.write_text(
        "import gevent.monkey\n"
        "gevent.monkey.patch_all()  # in the master, before any fork\n"
        "worker_class = 'gevent'\n"
        "workers = 2\n"
    )
    server = serve(APP, "-c", str(config), workers=2)
    assert requests.get(server.url + "/patched", timeout=10).text == "yes"
    before = set(server.workers())
    assert len(before) == 2
    with Traffic(server.url) as traffic:
        traffic.wait_for(100)
        server.send_signal(signal.SIGHUP)  # re-reads (and re-runs) the config
        assert server.wait_for_log("Reload complete", timeout=20)
        assert wait_until(lambda: len(server.workers()) == 2 and not before & set(server.workers()), 20)
        traffic.wait_for(100)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        assert server.wait_for_log(rf"Worker {victim} died \(signal SIGKILL\)")
        assert wait_until(lambda: len(server.workers()) == 2 and victim not in server.workers(), 10)
        server.send_signal(signal.SIGTTIN)
        assert wait_until(lambda: len(server.workers()) == 3, 15)
        traffic.wait_for(100)
    assert len(traffic.failures) <= traffic.clients, traffic.failures  # at most what the kill cut
    assert server.stop() == 0
    assert "Shutting down" in server.log()
    assert "Traceback" not in server.log()


def test_tls_under_the_gevent_worker(serve, tmp_path):
    certs = make_certs(tmp_path / "certs")
    server = serve(APP, "-k", "gevent", "--certfile", str(certs.cert), "--keyfile", str(certs.key))
    url = server.url.replace("http://", "https://")
    with requests.Session() as session:  # keep-alive: later requests reuse the TLS connection
        for size in (0, 10, 300_000):
            response = session.post(url + "/length", data=b"x" * size, verify=str(certs.ca), timeout=10)
            assert (response.status_code, response.text) == (200, str(size))
        assert session.get(url + "/patched", verify=str(certs.ca), timeout=10).text == "yes"
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        texts = list(
            pool.map(
                lambda _: requests.get(url + "/sleep?1", verify=str(certs.ca), timeout=30).text, range(10)
            )
        )
    assert texts == ["slept"] * 10
    assert time.monotonic() - started < 5  # side by side over TLS too


def test_reload_watches_files_without_holding_the_hub(serve, tmp_path):
    marker = tmp_path / "marker.txt"
    marker.write_text("one")
    server = serve(APP, "-k", "gevent", "--reload", "--reload-extra-file", str(marker))
    assert server.wait_for_log(r"Watching \d+ files for changes \(poll\)")
    started = time.monotonic()
    assert all(r.text == "slept" for r in get_all([f"{server.url}/sleep?1"] * 10))
    assert time.monotonic() - started < 5  # the watcher never held the hub
    marker.write_text("two")
    stat = marker.stat()
    os.utime(marker, (stat.st_atime + 2, stat.st_mtime + 2))
    assert server.wait_for_log("marker.txt changed; asking the master to reload", timeout=15)
    assert server.wait_for_log("Reload complete", timeout=20)
    assert requests.get(server.url + "/patched", timeout=10).text == "yes"
