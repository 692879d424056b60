"""Apps for the supervision tests: slow requests, memory growth, version marks."""

import os
import time

HOARD = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(float(environ.get("QUERY_STRING") or 1))
        body = b"slept"
    elif path == "/grow":
        HOARD.append(bytearray(8 * 1024 * 1024))  # 8 MiB of private pages per call
        body = str(len(HOARD)).encode()
    elif path == "/spin":
        deadline = time.monotonic() + float(environ.get("QUERY_STRING") or 60)
        while time.monotonic() < deadline:
            pass
        body = b"spun"
    else:
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
