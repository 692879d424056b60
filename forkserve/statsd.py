"""StatsD, as Gunicorn sends it: the same settings, metric names and wire format.

``statsd_host`` (``HOST:PORT``, default port 8125, or ``unix:PATH``) turns
it on. Each worker sends, per request, ``gunicorn.requests`` and
``gunicorn.request.status.<code>`` (counters) and
``gunicorn.request.duration`` (a timer in milliseconds); the master sends
``gunicorn.workers`` (a gauge) and, with ``enable_backlog_metric``,
``gunicorn.backlog``; every process counts its warnings and errors as
``gunicorn.log.<level>``. Names keep Gunicorn's ``gunicorn.`` so existing
dashboards carry over. ``statsd_prefix`` goes in front of every name and
``dogstatsd_tags`` are appended as DogStatsD tags. Datagrams are sent
without blocking and a lost one is never an error: metrics must not slow
or break serving.
"""

from __future__ import annotations

import contextlib
import logging
import socket


class StatsD:
    """A connected datagram socket and the metric format."""

    def __init__(self, host: str, prefix: str = "", tags: str = "") -> None:
        self.prefix = prefix.rstrip(".") + "." if prefix else ""
        self.tags = f"|#{tags}".encode() if tags else b""
        family, address = parse_address(host)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        # Connected once, so a missing receiver costs nothing but a lost datagram.
        with contextlib.suppress(OSError):
            self.sock.connect(address)

    def send(self, name: str, value: float | int, kind: str) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(f"{self.prefix}{name}:{value}|{kind}".encode() + self.tags)

    def request(self, status: int, seconds: float) -> None:
        """One served request (in a worker)."""
        self.send("gunicorn.request.duration", round(seconds * 1000, 3), "ms")
        self.send("gunicorn.requests", 1, "c|@1.0")
        self.send(f"gunicorn.request.status.{status}", 1, "c|@1.0")

    def count_log_lines(self, logger: logging.Logger) -> None:
        """Count this logger's warnings and errors as gunicorn.log.<level>."""
        logger.addFilter(LogCounter(self))


class LogCounter(logging.Filter):
    """A filter that counts the records it sees and lets every one through."""

    def __init__(self, statsd: StatsD) -> None:
        super().__init__()
        self.statsd = statsd

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            level = "exception" if record.exc_info else record.levelname.lower()
            self.statsd.send(f"gunicorn.log.{level}", 1, "c|@1.0")
        return True


def parse_address(host: str) -> tuple[socket.AddressFamily, str | tuple[str, int]]:
    """'HOST:PORT', 'HOST' (port 8125), '[IPV6]:PORT' or 'unix:PATH' / 'unix://PATH'."""
    if host.startswith("unix:"):
        return socket.AF_UNIX, host[5:].removeprefix("//")
    if host.startswith("["):
        name, _, port = host[1:].partition("]")
        return socket.AF_INET6, (name, int(port.lstrip(":") or 8125))
    name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    return socket.AF_INET, (name or "localhost", int(port or 8125))
