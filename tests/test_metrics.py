"""Metrics at the pure level: the slot layout, the master's sums and folding, the page, the endpoint.

Real heartbeat slots (shared memory), real ``Worker`` records and real
listening sockets; no process is forked here (test_prometheus.py runs the
whole server under a real Prometheus).
"""

from __future__ import annotations

import os
import re
import socket

import pytest

from forkserve import metrics
from forkserve.balance import Scoreboard
from forkserve.heartbeat import Heartbeats
from forkserve.lifecycle import Event, Record
from forkserve.metrics import (
    OverlappingRequestMetrics,
    PoolMetrics,
    RequestMetrics,
    answer,
    exit_reason,
    served,
    worker_memory,
)
from forkserve.settings import SettingError, build
from forkserve.sockets import Address, Listener
from forkserve.worker import Worker

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Samples of a Prometheus text page, keyed by (name, labels)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        samples[(name, frozenset(LABEL.findall(labels or "")))] = float(value)
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def pool():
    heartbeats, scoreboard, settings = Heartbeats(), Scoreboard(), build({})
    records: list[Record] = []

    def spawn(pid: int = 0) -> Record:
        worker = Worker(len(records) + 1, settings, [], heartbeats.claim(), scoreboard.claim(), None)
        worker.pid = pid or os.getpid()
        record = Record(worker, generation=0)
        records.append(record)
        return record

    return heartbeats, spawn


def start(recorder: OverlappingRequestMetrics) -> None:
    """What handler.serve does as a request starts in a worker whose requests overlap."""
    assert recorder.started is not None
    recorder.started[0] += 1


def test_requests_by_method_and_class_histogram_and_in_flight(pool):
    _, spawn = pool
    record = spawn()
    record.move(Event.BOOTED)
    recorder = OverlappingRequestMetrics(record.worker.heartbeat.counters)
    for method, status, seconds in [
        ("GET", 200, 0.0004),
        (b"GET", 404, 0.003),
        ("POST", 500, 0.2),
        ("BREW", 201, 75.0),  # an unknown method; past the last bucket
        ("HEAD", 0, 0.001),  # the client left before any response; exactly on a bound
        ("GET", 799, 0.01),  # an app's odd status counts as 5xx
    ]:
        start(recorder)
        recorder.request_done(method, status, seconds)
    start(recorder)  # one still running
    unflushed = parse_exposition(PoolMetrics().render([record], []))
    assert value(unflushed, "forkserve_http_requests_in_flight") == 1  # live
    assert value(unflushed, "forkserve_http_request_duration_seconds_count") == 0  # until the flush
    recorder.flush()
    samples = parse_exposition(PoolMetrics().render([record], []))
    requests = "forkserve_http_requests_total"
    assert value(samples, requests, method="GET", status_class="2xx") == 1
    assert value(samples, requests, method="GET", status_class="4xx") == 1
    assert value(samples, requests, method="GET", status_class="5xx") == 1
    assert value(samples, requests, method="POST", status_class="5xx") == 1
    assert value(samples, requests, method="other", status_class="2xx") == 1
    assert value(samples, requests, method="HEAD", status_class="none") == 1
    assert sum(v for (name, _), v in samples.items() if name == requests) == 6
    bucket = "forkserve_http_request_duration_seconds_bucket"
    assert value(samples, bucket, le="0.001") == 2  # le is inclusive
    assert value(samples, bucket, le="0.005") == 3
    assert value(samples, bucket, le="0.01") == 4
    assert value(samples, bucket, le="0.25") == 5
    assert value(samples, bucket, le="60.0") == 5
    assert value(samples, bucket, le="+Inf") == 6
    assert value(samples, "forkserve_http_request_duration_seconds_count") == 6
    assert value(samples, "forkserve_http_request_duration_seconds_sum") == pytest.approx(75.2144, abs=1e-5)
    assert value(samples, "forkserve_http_requests_in_flight") == 1
    assert value(samples, "forkserve_workers", state="busy") == 1
    assert value(samples, "forkserve_workers", state="idle") == 0
    assert served(record.worker.heartbeat) == 6


