"""Response-side rules: what the app asks for must be valid on the wire.

Unit tests of ``forkserve.http.response`` first, then the same rules end
to end: a bad status or header becomes a 500 (never a split or malformed
response), and a body that disagrees with its Content-Length never leaves
the connection in an unknown state.
"""

from __future__ import annotations

from email.utils import formatdate

import pytest
import requests
from conftest import ResponseReader
from test_hostile import start, stop

from forkserve.http.errors import InvalidResponse
from forkserve.http.response import Framing, build_head, http_date, simple_response, status_code


def head(status: str = "200 OK", headers: list[tuple[str, str]] | None = None, **overrides: object):
    options: dict[str, object] = {
        "version": "HTTP/1.1",
        "method": "GET",
        "keep_alive": True,
        "body_length": None,
        "extra": b"Server: t\r\n",
    }
    options.update(overrides)
    return build_head(status, headers or [], **options)  # type: ignore[arg-type]


# -- status line ---------------------------------------------------------------


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found", "599 ", "200 caf\xe9", "201 tab\there"])
def test_valid_status_lines(status):
    assert status_code(status) == int(status[:3])


@pytest.mark.parametrize(
    "status",
    [
        "200",  # PEP 3333 needs the space
        "200OK",
        "2000 OK",
        "20 OK",
        "OK 200",
        " 200 OK",
        "099 Low",
        "600 High",
        "100 Continue",  # 1xx can't be a final response
        "101 Switching Protocols",
        "200 OK\r\nX-Injected: 1",
        "200 OK\n",
        "200 O\x00K",
        "200 \u2603",
        b"200 OK",
        200,
    ],
)
def test_invalid_status_lines_are_refused(status):
    with pytest.raises(InvalidResponse):
        status_code(status)


# -- header fields -------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        ("X Bad", "v"),
        ("X-Bad:", "v"),
        ("", "v"),
        ("X-Bad\r\nInjected", "v"),
        ("X-Caf\xe9", "v"),
        ("X-Bad", "a\r\nSet-Cookie: x=1"),
        ("X-Bad", "a\nb"),
        ("X-Bad", "a\rb"),
        ("X-Bad", "a\x00b"),
        ("X-Bad", "a\x7fb"),
        ("X-Bad", "a\x1bb"),
        ("X-Bad", "\u2603"),
        ("X-Bad", b"bytes"),
        (b"X-Bad", "v"),
    ],
)
def test_invalid_header_is_refused(header):
    with pytest.raises(InvalidResponse):
        head(headers=[header])


@pytest.mark.parametrize(
    "name", ["Transfer-Encoding", "upgrade", "Keep-Alive", "TE", "Trailer", "Proxy-Connection"]
)
def test_hop_by_hop_header_from_the_app_is_refused(name):
    with pytest.raises(InvalidResponse):
        head(headers=[(name, "x")])


