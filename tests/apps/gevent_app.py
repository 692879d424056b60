"""An app for the gevent worker tests: blocking I/O, a concurrency gauge, a CPU hog.

Routes:
- ``/sleep?S``: ``time.sleep(S)`` (cooperative once gevent patched it);
- ``/fetch?PORT``: sleeps 0.5 s, then fetches http://127.0.0.1:PORT/ with
  urllib and answers that body;
- ``/peak``: the most requests this worker has had in its app at once;
- ``/spin?S``: a CPU-bound loop that never yields to the hub;
- ``/patched``: whether this worker's ``socket`` and ``time`` are gevent's;
- ``/gevent-loaded``: whether gevent is imported in this process at all;
- ``/length``: how many body bytes it read;
- anything else: the worker's pid.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request

IN_APP = 0
PEAK = 0


def app(environ, start_response):
    global IN_APP, PEAK
    IN_APP += 1
    PEAK = max(PEAK, IN_APP)
    try:
        if environ["PATH_INFO"] == "/length":
            body = str(len(environ["wsgi.input"].read())).encode()
        else:
            body = route(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    finally:
        IN_APP -= 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def route(path: str, query: str) -> bytes:
    if path == "/sleep":
        time.sleep(float(query or 1))
        return b"slept"
    if path == "/fetch":
        time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{int(query)}/", timeout=30) as response:
            return response.read()
    if path == "/peak":
        return str(PEAK).encode()
    if path == "/spin":
        deadline = time.monotonic() + float(query or 60)
        while time.monotonic() < deadline:
            pass
        return b"spun"
    if path == "/patched":
        from gevent import monkey

        patched = monkey.is_module_patched("socket") and monkey.is_module_patched("time")
        return b"yes" if patched else b"no"
    if path == "/gevent-loaded":
        return b"yes" if "gevent" in sys.modules else b"no"
    return str(os.getpid()).encode()
