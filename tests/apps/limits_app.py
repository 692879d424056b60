"""App for tests/test_worker_limits.py: a leak of 2 MiB per request, and the worker's pid."""

import os

HOARD = []
LEAK = 2 * 1024 * 1024


def app(environ, start_response):
    if environ["PATH_INFO"] == "/leak":
        HOARD.append(bytearray(os.urandom(16)) * (LEAK // 16))  # private, touched pages
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