def test_valid_headers_pass_through_in_order():
    result = head(
        headers=[("X-A", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("X-Obs", "caf\xe9 \tx")]
    )
    assert b"X-A: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Obs: caf\xe9 \tx\r\n" in result.data
    assert result.data.startswith(b"HTTP/1.1 200 OK\r\nServer: t\r\n")
    assert result.data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("value", ["-1", "1.0", "0x10", " ", "", "1 2", "\xb2", "\u0661"])
def test_invalid_content_length_is_refused(value):
    with pytest.raises(InvalidResponse):
        head(headers=[("Content-Length", value)])


def test_conflicting_content_lengths_are_refused_equal_ones_merged():
    with pytest.raises(InvalidResponse):
        head(headers=[("Content-Length", "4"), ("Content-Length", "5")])
    result = head(headers=[("Content-Length", "5"), ("content-length", "5")])
    assert result.data.count(b"Content-Length") == 1 and result.content_length == 5


def test_connection_close_from_the_app_closes():
    result = head(headers=[("Connection", "Keep-Alive, Close")])
    assert not result.keep_alive and b"Connection: close\r\n" in result.data
    assert head(headers=[("Connection", "closely")]).keep_alive


# -- framing -------------------------------------------------------------------


def test_framing_by_length_chunked_or_close():
    assert head(body_length=3).framing == Framing.LENGTH
    chunked = head()
    assert chunked.framing == Framing.CHUNKED and b"Transfer-Encoding: chunked\r\n" in chunked.data
    old = head(version="HTTP/1.0")
    assert old.framing == Framing.CLOSE and not old.keep_alive and b"Connection: close" in old.data
    kept = head(version="HTTP/1.0", body_length=2)
    assert kept.keep_alive and b"Connection: keep-alive\r\n" in kept.data


def test_no_body_for_head_204_and_304():
    assert head(method="HEAD", headers=[("Content-Length", "10")]).framing == Framing.NONE
    assert b"Content-Length: 10" in head(method="HEAD", headers=[("Content-Length", "10")]).data
    no_content = head("204 No Content", headers=[("Content-Length", "0")])
    assert no_content.framing == Framing.NONE and b"Content-Length" not in no_content.data
    assert head("304 Not Modified").framing == Framing.NONE


def test_simple_response_closes_and_is_plain_text():
    data = simple_response(400, "Bad Request", b"bad\n")
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Connection: close\r\n" in data and b"Content-Length: 4\r\n" in data
    assert b"Content-Type: text/plain" in data and data.endswith(b"\r\n\r\nbad\n")


# -- end to end ----------------------------------------------------------------


BAD_KINDS = [
    "crlf-value",
    "lf-value",
    "cr-value",
    "nul-value",
    "ctl-value",
    "wide-value",
    "space-name",
    "colon-name",
    "crlf-name",
    "empty-name",
    "bytes-value",
    "status-no-phrase",
    "status-crlf",
    "status-letters",
    "status-four-digits",
    "status-informational",
    "status-switching",
    "status-range",
    "hop-transfer-encoding",
    "hop-upgrade",
    "hop-keep-alive",
    "hop-te",
    "hop-trailer",
    "hop-proxy-connection",
    "bad-content-length",
    "conflicting-content-length",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("response"))
    yield server
    stop(server)


def test_every_bad_response_becomes_a_500(server):
    for kind in BAD_KINDS:
        sock = server.connect()
        sock.sendall(b"GET /bad/%s HTTP/1.1\r\nHost: x\r\n\r\n" % kind.encode())
        reader = ResponseReader(sock)
        status, headers, body = reader.read()
        assert status == 500, kind
        assert b"Injected" not in body and "injected" not in str(headers).lower()
        assert headers["connection"] == "close"
        assert reader.closed()
        sock.close()
    log = server.log()
    assert log.count("InvalidResponse") >= len(BAD_KINDS)
    assert requests.get(server.url + "/pid", timeout=10).status_code == 200


def test_short_body_closes_the_connection_never_reuses_it(server):
    sock = server.connect()
    sock.sendall(b"GET /short HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = ResponseReader(sock)
    status, headers, _ = reader.read(head_only=True)
    assert status == 200 and headers["content-length"] == "100"
    assert reader.rest() == b"0123456789"  # then the server closed: no second response
    assert server.wait_for_log("app sent 10 of 100 body bytes")


def test_long_body_is_cut_at_content_length_and_logged(server):
    sock = server.connect()
    sock.sendall(b"GET /long HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = ResponseReader(sock)
    assert reader.read()[2] == b"hello"
    status, _, body = reader.read()  # the extra bytes did not pose as the next response
    assert status == 200 and body.isdigit()
    assert server.wait_for_log("app sent more than its Content-Length")
    assert server.log().count("app sent more than its Content-Length") == 1


def test_connection_close_from_the_app_is_honoured(server):
    sock = server.connect()
    sock.sendall(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = ResponseReader(sock)
    status, headers, body = reader.read()
    assert (status, body, headers["connection"]) == (200, b"ok", "close")
    assert reader.closed()


def test_app_date_and_server_replace_the_servers_own():
    extra = b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\nServer: forkserve\r\n"
    result = head(headers=[("date", "Tue, 02 Jan 2024 00:00:00 GMT")], extra=extra)
    assert result.data.lower().count(b"date:") == 1
    assert b"date: Tue, 02 Jan 2024" in result.data and b"Server: forkserve\r\n" in result.data
    both = head(headers=[("Server", "app"), ("Date", "x")], extra=extra)
    assert b"forkserve" not in both.data and both.data.count(b"Date:") == 1
    assert head(extra=extra).data.count(extra) == 1


def test_the_date_header_is_an_imf_fixdate_in_english_whatever_the_locale() -> None:
    """RFC 9110 §5.6.7; an app may set LC_TIME, and strftime's names would follow it."""
    assert http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT"  # the RFC's own example
    for seconds in range(0, 4_102_444_800, 86_400 * 37 + 3_607):  # 1970 to 2099, every weekday and month
        assert http_date(seconds) == formatdate(seconds, usegmt=True)
