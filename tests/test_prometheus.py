"""forkserve's metrics as Prometheus sees them: a real Prometheus scrapes a real server.

Debian's ``prometheus`` package (tests/install.sh) runs as the test's own
process, with a temporary config that scrapes forkserve's metrics address
every second, its own storage directory and a free loopback port. The test
drives known traffic and reads the numbers back through Prometheus's HTTP
query API. ``promtool check metrics`` judges a scrape, and every metric the
Grafana dashboard in conf/ queries must exist in one.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import http_exchange, wait_until
from test_metrics import parse_exposition, value

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "conf" / "grafana-dashboard.json"
METRICS_AT = re.compile(r"Metrics at: (\S+)")

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus and promtool are installed by tests/install.sh (Debian's prometheus package)",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Prometheus:
    """One prometheus process the test started, and its query API."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: forkserve\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log_path = tmp_path / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        for attempt in range(5):  # a free port can be taken between our check and its bind
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [
                        "prometheus",
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / f'data{attempt}'}",
                        f"--web.listen-address=127.0.0.1:{self.port}",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            if wait_until(lambda: self.proc.poll() is not None or self.ready(), timeout=30) and self.ready():
                return
            self.stop()
            if "address already in use" not in self.log_path.read_text(errors="replace"):
                break
        raise AssertionError(f"prometheus did not start:\n{self.log_path.read_text(errors='replace')}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> bool:
        with contextlib.suppress(requests.RequestException):
            return requests.get(self.url("/-/ready"), timeout=2).status_code == 200
        return False

    def query(self, expression: str) -> list[dict]:
        answer = requests.get(self.url("/api/v1/query"), params={"query": expression}, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def scalar(self, expression: str) -> float | None:
        """The one value of an expression, or None while it has none."""
        result = self.query(expression)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def target_up(self) -> bool:
        return self.scalar('up{job="forkserve"}') == 1.0

    def settles_at(self, expression: str, expected: float, timeout: float = 20.0) -> float | None:
        """Wait for scrapes to catch up with ``expression == expected``; its last value."""
        wait_until(lambda: self.scalar(expression) == expected, timeout=timeout, interval=0.25)
        return self.scalar(expression)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[callable]:
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        server = Prometheus(tmp_path, target)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def metrics_url(server) -> str:
    assert server.wait_for_log(METRICS_AT.pattern), server.log()
    return METRICS_AT.search(server.log()).group(1)


def requests_of(method: str, status_class: str) -> str:
    return f'forkserve_http_requests_total{{method="{method}",status_class="{status_class}"}}'


def test_prometheus_reads_exact_counts_across_a_worker_recycle(serve, prometheus):
    server = serve("basic:app", "--workers", "1", "--max-requests", "10", "--metrics-bind", "127.0.0.1:0")
    target = metrics_url(server).removeprefix("http://").removesuffix("/metrics")
    prom = prometheus(target)
    assert wait_until(prom.target_up, timeout=20, interval=0.25), prom.query("up")
    first_worker = server.workers()
    for _ in range(6):
        assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    for _ in range(3):
        assert requests.get(server.url + "/no-such-page", timeout=10).status_code == 404
    assert prom.settles_at(requests_of("GET", "2xx"), 6) == 6
    assert prom.scalar(requests_of("GET", "4xx")) == 3
    # The tenth request is the worker's last (--max-requests 10): it answers 500 and leaves.
    assert requests.get(server.url + "/error", timeout=10).status_code == 500
    assert server.wait_for_log(r"Worker \d+ exited", timeout=15), server.log()
    assert wait_until(lambda: server.workers() and server.workers() != first_worker, timeout=15)
    assert server.wait_for_log(r"Booting worker", count=2)
    with socket.create_connection(server.address, timeout=10) as sock:
        assert http_exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n").startswith(
            b"HTTP/1.1 400 "
        )
    for _ in range(2):
        assert requests.get(server.url + "/hello", timeout=10).status_code == 200

    # The old worker's counts were folded into the master's: nothing went backwards.
    assert prom.settles_at(requests_of("GET", "2xx"), 8) == 8
    assert prom.settles_at('forkserve_worker_exits_total{reason="max_requests"}', 1) == 1
    assert prom.scalar(requests_of("GET", "4xx")) == 3
    assert prom.scalar(requests_of("GET", "5xx")) == 1
    assert prom.scalar("sum(forkserve_http_requests_total)") == 12
    assert prom.scalar("forkserve_http_request_duration_seconds_count") == 12
    assert prom.scalar('forkserve_http_request_duration_seconds_bucket{le="+Inf"}') == 12
    assert prom.scalar('forkserve_http_requests_refused_total{status="400"}') == 1
    assert prom.scalar("sum(forkserve_http_requests_refused_total)") == 1
    assert prom.scalar("forkserve_connections_accepted_total") == 13
    assert prom.scalar("sum(forkserve_worker_exits_total)") == 1
    assert prom.settles_at('forkserve_workers{state="idle"}', 1) == 1
    assert prom.scalar("sum(forkserve_workers)") == 1
    assert prom.scalar("forkserve_http_requests_in_flight") == 0
    assert prom.scalar("forkserve_reloads_total") == 0
    assert prom.scalar("forkserve_worker_memory_max_bytes") > 1_000_000
    assert prom.scalar("forkserve_workers_memory_bytes") > 1_000_000
    assert prom.scalar(f'forkserve_listen_queue_limit{{listener="{server.url}"}}') == 2048
    assert prom.scalar(f'forkserve_listen_queue_length{{listener="{server.url}"}}') == 0
    assert prom.scalar("time() - forkserve_start_time_seconds") < 120
    # Prometheus's own judgement: no counter of any series was ever seen to decrease.
    for family in ("forkserve_http_requests_total", "forkserve_http_request_duration_seconds_count"):
        assert prom.scalar(f"sum(resets({family}[5m]))") == 0

    # Every query of the Grafana dashboard is valid PromQL, with data behind it here
    # (threads only exist with --threads).
    for expression in dashboard_queries():
        result = prom.query(expression.replace("$__rate_interval", "1m").replace("$instance", ".*"))
        assert result or "forkserve_threads" in expression, expression


def test_a_scrape_passes_promtool_over_a_unix_socket_with_threads(serve, tmp_path):
    path = tmp_path / "metrics.sock"
    server = serve("basic:app", "--threads", "2", "--metrics-bind", f"unix:{path}")
    assert metrics_url(server) == f"unix:{path}"
    for _ in range(3):
        assert requests.get(server.url + "/hello", timeout=10).status_code == 200

    def counted() -> bytes:  # workers copy their counts into shared memory once a second
        page = scrape_unix(path, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        return page if b'{method="GET",status_class="2xx"} 3\n' in page else b""

    assert wait_until(counted, timeout=10)
    head, _, body = counted().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/plain; version=0.0.4" in head
    checked = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked
    samples = parse_exposition(body.decode())
    assert value(samples, "forkserve_http_requests_total", method="GET", status_class="2xx") == 3
    assert value(samples, "forkserve_threads", state="busy") == 0
    assert value(samples, "forkserve_threads", state="idle") == 2
    assert scrape_unix(path, b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert scrape_unix(path, b"DELETE /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")


def while_one_sleeps(server, url: str) -> dict:
    """The scrape taken while one request to /sleep?2 is in flight."""
    sleeping = threading.Thread(target=requests.get, args=(server.url + "/sleep?2",), kwargs={"timeout": 10})
    sleeping.start()
    try:

        def running() -> dict:
            samples = parse_exposition(requests.get(url, timeout=10).text)
            return samples if value(samples, "forkserve_http_requests_in_flight") == 1 else {}

        assert wait_until(running, timeout=10)
        return running()
    finally:
        sleeping.join(15)


def test_the_gevent_worker_counts_requests_in_flight_and_connections(serve):
    server = serve("gevent_app:app", "-k", "gevent", "--metrics-bind", "127.0.0.1:0")
    url = metrics_url(server)
    with requests.Session() as session:  # one keep-alive connection
        for _ in range(3):
            assert session.post(server.url + "/length", data=b"abc", timeout=10).text == "3"
        samples = while_one_sleeps(server, url)
        assert value(samples, "forkserve_workers", state="busy") == 1
        assert value(samples, "forkserve_connections_open") == 2

    def counted() -> dict:  # workers copy their counts into shared memory once a second
        samples = parse_exposition(requests.get(url, timeout=10).text)
        return samples if value(samples, "forkserve_http_request_duration_seconds_count") == 4 else {}

    assert wait_until(counted, timeout=10)
    samples = counted()
    assert value(samples, "forkserve_http_requests_total", method="POST", status_class="2xx") == 3
    assert value(samples, "forkserve_http_requests_total", method="GET", status_class="2xx") == 1
    assert value(samples, "forkserve_connections_accepted_total") == 2
    assert value(samples, "forkserve_http_requests_in_flight") == 0
    assert value(samples, "forkserve_http_request_duration_seconds_bucket", le="1.0") == 3
    assert value(samples, "forkserve_http_request_duration_seconds_bucket", le="2.5") == 4


def test_the_grafana_dashboard_queries_only_metrics_that_exist(serve):
    server = serve("basic:app", "--threads", "2", "--metrics-bind", "127.0.0.1:0")
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    scraped = {name for name, _ in parse_exposition(requests.get(metrics_url(server), timeout=10).text)}
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] and dashboard["panels"]
    used = set()
    for expression in dashboard_queries():
        used |= set(re.findall(r"\bforkserve_[a-z_]+", expression))
    assert used, "the dashboard queries no forkserve metric"
    assert used <= scraped, f"the dashboard queries metrics forkserve does not serve: {used - scraped}"
    # The families the dashboard is meant to show are all there.
    for family in (
        "forkserve_http_requests_total",
        "forkserve_http_request_duration_seconds_bucket",
        "forkserve_workers",
        "forkserve_http_requests_in_flight",
        "forkserve_listen_queue_length",
        "forkserve_worker_exits_total",
        "forkserve_workers_memory_bytes",
    ):
        assert family in used, family


def test_metrics_off_serves_nothing_and_a_taken_address_stops_the_server(serve, tmp_path):
    server = serve("basic:app")
    assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    assert "Metrics at" not in server.log()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        refused = serve("basic:app", "--metrics-bind", f"127.0.0.1:{port}", ready=False)
        assert refused.proc.wait(30) == 1
    assert "--metrics-bind: cannot listen on 127.0.0.1" in refused.log()


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def scrape_unix(path: Path, request: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        return http_exchange(sock, request)


def test_a_sync_worker_shows_its_request_in_flight_from_its_slot(serve):
    """One request at a time: in flight and busy come from the request the slot shows."""
    server = serve("basic:app", "--workers", "2", "--metrics-bind", "127.0.0.1:0", workers=2)
    url = metrics_url(server)
    idle = parse_exposition(requests.get(url, timeout=10).text)
    assert value(idle, "forkserve_http_requests_in_flight") == 0
    assert value(idle, "forkserve_workers", state="idle") == 2
    samples = while_one_sleeps(server, url)
    assert value(samples, "forkserve_workers", state="busy") == 1
    assert value(samples, "forkserve_workers", state="idle") == 1

    def settled() -> dict:  # finished, and flushed within a second
        samples = parse_exposition(requests.get(url, timeout=10).text)
        done = value(samples, "forkserve_http_requests_total", method="GET", status_class="2xx")
        return samples if done == 1 and value(samples, "forkserve_http_requests_in_flight") == 0 else {}

    assert wait_until(settled, timeout=10)
