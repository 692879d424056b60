"""WSGI app that reads the whole request body and answers its SHA-256.

Driven with 1 MiB POST bodies, it measures how a server moves request bodies
into the app (buffering, chunk sizes, copies).
"""

import hashlib
from collections.abc import Callable, Iterable


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    digest = hashlib.sha256()
    stream = environ["wsgi.input"]
    remaining = int(environ.get("CONTENT_LENGTH") or 0)
    # Bounded by Content-Length: never read past the body or loop forever.
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    body = digest.hexdigest().encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
