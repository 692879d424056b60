"""A Connection and the WSGI layer, driven in-process over a socket pair (see inprocess.py)."""

from __future__ import annotations

import gc
import hashlib
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from inprocess import Client

from forkserve.connection import Phase

GET = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The method, the path, and what the body was (length and digest)."""
    body = environ["wsgi.input"].read()
    answer = b"%s %s %d %s" % (
        environ["REQUEST_METHOD"].encode(),
        environ["PATH_INFO"].encode(),
        len(body),
        hashlib.sha256(body).hexdigest().encode(),
    )
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [answer]


def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    raise RuntimeError("the app fails")


@pytest.fixture
def client() -> Iterator[Client]:
    client = Client(echo)
    yield client
    client.close()


def digest(body: bytes) -> bytes:
    return hashlib.sha256(body).hexdigest().encode()


def test_a_get_is_answered(client: Client) -> None:
    assert client.send(GET)
    status, headers, body = client.response()
    assert status == 200
    assert body == b"GET /hello 0 " + digest(b"")
    assert headers["content-length"] == str(len(body))  # one-element body: a length, so it may stay open
    assert headers["server"] == "forkserve" and "date" in headers
    assert "connection" not in headers  # HTTP/1.1 keeps the connection by default


def test_keep_alive_serves_two_requests_on_one_connection(client: Client) -> None:
    assert client.send(GET)
    assert client.response()[2].startswith(b"GET /hello ")
    assert client.connection.phase is Phase.HEAD and client.connection.idle
    assert client.send(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = client.response()
    assert status == 200 and body.startswith(b"GET /again ")
    assert client.worker.requests == 2


def test_a_chunked_post_body_reaches_the_app_whole() -> None:
    # Past body_prebuffer and past one read of the connection: the app runs
    # early and the transport reads the rest while the app waits for it
    # (already in the socket, so nothing blocks).
    client = Client(echo, body_prebuffer=1024)
    body = bytes(range(256)) * 600
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:1000], body[1000:90000], body[90000:])
    )
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert client.send(head + chunks + b"0\r\n\r\n")
    status, _, answer = client.response()
    assert status == 200
    assert answer == b"POST /upload %d %s" % (len(body), digest(body))
    assert client.connection.phase is Phase.HEAD  # the body was read to its end: the connection goes on
    client.close()


def test_an_app_that_raises_gets_a_500_and_the_connection_ends(caplog: pytest.LogCaptureFixture) -> None:
    client = Client(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="forkserve.error"):
            client.send(GET)
        status, _, body = client.response()
        assert status == 500 and body == b"Internal Server Error\n"
        assert client.rest() == b""  # nothing after it: the server shut its side down
        assert client.connection.phase in (Phase.LINGER, Phase.CLOSED)
        assert any("Error handling GET /hello" in record.getMessage() for record in caplog.records)
    finally:
        client.close()


def test_a_malformed_request_gets_a_400_and_the_connection_ends(client: Client) -> None:
    client.send(b"GET /hello HTTP/1.1\r\nHost x\r\n\r\n")  # no colon in the header line
    status, headers, body = client.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert body.startswith(b"Bad Request: ")
    assert client.rest() == b""
    assert client.connection.phase in (Phase.LINGER, Phase.CLOSED)
    assert client.worker.requests == 0  # it never reached the app


def test_pipelined_requests_are_answered_in_order(client: Client) -> None:
    requests = b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(3))
    assert client.send(requests)  # one read: all three are served
    paths = [client.response()[2].split()[1] for _ in range(3)]
    assert paths == [b"/0", b"/1", b"/2"]
    assert client.worker.requests == 3


def test_a_leaving_worker_answers_with_connection_close(client: Client) -> None:
    client.worker.closing = True
    client.send(GET)
    status, headers, _ = client.response()
    assert status == 200 and headers["connection"] == "close"
    assert client.rest() == b""


def test_the_last_request_before_max_requests_says_close() -> None:
    client = Client(echo, max_requests=2)
    try:
        assert client.send(GET)
        assert "connection" not in client.response()[1]
        client.send(GET)
        assert client.response()[1]["connection"] == "close"
        assert client.worker.closing
    finally:
        client.close()


def test_a_finished_connection_is_freed_without_the_garbage_collector() -> None:
    """A worker opens a Connection per client: one in a reference cycle would be
    freed only by the cyclic collector, whose passes then cost every closed
    connection (and, in a large app, walk all of its objects)."""
    gc.collect()
    gc.disable()
    try:
        client = Client(echo)
        client.send(GET + b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        assert client.response()[0] == 200 and client.response()[0] == 200
        gone = weakref.ref(client.connection)
        client.close()
        del client
        assert gone() is None
        assert gc.collect() == 0  # nothing the request made was left in a cycle either
    finally:
        gc.enable()
