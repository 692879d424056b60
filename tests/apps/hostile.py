"""Apps for the hostile-client and response tests.

Every request the app sees is appended as one JSON line to the file named
by $HOSTILE_LOG, so a test can prove which requests reached the app (and
that none was built from another request's body bytes). Routes go by the
first path segment; the rest is a case id the test picks.
"""

from __future__ import annotations

import hashlib
import json
import os

LOG = os.environ.get("HOSTILE_LOG", "")


def record(environ, **extra):
    if not LOG:
        return
    entry = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "headers": sorted(k for k in environ if k.startswith("HTTP_")),
        **extra,
    }
    with open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


def app(environ, start_response):
    route = environ["PATH_INFO"].split("/")[1] if environ["PATH_INFO"].startswith("/") else "*"
    return ROUTES.get(route, read_and_record)(environ, start_response)


def read_and_record(environ, start_response):
    """Read the whole body, then record what arrived."""
    body = environ["wsgi.input"].read()
    record(environ, length=len(body), sha256=hashlib.sha256(body).hexdigest())
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"length=%d" % len(body)]


def ignore(environ, start_response):
    """Answer without reading the body: the server must skip it."""
    record(environ, length=None)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ignored"]


def read_part(environ, start_response):
    """Read only the first few body bytes."""
    part = environ["wsgi.input"].read(int(environ["QUERY_STRING"] or 3))
    record(environ, length=len(part))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [part]


def smuggled(environ, start_response):
    record(environ, smuggled=True)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"SMUGGLED"]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def big(environ, start_response):
    """?N: N bytes with a Content-Length, in 64 KiB pieces."""
    size = int(environ["QUERY_STRING"])
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    piece = b"x" * 65536
    return (piece[: min(65536, size - sent)] for sent in range(0, size, 65536))


# -- responses no server may put on the wire as they are ----------------------

BAD_RESPONSES = {
    "crlf-value": ("200 OK", [("X-Bad", "a\r\nSet-Cookie: injected=1")]),
    "lf-value": ("200 OK", [("X-Bad", "a\nInjected: 1")]),
    "cr-value": ("200 OK", [("X-Bad", "a\rInjected: 1")]),
    "nul-value": ("200 OK", [("X-Bad", "a\x00b")]),
    "ctl-value": ("200 OK", [("X-Bad", "a\x1bb")]),
    "wide-value": ("200 OK", [("X-Bad", "\u2603")]),
    "space-name": ("200 OK", [("X Bad", "v")]),
    "colon-name": ("200 OK", [("X-Bad:", "v")]),
    "crlf-name": ("200 OK", [("X-Bad\r\nInjected", "v")]),
    "empty-name": ("200 OK", [("", "v")]),
    "bytes-value": ("200 OK", [("X-Bad", b"v")]),
    "status-no-phrase": ("200", []),
    "status-crlf": ("200 OK\r\nInjected: 1", []),
    "status-letters": ("OK 200", []),
    "status-four-digits": ("2000 OK", []),
    "status-informational": ("100 Continue", []),
    "status-switching": ("101 Switching Protocols", []),
    "status-range": ("600 Nope", []),
    "hop-transfer-encoding": ("200 OK", [("Transfer-Encoding", "chunked")]),
    "hop-upgrade": ("200 OK", [("Upgrade", "websocket")]),
    "hop-keep-alive": ("200 OK", [("Keep-Alive", "timeout=5")]),
    "hop-te": ("200 OK", [("TE", "trailers")]),
    "hop-trailer": ("200 OK", [("Trailer", "X-Sum")]),
    "hop-proxy-connection": ("200 OK", [("Proxy-Connection", "keep-alive")]),
    "bad-content-length": ("200 OK", [("Content-Length", "-1")]),
    "conflicting-content-length": ("200 OK", [("Content-Length", "4"), ("Content-Length", "5")]),
}


def bad_response(environ, start_response):
    status, headers = BAD_RESPONSES[environ["PATH_INFO"].split("/")[2]]
    start_response(status, headers)
    return [b"body"]


def short(environ, start_response):
    """Promise 100 bytes, send 10."""
    start_response("200 OK", [("Content-Length", "100")])
    return [b"0123456789"]


def long(environ, start_response):
    """Promise 5 bytes, send 5 then 6 more in separate pieces."""
    start_response("200 OK", [("Content-Length", "5")])
    return iter([b"hel", b"lo", b"EXTRA!"])


def connection_close(environ, start_response):
    start_response("200 OK", [("Connection", "Close"), ("Content-Length", "2")])
    return [b"ok"]


ROUTES = {
    "record": read_and_record,
    "ignore": ignore,
    "read-part": read_part,
    "smuggled": smuggled,
    "pid": pid,
    "big": big,
    "bad": bad_response,
    "short": short,
    "long": long,
    "close": connection_close,
}
