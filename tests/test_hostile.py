"""Hostile clients against the real server, over raw sockets.

Every refusal is checked for its status, its ``Connection: close``, the
closed connection after it, a log line naming the peer, and a worker that
goes on serving (the same pid answers afterwards). Every smuggling-shaped
input also checks what the app saw: at most the one real request with its
real body, never a request built from body bytes.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ResponseReader, Server

TIMEOUTS = ("--header-timeout", "1", "--keep-alive", "2", "--io-timeout", "2")


def start(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    server = Server(
        ["hostile:app", "--bind", "127.0.0.1:0", "--workers", "1", *args],
        tmp,
        tmp / "server.log",
        {"HOSTILE_LOG": str(tmp / "requests.log"), **(env or {})},
    )
    server.wait_ready()
    return server


def stop(server: Server) -> None:
    leftovers = server.shutdown()
    assert not leftovers, f"forkserve processes survived: {leftovers}"


@pytest.fixture(scope="module", params=["sync", "gevent"])
def worker_class(request: pytest.FixtureRequest) -> str:
    """Every test runs against each worker class: they share the parser, limits and timeouts."""
    return str(request.param)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, worker_class: str) -> Iterator[Server]:
    """One single-worker server for the module, with short timeouts."""
    server = start(tmp_path_factory.mktemp("hostile"), "-k", worker_class, *TIMEOUTS)
    server.worker_pid = get_pid(server)  # type: ignore[attr-defined]
    yield server
    stop(server)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers started by one test with its own flags; stopped after it."""
    started: list[Server] = []
    yield started
    for server in started:
        stop(server)


@pytest.fixture(autouse=True)
def worker_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test the module server's one worker still answers, unreplaced."""
    yield
    if "server" in request.fixturenames:
        server = request.getfixturevalue("server")
        assert get_pid(server) == server.worker_pid


def get_pid(server: Server) -> int:
    response = requests.get(server.url + "/pid", timeout=10)
    assert response.status_code == 200
    return int(response.text)


def seen(server: Server, case: str) -> list[dict[str, object]]:
    """The requests the app recorded for one case id."""
    path = server.log_path.parent / "requests.log"
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in entries if case in str(e["path"])]


def send(server: Server, data: bytes) -> tuple[socket.socket, ResponseReader]:
    sock = server.connect()
    sock.sendall(data)
    return sock, ResponseReader(sock)


def assert_refused(server: Server, data: bytes, status: int) -> None:
    """``data`` gets ``status``, a short closing answer, a log line, and a closed socket."""
    sock, reader = send(server, data)
    port = sock.getsockname()[1]
    got, headers, body = reader.read()
    assert got == status, body
    assert headers["connection"] == "close"
    assert headers["content-type"].startswith("text/plain")
    assert 0 < len(body) < 200
    assert reader.closed()
    reason = body.decode().split(": ", 1)[1].strip()  # "<phrase>: <reason>"
    assert server.wait_for_log(rf"\[INFO\] 127\.0\.0\.1:{port}: {status} .*: {re.escape(reason)}")
    sock.close()


def smuggle(case: str) -> bytes:
    return b"GET /smuggled/%s HTTP/1.1\r\nHost: x\r\n\r\n" % case.encode()


# -- refusals of malformed heads ------------------------------------------------------