def test_a_dead_workers_counts_are_folded_so_counters_never_go_backwards(pool):
    heartbeats, spawn = pool
    first = spawn()
    recorder = OverlappingRequestMetrics(first.worker.heartbeat.counters)
    for _ in range(3):
        recorder.connection_opened()
        start(recorder)
        recorder.request_done("GET", 200, 0.002)
    recorder.refused(400)
    recorder.refused(418)  # not a parser status: "other"
    recorder.connection_closed()
    recorder.flush()
    totals = PoolMetrics()
    before = parse_exposition(totals.render([first], []))
    assert value(before, "forkserve_connections_open") == 2
    assert value(before, "forkserve_connections_accepted_total") == 3
    # The worker exits: the master folds its slot in, then the slot is reused and zeroed.
    first.worker.heartbeat.mark_leaving()
    metrics.leaving_because(first.worker.heartbeat, metrics.LEFT_MAX_REQUESTS)
    totals.worker_gone(first, stopping=False, generation=0)
    heartbeats.release(first.worker.heartbeat)
    second = spawn()
    assert second.worker.heartbeat.slot == first.worker.heartbeat.slot
    assert served(second.worker.heartbeat) == 0
    again = OverlappingRequestMetrics(second.worker.heartbeat.counters)
    again.request_done("GET", 200, 0.002)
    again.flush()
    after = parse_exposition(totals.render([second], []))
    assert value(after, "forkserve_http_requests_total", method="GET", status_class="2xx") == 4
    assert value(after, "forkserve_http_request_duration_seconds_count") == 4
    assert value(after, "forkserve_http_requests_refused_total", status="400") == 1
    assert value(after, "forkserve_http_requests_refused_total", status="other") == 1
    assert value(after, "forkserve_connections_accepted_total") == 3
    assert value(after, "forkserve_connections_open") == 0  # a dead worker holds no connection
    assert value(after, "forkserve_worker_exits_total", reason="max_requests") == 1
    for key, number in before.items():
        if key[0].endswith(("_total", "_count", "_bucket", "_sum")):
            assert after[key] >= number, key


def test_a_worker_serving_one_request_at_a_time_counts_outcomes_only(pool):
    _, spawn = pool
    record = spawn()
    record.move(Event.BOOTED)
    heartbeat = record.worker.heartbeat
    recorder = RequestMetrics(heartbeat.counters)
    assert recorder.started is None
    for status, seconds in [(200, 0.0002), (200, 0.0004), (302, 0.03), (503, 2.0)]:
        recorder.request_done("GET", status, seconds)
    heartbeat.begin_request(1.0, b"GET /slow 10.0.0.7")  # one running now, shown by its slot
    recorder.flush()
    samples = parse_exposition(PoolMetrics().render([record], [], concurrent=False))
    requests = "forkserve_http_requests_total"
    assert value(samples, requests, method="GET", status_class="2xx") == 2
    assert value(samples, requests, method="GET", status_class="3xx") == 1
    assert value(samples, requests, method="GET", status_class="5xx") == 1
    bucket = "forkserve_http_request_duration_seconds_bucket"
    assert value(samples, bucket, le="0.001") == 2
    assert value(samples, bucket, le="0.025") == 2
    assert value(samples, bucket, le="0.05") == 3
    assert value(samples, bucket, le="2.5") == 4
    assert value(samples, "forkserve_http_request_duration_seconds_sum") == pytest.approx(2.0306)
    assert value(samples, "forkserve_http_requests_in_flight") == 1
    assert served(heartbeat) == 4
    heartbeat.end_request()
    recorder.request_done("GET", 200, 0.0001)
    recorder.flush()
    samples = parse_exposition(PoolMetrics().render([record], [], concurrent=False))
    assert value(samples, "forkserve_http_requests_in_flight") == 0
    assert value(samples, "forkserve_http_request_duration_seconds_count") == 5
    assert served(heartbeat) == 5


