"""The error log and the access log, both on the standard ``logging`` module.

The access log uses Gunicorn's atoms (``%(h)s``, ``%(r)s``, ``%(s)s`` ...), so
a Gunicorn ``access_log_format`` carries over; the default is Apache's
combined format plus the request time in microseconds (``%(D)s``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, TextIO

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'


def open_stream(path: str, default: TextIO) -> TextIO:
    if path == "-":
        return default
    return open(path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")


def configure(loglevel: str, errorlog: str, accesslog: str) -> tuple[logging.Logger, logging.Logger | None]:
    """Set up the 'forkserve.error' and 'forkserve.access' loggers; returns both."""
    error = logging.getLogger("forkserve.error")
    error.handlers.clear()
    handler = logging.StreamHandler(open_stream(errorlog, sys.stderr))
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    error.addHandler(handler)
    error.setLevel(loglevel.upper())
    error.propagate = False
    if not accesslog:
        return error, None
    access = logging.getLogger("forkserve.access")
    access.handlers.clear()
    access_handler = logging.StreamHandler(open_stream(accesslog, sys.stdout))
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(access_handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    return error, access


class Atoms(dict[str, Any]):
    """Access-log atoms; ``%({name}i)s`` / ``%({name}o)s`` look headers up lazily."""

    def __init__(
        self, base: dict[str, Any], environ: dict[str, Any], out_headers: list[tuple[str, str]]
    ) -> None:
        super().__init__(base)
        self.environ = environ
        self.out_headers = out_headers

    def __missing__(self, key: str) -> str:
        if key.startswith("{") and key[-2:] in ("}i", "}o"):
            name = key[1:-2].lower()
            if key[-1] == "i":
                value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
                return str(value) if value is not None else "-"
            return next((v for k, v in self.out_headers if k.lower() == name), "-")
        return "-"


def access_line(
    fmt: str,
    environ: dict[str, Any],
    status: int,
    sent: int,
    duration: float,
    out_headers: list[tuple[str, str]],
) -> str:
    """One access-log line for a finished request."""
    query = environ.get("QUERY_STRING")
    base = {
        "h": environ.get("REMOTE_ADDR") or "-",
        "l": "-",
        "u": "-",
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
        "r": f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')} {environ['SERVER_PROTOCOL']}",
        "m": environ["REQUEST_METHOD"],
        "U": environ.get("PATH_INFO", ""),
        "q": query or "",
        "H": environ["SERVER_PROTOCOL"],
        "s": status,
        "b": str(sent) if sent else "-",
        "B": sent,
        "f": environ.get("HTTP_REFERER", "-"),
        "a": environ.get("HTTP_USER_AGENT", "-"),
        "T": int(duration),
        "D": int(duration * 1_000_000),
        "M": int(duration * 1000),
        "L": f"{duration:.6f}",
        "p": f"<{os.getpid()}>",
    }
    return fmt % Atoms(base, environ, out_headers)
