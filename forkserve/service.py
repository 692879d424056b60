"""What a worker's connections know of it: ``Service``, fixed at start-up, and ``Host``, live.

``Service`` is built once per worker by ``Worker.make_service`` (the profiler and the tests
build it there too), then frozen: nothing here changes while the worker
runs. What does change belongs to its owner: the worker's request count
and closing flag to the ``Worker``, each connection's state to its
``Connection`` and ``Transport``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import logs
from .http.parser import Limits, Request
from .proxy import ProxyTrust
from .statsd import StatsD

if TYPE_CHECKING:
    from .connection import Connection
    from .metrics import RequestMetrics
    from .wsgi import Exchange


@dataclass(frozen=True, slots=True)
class Health:
    """--health-path: the path answered without the app, and whether the master is stopping."""

    path: str
    stopping: Callable[[], bool]  # the pool's flag in the heartbeat region (heartbeat.py)


@dataclass(frozen=True, slots=True)
class Service:
    """A worker's configuration as its connections read it."""

    app: Callable[..., Iterable[bytes]]
    limits: Limits
    keepalive: float
    header_timeout: float
    io_timeout: float
    server_headers: Callable[[], bytes]
    heartbeat: Callable[[], float]  # after each request, and while waiting on a client; returns the time
    log: logging.Logger
    access_log: logging.Logger | None
    access_format: str = logs.ACCESS_FORMAT
    max_requests: int = 0  # 0: no limit
    body_prebuffer: int = 65536  # body bytes collected before the app runs
    body_min_rate: int = 500  # bytes/s a body the app reads must keep up, after a grace (0: off)
    proxy: ProxyTrust | None = None  # whose X-Forwarded-* / Forwarded headers to believe
    proxy_protocol: ProxyTrust | None = None  # who may send a PROXY protocol header (None: off)
    proxy_versions: str = "auto"  # which PROXY protocol versions: auto (both), v1 or v2
    refuse_underscored: bool = False  # header_map "refuse": 400 for header names with "_"
    sendfile: bool = True  # False (--no-sendfile): files are read and sent, never os.sendfile'd
    statsd: StatsD | None = None  # --statsd-host
    metrics: RequestMetrics | None = None  # --metrics-bind: counts into the heartbeat slot
    busy: Callable[[bool], None] | None = None  # --workers-max: says when a request is running
    dispatch: Callable[[Connection, Request], None] | None = None  # --threads: run in a pool
    health: Health | None = None  # --health-path: answered in handler.serve(), never by the app
    pre_request: Callable[[Request], None] | None = None
    post_request: Callable[[Request, dict[str, Any], Exchange], None] | None = None


class Host(Protocol):
    """The worker, as the connections it serves see it: the part that changes."""

    closing: bool  # it is leaving: the next response head says Connection: close

    def request_started(self, request: Request, peer: str) -> float:
        """Count a request (the last one before max_requests sets ``closing``), show it running.

        Returns when it started (``time.monotonic()``), the one clock read a
        request's duration is measured from.
        """

    def request_ended(self) -> None:
        """The request that ``request_started`` showed is over."""
