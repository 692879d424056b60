"""The error log and the access log, both on the standard ``logging`` module.

``forkserve.error`` and ``forkserve.access`` are plain loggers, so
``logconfig_dict`` (dictConfig) or ``--log-config`` (fileConfig) can take
over completely. The access log uses Gunicorn's atoms (``%(h)s``,
``%(r)s``, ``%(s)s`` ...), so a Gunicorn ``access_log_format`` carries
over; the default is Apache's combined format plus the request time in
microseconds. ``--access-log-format json`` writes one JSON object a line.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S %z"
ACCESS_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s'
JSON_ATOMS = ("h", "t", "m", "U", "q", "H", "s", "B", "f", "a", "D")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (latin-1 decoded obs-text)


def error_logger() -> logging.Logger:
    return logging.getLogger("forkserve.error")


def access_logger() -> logging.Logger:
    return logging.getLogger("forkserve.access")


def _handler(path: str, default: Any) -> logging.Handler:
    # FileHandler reopens its file after close(), which is what SIGUSR1 relies on.
    handler: logging.Handler
    if path == "-":
        handler = logging.StreamHandler(default)
    else:
        handler = logging.FileHandler(path, encoding="utf-8", errors="backslashreplace")
    return handler


def configure(config: Settings) -> None:
    """Set up both loggers from the settings (or hand over to the user's config)."""
    if config.logconfig_dict:
        logging.config.dictConfig(config.logconfig_dict)
        return
    if config.logconfig:
        logging.config.fileConfig(config.logconfig, disable_existing_loggers=False)
        return
    error = error_logger()
    error.handlers.clear()
    handler = _handler(config.errorlog, sys.stderr)
    handler.setFormatter(logging.Formatter(ERROR_FORMAT, DATE_FORMAT))
    error.addHandler(handler)
    error.setLevel(config.loglevel.upper())
    error.propagate = False
    access = access_logger()
    access.handlers.clear()
    access.propagate = False
    if config.accesslog:
        access_handler = _handler(config.accesslog, sys.stdout)
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(access_handler)
        access.setLevel(logging.INFO)
    else:
        access.setLevel(logging.CRITICAL + 1)


def reopen_files() -> None:
    """Close file handlers so the next record reopens them (after logrotate)."""
    for logger in (error_logger(), access_logger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.close()


def clean(value: str) -> str:
    """Escape control characters, so a request cannot forge log lines."""
    return CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", value)


class Atoms(dict[str, Any]):
    """Access-log atoms; ``%({name}i)s`` / ``%({name}o)s`` look headers up lazily."""

    def __init__(
        self, base: dict[str, Any], environ: dict[str, Any], out_headers: list[tuple[str, str]]
    ) -> None:
        super().__init__(base)
        self.environ = environ
        self.out_headers = out_headers

    def __missing__(self, key: str) -> str:
        if key.startswith("{") and key[-2:] in ("}i", "}o", "}e"):
            name = key[1:-2]
            kind = key[-1]
            if kind == "i":
                value = self.environ.get("HTTP_" + name.upper().replace("-", "_"))
            elif kind == "e":
                value = self.environ.get(name)
            else:
                value = next((v for k, v in self.out_headers if k.lower() == name.lower()), None)
            return clean(str(value)) if value is not None else "-"
        return "-"


def atoms(
    environ: dict[str, Any], status: int, sent: int, duration: float, out_headers: list[tuple[str, str]]
) -> Atoms:
    query = environ.get("QUERY_STRING") or ""
    base = {
        "h": environ.get("REMOTE_ADDR") or "-",
        "l": "-",
        "u": "-",
        "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
        "r": clean(f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')} {environ['SERVER_PROTOCOL']}"),
        "m": environ["REQUEST_METHOD"],
        "U": clean(environ.get("PATH_INFO", "")),
        "q": clean(query),
        "H": environ["SERVER_PROTOCOL"],
        "s": status,
        "b": str(sent) if sent else "-",
        "B": sent,
        "f": clean(environ.get("HTTP_REFERER", "-")),
        "a": clean(environ.get("HTTP_USER_AGENT", "-")),
        "T": int(duration),
        "D": int(duration * 1_000_000),
        "M": int(duration * 1000),
        "L": f"{duration:.6f}",
        "p": f"<{os.getpid()}>",
    }
    return Atoms(base, environ, out_headers)


def access_line(
    fmt: str,
    environ: dict[str, Any],
    status: int,
    sent: int,
    duration: float,
    out_headers: list[tuple[str, str]],
) -> str:
    """One access-log line for a finished request."""
    values = atoms(environ, status, sent, duration, out_headers)
    if fmt == "json":
        return json.dumps({key: values[key] for key in JSON_ATOMS})
    return (fmt or ACCESS_FORMAT) % values