def test_exit_reasons_come_from_the_record_and_the_slot(pool):
    _, spawn = pool

    def reason(record: Record, stopping: bool = False, generation: int = 0) -> str:
        return exit_reason(record, stopping, generation)

    booting = spawn()
    assert reason(booting) == "boot"
    assert reason(booting, stopping=True) == "stop"
    booting.boot_deadline_missed = True
    assert reason(booting) == "timeout"
    ready = spawn()
    ready.move(Event.BOOTED)
    assert reason(ready) == "crash"
    ready.aborted_at = 1.0
    assert reason(ready) == "timeout"
    leaving = spawn()
    leaving.move(Event.BOOTED)
    leaving.worker.heartbeat.mark_leaving()
    leaving.move(Event.LEAVING)
    assert reason(leaving) == "crash"  # left on its own without a reason: the app ended it
    metrics.leaving_because(leaving.worker.heartbeat, metrics.LEFT_MEMORY)
    assert reason(leaving) == "memory"
    metrics.leaving_because(leaving.worker.heartbeat, metrics.LEFT_TIMEOUT)
    assert reason(leaving) == "timeout"
    retired = spawn()
    retired.move(Event.BOOTED)
    retired.move(Event.RETIRE)
    assert reason(retired, generation=0) == "scale"
    assert reason(retired, generation=1) == "reload"


def test_workers_by_state_threads_and_exits_in_the_page(pool):
    _, spawn = pool
    booting, idle, busy, retiring = spawn(), spawn(), spawn(), spawn()
    for record in (idle, busy, retiring):
        record.move(Event.BOOTED)
    retiring.move(Event.RETIRE)
    running = OverlappingRequestMetrics(busy.worker.heartbeat.counters)
    start(running)
    start(running)
    totals = PoolMetrics()
    totals.worker_gone(retiring, stopping=False, generation=1)
    totals.reloads += 1
    samples = parse_exposition(totals.render([booting, idle, busy], [], threads=4))
    assert value(samples, "forkserve_workers", state="booting") == 1
    assert value(samples, "forkserve_workers", state="idle") == 1
    assert value(samples, "forkserve_workers", state="busy") == 1
    assert value(samples, "forkserve_threads", state="busy") == 2
    assert value(samples, "forkserve_threads", state="idle") == 6  # 4 idle + 2 of the busy worker's
    assert value(samples, "forkserve_worker_exits_total", reason="reload") == 1
    assert value(samples, "forkserve_reloads_total") == 1
    without_threads = parse_exposition(totals.render([idle], []))
    assert not any(name == "forkserve_threads" for name, _ in without_threads)


def test_listen_queue_length_and_limit_from_tcp_info(pool):
    _, spawn = pool
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(7)
    clients = []
    try:
        for _ in range(3):
            client = socket.create_connection(sock.getsockname(), timeout=5)
            clients.append(client)
        listener = Listener(sock, Address(socket.AF_INET, "127.0.0.1"))
        samples = parse_exposition(PoolMetrics().render([spawn()], [listener]))
        assert value(samples, "forkserve_listen_queue_length", listener=listener.url) == 3
        assert value(samples, "forkserve_listen_queue_limit", listener=listener.url) == 7
    finally:
        for client in clients:
            client.close()
        sock.close()


def test_memory_is_read_from_proc():
    mine = worker_memory(os.getpid())
    assert mine is not None
    assert 0 < mine.unique <= mine.resident and 0 < mine.proportional <= mine.resident
    assert worker_memory(2**22 + 1) is None  # above pid_max's default: no such process


def test_the_endpoints_answers():
    page = "forkserve_reloads_total 0\n"
    ok = answer(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", lambda: page)
    head, _, body = ok.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert b"Connection: close" in head and body == page.encode()
    assert f"Content-Length: {len(page)}".encode() in head
    only_head = answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", lambda: page)
    assert only_head == head + b"\r\n\r\n"
    assert answer(b"GET / HTTP/1.1\r\n\r\n", lambda: page).startswith(b"HTTP/1.1 404 ")
    refused = answer(b"POST /metrics HTTP/1.1\r\n\r\n", lambda: page)
    assert refused.startswith(b"HTTP/1.1 405 ") and b"Allow: GET, HEAD\r\n" in refused


def test_metrics_bind_takes_tcp_or_unix_but_not_fd():
    assert build({"metrics_bind": "127.0.0.1:9100"}).metrics_bind == "127.0.0.1:9100"
    assert build({"metrics_bind": "unix:/run/forkserve-metrics.sock"}).metrics_bind
    with pytest.raises(SettingError, match="not fd://"):
        build({"metrics_bind": "fd://3"})
    with pytest.raises(SettingError, match="port"):
        build({"metrics_bind": "127.0.0.1:http"})