HEAD_CASES = {
    "request-line-two-spaces": (b"GET  /record/C HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "request-line-tab": (b"GET\t/record/C HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "method-not-token": (b"G(T /record/C HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "target-control-char": (b"GET /record/C\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "target-no-form": (b"GET record/C HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "asterisk-not-options": (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "version-lowercase": (b"GET /record/C http/1.1\r\nHost: x\r\n\r\n", 400),
    "version-2": (b"GET /record/C HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "version-0.9": (b"GET /record/C HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    "no-host": (b"GET /record/C HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
    "bad-host": (b"GET /record/C HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    "space-before-colon": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400),
    "obs-fold": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n", 400),
    "bad-field-name": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nX\x00A: b\r\n\r\n", 400),
    "nul-in-value": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    "cr-in-value": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400),
    "bare-lf-line": (b"GET /record/C HTTP/1.1\nHost: x\r\n\r\n", 400),
    "bare-lf-head": (b"GET /record/C HTTP/1.1\nHost: x\n\n", 400),
    "request-line-too-long": (b"GET /record/C" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "field-too-large": (b"GET /record/C HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 9000 + b"\r\n\r\n", 431),
    "too-many-fields": (
        b"GET /record/C HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
        431,
    ),
    "head-too-large": (
        b"GET /record/C HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
        + b"\r\n",
        431,
    ),
}


@pytest.mark.parametrize("case", sorted(HEAD_CASES))
def test_malformed_head_is_refused(server, case):
    data, status = HEAD_CASES[case]
    assert_refused(server, data.replace(b"/record/C", b"/record/" + case.encode()), status)
    assert seen(server, case) == []


def test_overlong_request_line_is_refused_while_it_is_still_arriving(server):
    sock = server.connect()
    sock.sendall(b"GET /" + b"a" * 6000)  # no CRLF: the server must not wait for one
    reader = ResponseReader(sock)
    assert reader.read()[0] == 414
    assert reader.closed()


# -- smuggling-shaped framing ------------------------------------------------------------


def post(case: str, *fields: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    head = b"POST /record/%s %s\r\nHost: x\r\n" % (case.encode(), version)
    return head + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


SMUGGLE_CASES = {
    # name: (extra header fields, body before the smuggled request, status)
    "cl-te": ((b"Content-Length: 40", b"Transfer-Encoding: chunked"), b"0\r\n\r\n", 400),
    "te-cl": ((b"Transfer-Encoding: chunked", b"Content-Length: 5"), b"0\r\n\r\n", 400),
    "two-cl-different": ((b"Content-Length: 5", b"Content-Length: 45"), b"hello", 400),
    "two-cl-equal": ((b"Content-Length: 5", b"Content-Length: 5"), b"hello", 400),
    "cl-list": ((b"Content-Length: 5, 5",), b"hello", 400),
    "cl-plus": ((b"Content-Length: +5",), b"hello", 400),
    "cl-hex": ((b"Content-Length: 0x5",), b"hello", 400),
    "cl-empty": ((b"Content-Length:",), b"hello", 400),
    "cl-space-inside": ((b"Content-Length: 1 5",), b"hello", 400),
    "te-not-final": ((b"Transfer-Encoding: chunked, identity",), b"0\r\n\r\n", 400),
    "te-identity": ((b"Transfer-Encoding: identity",), b"0\r\n\r\n", 400),
    "te-twice": ((b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"), b"0\r\n\r\n", 400),
    "te-xchunked": ((b"Transfer-Encoding: xchunked",), b"0\r\n\r\n", 400),
    "te-space-before-colon": ((b"Transfer-Encoding : chunked", b"Content-Length: 5"), b"hello", 400),
    "te-vertical-tab": ((b"Transfer-Encoding:\x0bchunked",), b"0\r\n\r\n", 400),
    "te-folded": ((b"Transfer-Encoding:", b" chunked"), b"0\r\n\r\n", 400),
    "te-gzip-chunked": ((b"Transfer-Encoding: gzip, chunked",), b"0\r\n\r\n", 501),
    "bare-lf-before-cl": ((b"X-A: b\nContent-Length: 5",), b"hello", 400),
    "chunk-size-0x": ((b"Transfer-Encoding: chunked",), b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-junk": ((b"Transfer-Encoding: chunked",), b"5 junk\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-overflow": ((b"Transfer-Encoding: chunked",), b"1" * 17 + b"\r\nhello\r\n0\r\n\r\n", 400),
    "chunk-size-negative-int64": ((b"Transfer-Encoding: chunked",), b"ffffffffffffffff\r\nhello\r\n", 400),
    "chunk-no-crlf-after-data": ((b"Transfer-Encoding: chunked",), b"5\r\nhelloXX0\r\n\r\n", 400),
    "chunk-lf-after-data": ((b"Transfer-Encoding: chunked",), b"5\r\nhello\n0\r\n\r\n", 400),
    "chunk-bare-lf-size": ((b"Transfer-Encoding: chunked",), b"5\nhello\r\n0\r\n\r\n", 400),
    "chunk-ext-too-long": (
        (b"Transfer-Encoding: chunked",),
        b"5;" + b"e" * 2000 + b"\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "trailer-bare-lf": ((b"Transfer-Encoding: chunked",), b"5\r\nhello\r\n0\r\nX: y\n\r\n", 400),
    "trailer-too-large": (
        (b"Transfer-Encoding: chunked",),
        b"5\r\nhello\r\n0\r\nX: " + b"v" * 9000 + b"\r\n\r\n",
        431,
    ),
}


@pytest.mark.parametrize("case", sorted(SMUGGLE_CASES))
def test_smuggling_shaped_request_is_refused_and_never_reaches_the_app(server, case):
    fields, body, status = SMUGGLE_CASES[case]
    follow_up = b"GET /smuggled/%s-after HTTP/1.1\r\nHost: x\r\n\r\n" % case.encode()
    assert_refused(server, post(case, *fields) + body + smuggle(case) + follow_up, status)
    assert seen(server, case) == []


def test_transfer_encoding_on_http10_is_refused(server):
    data = post("te-http10", b"Transfer-Encoding: chunked", version=b"HTTP/1.0") + b"0\r\n\r\n"
    assert_refused(server, data + smuggle("te-http10"), 400)
    assert seen(server, "te-http10") == []


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_unread_body_holding_a_request_is_skipped(server, framing):
    case = f"unread-{framing}"
    inner = smuggle(case)
    if framing == "length":
        head = b"POST /ignore/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
            case.encode(),
            len(inner),
        )
        body = inner
    else:
        head = b"POST /ignore/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % case.encode()
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
    follow_up = b"POST /record/%s-next HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nnext" % case.encode()
    sock, reader = send(server, head + body + follow_up)
    assert reader.read()[2] == b"ignored"
    assert reader.read()[2] == b"length=4"
    records = seen(server, case)
    assert [r["path"] for r in records] == [f"/ignore/{case}", f"/record/{case}-next"]
    assert not any(r.get("smuggled") for r in records)
    sock.close()


def test_partly_read_body_is_drained_before_the_next_request(server):
    case = "part-read"
    inner = smuggle(case)
    head = b"POST /read-part/%s?3 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
        case.encode(),
        3 + len(inner),
    )
    sock, reader = send(
        server, head + b"abc" + inner + b"GET /record/part-read-next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert reader.read()[2] == b"abc"
    assert reader.read()[2] == b"length=0"
    assert [r["path"] for r in seen(server, case)] == ["/read-part/part-read", "/record/part-read-next"]
    sock.close()


def test_body_too_large_to_drain_closes_the_connection(server):
    case = "huge-unread"
    body = b"z" * (1_200_000) + smuggle(case)
    head = b"POST /ignore/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (case.encode(), len(body))
    sock = server.connect()
    reader = ResponseReader(sock)
    with contextlib.suppress(OSError):  # the server may stop reading before the end
        sock.sendall(head + body + b"GET /smuggled/huge-unread-after HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, payload = reader.read()
    assert (status, payload) == (200, b"ignored")
    assert reader.closed()
    assert [r["path"] for r in seen(server, case)] == ["/ignore/huge-unread"]


def test_chunked_trailers_never_become_headers(server):
    case = "trailers"
    data = (
        b"POST /record/%s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % case.encode()
        + b"5\r\nhello\r\n0\r\nX-Trailer: evil\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"
    )
    sock, reader = send(server, data + b"GET /record/trailers-next HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.read()[2] == b"length=5"
    assert reader.read()[2] == b"length=0"
    first = seen(server, case)[0]
    assert first["length"] == 5
    assert first["headers"] == ["HTTP_HOST", "HTTP_TRANSFER_ENCODING"]
    sock.close()


def test_forbidden_trailer_fields_are_refused(server):
    """RFC 9110 §6.5.1: framing and routing fields are never trailers; the request gets 400."""
    head = b"POST /record/forbidden-trailer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for field in (b"Host: evil", b"Transfer-Encoding: chunked", b"Content-Length: 5"):
        assert_refused(server, head + b"5\r\nhello\r\n0\r\n" + field + b"\r\n\r\n", 400)


def test_pipelined_bodies_arrive_intact(server):
    payloads = [b"first", b"", b"x" * 70_000]
    data = b"".join(
        b"POST /record/pipe-%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (i, len(p), p)
        for i, p in enumerate(payloads)
    )
    sock, reader = send(server, data)
    for i, payload in enumerate(payloads):
        assert reader.read()[2] == b"length=%d" % len(payload)
        (entry,) = seen(server, f"pipe-{i}")
        assert entry["length"] == len(payload)
    sock.close()


def test_expect_continue_unread_body_closes_instead_of_parsing_it(server):
    case = "expect-unread"
    inner = smuggle(case)
    head = b"POST /ignore/%s HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % (
        case.encode(),
        len(inner),
    )
    sock, reader = send(server, head)
    status, _, body = reader.read()
    assert (status, body) == (200, b"ignored")  # no 100 Continue: the app never read
    with contextlib.suppress(OSError):
        sock.sendall(inner)  # a client that sends its body anyway
    assert reader.closed()
    assert [r["path"] for r in seen(server, case)] == ["/ignore/expect-unread"]


def test_expect_continue_is_sent_when_the_app_reads(server):
    sock, reader = send(
        server,
        b"POST /record/expect-read HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    assert reader.read()[0] == 100
    sock.sendall(b"ping")
    assert reader.read()[2] == b"length=4"
    sock.close()


def test_body_over_the_limit_is_refused_before_it_is_sent(own_server, tmp_path, worker_class):
    server = start(tmp_path, "-k", worker_class, "--limit-request-body", "1000")
    own_server.append(server)
    # Only the head goes out: the 413 must come without waiting for the body.
    assert_refused(server, b"POST /record/limit HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413)
    chunked = b"POST /record/limit HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert_refused(server, chunked + b"3e9\r\n" + b"a" * 1001 + b"\r\n0\r\n\r\n", 413)
    assert seen(server, "limit") == []
    ok = b"POST /record/fits HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"a" * 1000
    assert send(server, ok)[1].read()[2] == b"length=1000"


def test_absolute_form_and_asterisk_form_reach_the_app(server):
    sock, reader = send(
        server,
        b"GET http://other.example/record/absolute?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert reader.read()[0] == 200
    assert reader.read()[0] == 200
    (entry,) = seen(server, "absolute")
    assert entry["query"] == "q=1"
    sock.close()


# -- slow and stalled clients -----------------------------------------------------------


def assert_closed_without_answer(sock: socket.socket) -> None:
    """The server closes the socket (within the client's generous timeout)."""
    sock.settimeout(15)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    assert data == b""


def assert_answered_408_and_closed(sock: socket.socket) -> None:
    """A request the client began and then stalled: 408 with Connection: close, then the close."""
    sock.settimeout(15)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data[:80]
    assert b"\r\nConnection: close\r\n" in data


def test_stalled_head_gets_408_after_header_timeout(server):
    sock = server.connect()
    sock.sendall(b"GET /record/stalled-head HTTP/1.1\r\nHost: x\r\n")
    assert_answered_408_and_closed(sock)
    assert seen(server, "stalled-head") == []


def test_stalled_body_start_never_runs_the_app(server):
    sock = server.connect()
    sock.sendall(b"POST /record/stalled-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    assert_answered_408_and_closed(sock)
    assert seen(server, "stalled-body") == []


def test_body_stalled_while_the_app_reads_is_cut(server):
    sock = server.connect()
    sock.sendall(
        b"POST /record/stalled-read HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 70_000
    )
    # The app got 64 KiB, then the client stalled: below --body-min-rate after the grace, a 408.
    assert_answered_408_and_closed(sock)
    assert seen(server, "stalled-read") == []  # the app never finished reading


def test_idle_keep_alive_connection_is_closed(server):
    sock, reader = send(server, b"GET /record/idle HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reader.read()[0] == 200
    assert_closed_without_answer(sock)


def test_client_that_does_not_read_its_response_is_cut_by_io_timeout(server):
    stalled = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(server.address)
    size = 64 * 1024 * 1024
    stalled.sendall(b"GET /big/stalled?%d HTTP/1.1\r\nHost: x\r\n\r\n" % size)
    stalled_at = time.monotonic()
    # Another client is served once the stalled one has been given up on (the
    # sync worker), or meanwhile (gevent: connections are served side by side).
    assert requests.get(server.url + "/record/after-stall", timeout=20).status_code == 200
    time.sleep(max(0.0, stalled_at + 3 - time.monotonic()))  # stalled past --io-timeout (2 s) either way
    stalled.settimeout(15)
    received = 0
    with contextlib.suppress(ConnectionResetError):
        while chunk := stalled.recv(1 << 20):
            received += len(chunk)
    assert received < size  # the response was cut off, not delivered
    stalled.close()


def test_slow_clients_do_not_hold_the_worker(own_server, tmp_path, worker_class):
    server = start(tmp_path, "-k", worker_class, "--header-timeout", "30", "--io-timeout", "30")
    own_server.append(server)
    pid = get_pid(server)
    dribblers = []
    for i in range(50):
        sock = server.connect()
        if i % 2:  # a complete head, then a body one byte at a time
            sock.sendall(b"POST /record/dribble-%d HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" % i)
            rest = b"b" * 100_000
        else:  # the head itself one byte at a time
            rest = b"POST /record/dribble-%d HTTP/1.1\r\nHost: x\r\nX-Pad: %s\r\n" % (i, b"p" * 200)
        dribblers.append((sock, rest))
    served = 0
    for step in range(12):
        for sock, rest in dribblers:
            sock.sendall(rest[step : step + 1])
        response = requests.post(f"{server.url}/record/ordinary-{step}", data=b"payload", timeout=10)
        assert response.status_code == 200 and response.text == "length=7"
        assert get_pid(server) == pid
        served += 1
        time.sleep(0.25)
    assert served == 12
    assert seen(server, "dribble") == []  # none of them got the worker
    for sock, _ in dribblers:
        sock.close()


# -- clients that vanish ------------------------------------------------------------------


def test_clients_that_disconnect_mid_request_or_mid_response_leave_the_worker_alive(
    own_server, tmp_path, worker_class
):
    server = start(tmp_path, "-k", worker_class, "--log-level", "debug", "--io-timeout", "5")
    own_server.append(server)
    pid = get_pid(server)

    def hang_up(data: bytes, read: int = 0) -> None:
        sock = server.connect()
        sock.sendall(data)
        if read:  # part of the response, then an abortive close (RST)
            got = 0
            while got < read:
                got += len(sock.recv(65536))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()

    hang_up(b"GET /record/gone-head HTTP/1.1\r\nHost: x\r\n")
    assert server.wait_for_log(r"\[DEBUG\] .*client left mid-request")
    hang_up(b"POST /record/gone-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")  # before the app
    assert server.wait_for_log(r"\[DEBUG\] .*client left mid-request", count=2)
    hang_up(b"POST /record/gone-read HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"a" * 70_000)
    assert server.wait_for_log(r"\[DEBUG\] .*client gone during POST /record/gone-read")
    assert get_pid(server) == pid
    hang_up(b"GET /big/gone-response?%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 << 20), read=200_000)
    assert server.wait_for_log(r"\[DEBUG\] .*client gone during GET /big/gone-response")
    assert get_pid(server) == pid
    assert seen(server, "gone") == []
    assert "Traceback" not in server.log() and "ERROR" not in server.log()
