"""WSGI app serving a 1 MiB file through ``wsgi.file_wrapper``.

Servers may turn the file wrapper into sendfile(); this app shows whether they
do. The file lives in FORKSERVE_BENCH_FILE (set by run.py) or in the system
temp dir, and is created on first import if missing.
"""

import os
import tempfile
from collections.abc import Callable, Iterable

SIZE = 1024 * 1024
PATH = os.environ.get("FORKSERVE_BENCH_FILE") or os.path.join(
    tempfile.gettempdir(), "forkserve-bench-1MiB.bin"
)


def _ensure_file(path: str) -> None:
    if os.path.exists(path) and os.path.getsize(path) == SIZE:
        return
    # Write under a unique name then rename, so workers importing at the same
    # moment never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(SIZE))
    os.replace(tmp, path)


_ensure_file(PATH)


def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    f = open(PATH, "rb")  # noqa: SIM115 - the server closes it via the wrapper
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(f, 64 * 1024)
    return _chunks(f)


def _chunks(f) -> Iterable[bytes]:
    with f:
        while chunk := f.read(64 * 1024):
            yield chunk
