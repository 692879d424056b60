"""Small plain-WSGI apps the functional tests drive, one per path."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time


def app(environ, start_response):
    path = environ["PATH_INFO"]
    handler = ROUTES.get(path)
    if handler is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    return handler(environ, start_response)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!"]


def environ_dump(environ, start_response):
    body = json.dumps(
        {k: v for k, v in environ.items() if isinstance(v, (str, int, bool, tuple))},
        default=str,
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def echo(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("X-Length", str(len(body)))])
    return [body]


def echo_lines(environ, start_response):
    stream = environ["wsgi.input"]
    first = stream.readline()
    limited = stream.readline(3)
    rest = list(stream)
    body = json.dumps([first.decode(), limited.decode(), [line.decode() for line in rest]]).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def sha256(environ, start_response):
    digest = hashlib.sha256()
    stream = environ["wsgi.input"]
    while chunk := stream.read(65536):
        digest.update(chunk)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [digest.hexdigest().encode()]


def ignore_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ignored"]


def stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (f"part {i}\n".encode() for i in range(5))


def write_callable(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"and ", b"returned"]


class ClosingBody:
    """An iterable whose close() leaves a mark the test can see."""

    def __init__(self, marker):
        self.marker = marker

    def __iter__(self):
        yield b"closing body"

    def close(self):
        with open(self.marker, "w") as f:
            f.write("closed")


def closing(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ClosingBody(environ["HTTP_X_MARKER"])


def error(environ, start_response):
    raise RuntimeError("this app is broken on purpose")


def error_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise RuntimeError("broken mid-body on purpose")


def exc_info(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("replace the response")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def bad_header(environ, start_response):
    start_response("200 OK", [("X-Bad", "evil\r\nSet-Cookie: injected=1")])
    return [b"never"]


def file_download(environ, start_response):
    path = environ["HTTP_X_FILE"]
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)


def no_content(environ, start_response):
    start_response("204 No Content", [])
    return [b""]


def short_body(environ, start_response):
    start_response("200 OK", [("Content-Length", "100")])
    return [b"only ten b"]


def sleep(environ, start_response):
    time.sleep(float(environ.get("QUERY_STRING") or 1))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept"]


def pid(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def crash(environ, start_response):
    os._exit(1)


ROUTES = {
    "/": hello,
    "/hello": hello,
    "/environ": environ_dump,
    "/echo": echo,
    "/lines": echo_lines,
    "/sha256": sha256,
    "/ignore": ignore_body,
    "/stream": stream,
    "/write": write_callable,
    "/closing": closing,
    "/error": error,
    "/error-after-start": error_after_start,
    "/exc-info": exc_info,
    "/bad-header": bad_header,
    "/file": file_download,
    "/no-content": no_content,
    "/short": short_body,
    "/sleep": sleep,
    "/pid": pid,
    "/crash": crash,
}
