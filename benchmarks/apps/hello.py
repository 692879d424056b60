"""Hello-world WSGI app: the smallest useful request, a fixed 13-byte body.

Measures the server's own per-request overhead: parsing, dispatch, writing.
"""

from collections.abc import Callable, Iterable

BODY = b"Hello, world!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("200 OK", list(HEADERS))
    return [BODY]
