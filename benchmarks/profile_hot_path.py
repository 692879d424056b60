"""Per-request cost of forkserve's hot path, measured in one process.

No wrk, no fork: a ``Connection`` is driven through a socket pair exactly as
the worker's event loop drives it (``on_readable()`` once per request), with
the hello app behind it. That isolates the server's own Python work from the
load generator and from the scheduler, which share the two cores in
``run.py``'s measurements.

    python benchmarks/profile_hot_path.py                 # µs per request, each step
    python benchmarks/profile_hot_path.py --profile       # cProfile of the loop
    python benchmarks/profile_hot_path.py --httptools     # parser vs httptools
    python benchmarks/profile_hot_path.py --instructions  # instructions: metrics off/on, a new connection

``--instructions`` runs the full-request loop under ``valgrind --tool=callgrind``
at two loop lengths and divides the difference, so start-up cancels out. An
instruction count does not depend on what else the machine is doing, which
makes it the figure for small differences such as the cost of
``--metrics-bind`` (wall-clock A/B runs spread wider than that effect).

Steps timed separately: the whole request over the socket pair, the parser
alone, ``build_environ()``, and the response (``Exchange.run()`` into a
transport that drops the bytes). A new connection is timed too, over
loopback TCP: batches of clients connect and send a ``Connection: close``
request, and ``Worker.accept()`` takes them as the worker's loop does,
beside the least any Python server does for them (accept, one read, a fixed
answer, close), so the ratio is forkserve's own cost per connection; the
clients' side is in both figures. ``--httptools`` parses the same corpus with
httptools (llhttp) when it is installed, collecting what forkserve's
``Request`` holds, so the figures compare like with like.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from forkserve.balance import Scoreboard
from forkserve.connection import Connection
from forkserve.environ import base_environ, build_environ
from forkserve.heartbeat import Heartbeats
from forkserve.http.parser import RequestParser
from forkserve.service import Service
from forkserve.settings import Settings
from forkserve.sockets import Address, Listener
from forkserve.streams import InputStream
from forkserve.worker import Worker
from forkserve.wsgi import Exchange, FileWrapper

BODY = b"Hello, world!"
HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]

# What wrk sends, and what a browser sends: the two ends of a typical head.
WRK = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
BROWSER = (
    b"GET /items/42?page=2&sort=name HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://example.com/items\r\n"
    b"Cookie: sessionid=abc123def456; csrftoken=0123456789abcdef\r\n"
    b"Connection: keep-alive\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"\r\n"
)
POST = (
    b"POST /api/items HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\n"
    b"Content-Length: 27\r\n\r\n"
    b'{"name": "x", "price": 1.5}'
)
CORPUS = {"wrk": WRK, "browser": BROWSER, "post": POST}
WRK_CLOSE = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"
FLOOR_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n" + BODY
BATCH = 100  # connections that wait together, as under load


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", list(HELLO_HEADERS))
    return [BODY]


def make_worker(
    app: Callable[..., Iterable[bytes]], listeners: list[Listener] | None = None, **settings: Any
) -> tuple[Worker, Service]:
    """A worker and its Service, built by ``Worker.make_service`` itself (default settings unless given).

    The same constructor the workers use, so the profile can never drift from
    what they run (defaults, hooks, the heartbeat's real store).
    """
    worker = Worker(1, Settings(**settings), listeners or [], Heartbeats().claim(), Scoreboard().claim(), app)
    return worker, worker.make_service(app)


def make_base() -> dict[str, Any]:
    return base_environ(
        server=("127.0.0.1", "8000"),
        peer=("127.0.0.1", "40000"),  # trusted as a proxy by default, as on loopback
        url_scheme="http",
        multithread=False,
        file_wrapper=FileWrapper,
    )


def socket_pair(tcp: bool) -> tuple[socket.socket, socket.socket]:
    """(client, server) connected over loopback TCP or a Unix socket pair."""
    if not tcp:
        return socket.socketpair()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client, server


def per_call(fn: Callable[[], object], n: int) -> float:
    """Microseconds per call of ``fn``, best of three rounds of ``n`` calls."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


# -- the steps -----------------------------------------------------------------


def connection_loop(request: bytes, tcp: bool, **settings: Any) -> Callable[[], object]:
    """One request through Connection.on_readable(), client side included."""
    return connection_and_service(request, tcp, **settings)[0]


def connection_and_service(
    request: bytes, tcp: bool, **settings: Any
) -> tuple[Callable[[], object], Service]:
    client, server = socket_pair(tcp)
    server.setblocking(False)
    worker, service = make_worker(hello, **settings)
    connection = Connection(server, make_base(), service, worker)

    def one() -> None:
        client.send(request)
        if not connection.on_readable():
            raise RuntimeError("the connection closed")
        client.recv(65536)

    return one, service


def new_connections(floor: bool = False) -> Callable[[], object]:
    """BATCH new connections, each with one ``Connection: close`` request, over loopback TCP.

    The clients connect and send; the worker takes them the way its loop
    does when told of waiting connections (``Worker.accept()``: accept,
    serve the request that came with the handshake, close); the clients
    read their answers. With ``floor``, the least any Python server can do
    takes the worker's place: accept, one read, a fixed answer, close (as
    ``benchmarks/floor.py`` does), so the difference is forkserve's own work.
    """
    sock = socket.create_server(("127.0.0.1", 0), backlog=4 * BATCH)
    listener = Listener(sock, Address(socket.AF_INET, "127.0.0.1", sock.getsockname()[1]))
    worker, service = make_worker(hello, [listener])
    worker.start_loop()
    address, fd = sock.getsockname(), sock.fileno()

    def least(batch: int) -> None:
        for _ in range(batch):
            conn, _ = sock.accept()
            conn.setblocking(False)
            if b"\r\n\r\n" in conn.recv(65536):
                conn.send(FLOOR_ANSWER)
            conn.close()

    def one() -> None:
        clients = []
        for _ in range(BATCH):
            client = socket.create_connection(address)
            client.sendall(WRK_CLOSE)
            clients.append(client)
        if floor:
            least(BATCH)
        else:
            worker.accept(fd, service, BATCH)
        for client in clients:
            if not client.recv(65536).startswith(b"HTTP/1.1 200 "):
                raise RuntimeError("a new connection was not answered")
            client.close()

    return one


def parse_only(request: bytes) -> Callable[[], object]:
    parser = RequestParser()

    def one() -> None:
        parser.feed(request)
        parser.next_request()
        while parser.read_body(-1):
            pass
        parser.start_next()

    return one


def environ_only(request: bytes) -> Callable[[], object]:
    parser = RequestParser()
    parser.feed(request)
    parsed = parser.next_request()
    assert parsed is not None
    base = make_base()
    stream = InputStream(lambda size: b"")
    return lambda: build_environ(base, parsed, stream)


class NullTransport:
    closing = False

    def send(self, data: bytes) -> None:
        pass

    def sendfile(self, file: IO[bytes], offset: int, count: int) -> int:
        return 0


def response_only(request: bytes) -> Callable[[], object]:
    parser = RequestParser()
    parser.feed(request)
    parsed = parser.next_request()
    assert parsed is not None
    transport = NullTransport()
    extra = b"Date: Thu, 01 Jan 2026 00:00:00 GMT\r\nServer: forkserve\r\n"
    environ: dict[str, Any] = {}
    return lambda: Exchange(parsed, transport, extra, True).run(hello, environ)


# -- httptools, for comparison -------------------------------------------------


def httptools_parse(request: bytes) -> Callable[[], object] | None:
    """httptools collecting what a Request holds: method, URL, headers, framing."""
    try:
        import httptools  # type: ignore[import-not-found]
    except ImportError:
        return None

    class Collector:
        def __init__(self) -> None:
            self.headers: list[tuple[str, str]] = []
            self.url = b""
            self.body: list[bytes] = []
            self.done = False

        def on_url(self, url: bytes) -> None:
            self.url = url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.decode("latin-1").upper(), value.decode("latin-1")))

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            self.done = True

    collector = Collector()
    parser = httptools.HttpRequestParser(collector)

    def one() -> None:
        collector.headers = []
        collector.body = []
        parser.feed_data(request)
        parsed = httptools.parse_url(collector.url)
        (parser.get_method().decode(), parsed.path, parsed.query, parser.should_keep_alive())

    return one


