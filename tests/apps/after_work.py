"""An app for the warm-worker tests: answers its worker's pid, then works on in the
response's close() (as Django's request_finished handlers do), so the client may
connect again before the worker waits for connections: ?SECONDS, 0.0005 by default."""

import os
import time


class Answer:
    def __init__(self, body: bytes, seconds: float) -> None:
        self.body = body
        self.seconds = seconds

    def __iter__(self):
        yield self.body

    def close(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            pass


def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return Answer(body, float(environ.get("QUERY_STRING") or 0.0005))