# -- main ----------------------------------------------------------------------


def report(n: int, tcp: bool, with_httptools: bool) -> None:
    print(f"µs per call, best of 3 x {n} ({'TCP' if tcp else 'Unix'} socket pair for the full path)")
    print(f"{'step':<28}" + "".join(f"{name:>10}" for name in CORPUS))
    steps: list[tuple[str, Callable[[bytes], Callable[[], object] | None]]] = [
        ("full request (socket pair)", lambda r: connection_loop(r, tcp)),
        ("parser", parse_only),
        ("build_environ", environ_only),
        ("response (Exchange.run)", response_only),
    ]
    if with_httptools:
        steps.append(("httptools parse", httptools_parse))
    for label, make in steps:
        cells = []
        for request in CORPUS.values():
            fn = make(request)
            cells.append(f"{per_call(fn, n):>10.2f}" if fn is not None else f"{'n/a':>10}")
        print(f"{label:<28}" + "".join(cells))
    batches = max(1, n // (4 * BATCH))
    ours, least = (per_call(new_connections(floor), batches) / BATCH for floor in (False, True))
    print(f"new connection, Connection: close (loopback TCP, clients included): {ours:.1f} µs")
    print(f"  the least a Python server does for it: {least:.1f} µs (forkserve x{ours / least:.2f})")


def profile(n: int, tcp: bool, request: bytes) -> None:
    one = connection_loop(request, tcp)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        one()
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


# -- instructions under callgrind ----------------------------------------------

LOOP_LENGTHS = (2000, 7000)
ROUNDS = 3  # off and on in turn; the medians are reported
CLOSE_BATCHES = (2, 7)  # batches of BATCH new connections, for the closed-connection count


FLUSH_EVERY = 5000  # requests; a worker flushes once a second, some 9,000 requests at full load


def loop_only(n: int, mode: str) -> None:
    """What callgrind runs: ``n`` wrk requests through the full path, nothing else
    (``mode`` "close" or "floor": ``n`` batches of new connections instead).

    With metrics the recorder's flush runs too, more often than a busy worker's
    sweep runs it, so its share is counted with room to spare.
    """
    if mode in ("close", "floor"):
        batch = new_connections(floor=mode == "floor")
        for _ in range(n):
            batch()
        return
    metrics = mode == "metrics"
    one, service = connection_and_service(
        WRK, False, **({"metrics_bind": ["127.0.0.1:0"]} if metrics else {})
    )
    for chunk in range(0, n, FLUSH_EVERY):
        for _ in range(min(FLUSH_EVERY, n - chunk)):
            one()
        if service.metrics is not None:
            service.metrics.flush()


def instructions(n: int, mode: str) -> int:
    """Instructions callgrind counts for the whole process running ``loop_only(n, mode)``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        argv = [sys.executable, __file__, "--loop", str(n), "--mode", mode]
        run = subprocess.run(
            ["setarch", "-R", "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},  # the same dict layouts in every run
            check=True,
        )
        found = re.search(r"Collected : (\d+)", run.stderr)
        if found is None:
            raise RuntimeError(f"callgrind printed no total:\n{run.stderr[-2000:]}")
        return int(found.group(1))


def report_instructions() -> None:
    short, long = LOOP_LENGTHS
    print(f"instructions per wrk request (callgrind, ({long} - {short}) requests, median of {ROUNDS})")
    rounds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ROUNDS):
        for metrics in (False, True):
            mode = "metrics" if metrics else "keep-alive"
            total = instructions(long, mode) - instructions(short, mode)
            rounds[metrics].append(total / (long - short))
    medians = {metrics: statistics.median(counts) for metrics, counts in rounds.items()}
    for metrics, counts in rounds.items():
        shown = ", ".join(f"{count:,.0f}" for count in counts)
        print(f"  metrics {'on ' if metrics else 'off'} {medians[metrics]:>10,.0f}   ({shown})")
    print(f"  metrics on / off: {medians[True] / medians[False]:.4f}")
    short, long = CLOSE_BATCHES
    count = (long - short) * BATCH
    print(f"instructions per closed connection, its client included (callgrind, {count} connections)")
    ours, least = (
        (instructions(long, mode) - instructions(short, mode)) / count for mode in ("close", "floor")
    )
    print(f"  forkserve {ours:>10,.0f}")
    print(f"  floor     {least:>10,.0f}   (accept, one read, a fixed answer, close)")
    print(f"  forkserve / floor: {ours / least:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=20000, help="calls per round")
    parser.add_argument("--tcp", action="store_true", help="loopback TCP instead of a Unix socket pair")
    parser.add_argument("--profile", action="store_true", help="cProfile the full path")
    parser.add_argument("--request", choices=sorted(CORPUS), default="wrk", help="request for --profile")
    parser.add_argument("--httptools", action="store_true", help="also time httptools on the corpus")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions: metrics off and on, a new connection"
    )
    parser.add_argument("--loop", type=int, help=argparse.SUPPRESS)  # what --instructions runs
    parser.add_argument("--mode", default="keep-alive", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop is not None:
        loop_only(args.loop, args.mode)
    elif args.instructions:
        report_instructions()
    elif args.profile:
        profile(args.n, args.tcp, CORPUS[args.request])
    else:
        report(args.n, args.tcp, args.httptools)
    return 0


if __name__ == "__main__":
    sys.exit(main())
