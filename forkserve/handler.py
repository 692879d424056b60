"""One request served: its environ, the hooks, the app call, its error status, the access log.

``serve()`` runs once a connection has a request ready. It builds the
environ (believing a trusted proxy's headers), runs the hooks around the
WSGI call (``wsgi.Exchange``), turns what the app raised into a status for
the client and a line for the error log, and records the request
(``record()``: the access log and StatsD). It never touches the
connection's phases: it says what the connection should do next (``After``).

With --health-path, a GET or HEAD of exactly that path (the query string
aside) is answered first, by ``answer_health()``: no environ, no hooks, no
app, and none of the request's bookkeeping. It is not counted towards
--max-requests, not in the metrics or StatsD, and not in the access log:
a load balancer or Kubernetes probes every few seconds, and those lines
would bury the requests people read the log for.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import TYPE_CHECKING, Any

from . import logs
from .environ import UNDERSCORED, build_environ
from .http.errors import BadRequest
from .http.parser import Request
from .http.response import simple_response
from .proxy import apply_forwarded, apply_forwarder_headers
from .service import Health, Service
from .streams import EMPTY_INPUT, InputStream
from .transport import BodyTooSlow, ClientGone, Transport
from .wsgi import Exchange

if TYPE_CHECKING:
    from .connection import Connection


class RequestAborted(BaseException):
    """Raised in the worker when the master aborts a request past --timeout.

    A BaseException so that an app's ``except Exception`` cannot swallow it.
    """


class After(Enum):
    """What the connection does once a request is served."""

    NEXT = "next"  # the response may keep the connection: on to the next request
    CLOSE = "close"  # the response ends the connection
    LINGER = "linger"  # answered while the client still sends: shut our side, discard its input
    GONE = "gone"  # the client is gone: close now
    REFUSE = (
        "refuse"  # the body broke its framing (``Transport.body_error``): answer if still possible, close
    )

    # Members are singletons: hash by identity, as Phase does.
    __hash__ = object.__hash__


def serve(connection: Connection, request: Request) -> After:
    """Run the app for one request and send its response."""
    service = connection.service
    health = service.health
    if health is not None and request.path == health.path and request.method in HEALTH_METHODS:
        return answer_health(connection, request, health)
    host = connection.host
    started = host.request_started(request, connection.peer)
    metrics = service.metrics
    logged = service.access_log is not None or service.statsd is not None
    keep_alive = request.keep_alive and service.keepalive > 0 and not host.closing
    transport = connection.transport
    transport.start(request.expect_continue)
    exchange = connection.exchange = Exchange(request, transport, service.server_headers(), keep_alive)
    has_body = request.chunked or request.content_length
    body = InputStream(transport.receive_body) if has_body else EMPTY_INPUT
    environ = build_environ(connection.base_environ, request, body)
    underscored = environ.pop(UNDERSCORED, None)
    if underscored is not None:
        judge_underscored(service, connection.trusted, environ, underscored)
    if connection.trusted:
        apply_forwarded(environ, service.proxy)  # type: ignore[arg-type]
    if service.pre_request is not None:
        service.pre_request(request)
    if service.busy is not None:
        service.busy(True)
    if metrics is not None and metrics.started is not None:
        metrics.started[0] += 1  # --threads, gevent: in flight is started - finished (inline: no call)
    answered = 0  # the status of an error answer sent here, when the app sent no head
    try:
        exchange.run(service.app, environ)
    except BodyTooSlow as exc:
        service.log.info("%s: %s %s: %s", connection.peer, request.method, request.target, exc)
        if exchange.head is None:
            answered = send_error(
                transport, service, 408, "Request Timeout", b"Request Timeout: the body arrived too slowly\n"
            )
        return After.LINGER  # the client is still sending: a close now would reset the answer
    except ClientGone as exc:
        service.log.debug(
            "%s: client gone during %s %s: %s", connection.peer, request.method, request.target, exc
        )
        return After.GONE
    except RequestAborted:
        log_aborted(service, connection.peer, request)
        if exchange.head is None:
            answered = send_error(transport, service, 504, "Gateway Timeout", b"request timed out\n")
        raise
    except Exception:
        if transport.body_error is not None:
            return After.REFUSE
        service.log.exception("Error handling %s %s from %s", request.method, request.target, connection.peer)
        if exchange.head is None:
            answered = internal_error(transport, service)
        return After.CLOSE
    except (SystemExit, KeyboardInterrupt) as exc:
        # The app tried to end the process: it costs this worker, never the server.
        # Answer, then leave gracefully; the master starts a replacement.
        service.log.error(
            "%r from the app in %s %s from %s; this worker will be replaced",
            exc,
            request.method,
            request.target,
            connection.peer,
        )
        if exchange.head is None:
            answered = internal_error(transport, service)
        host.closing = True
        return After.CLOSE
    finally:
        host.request_ended()
        ended = service.heartbeat()  # proof of life after each request, and the clock read that times it
        if service.busy is not None:
            service.busy(False)
        if logged or metrics is not None:  # every outcome, errors too (as Gunicorn logs and counts its 500s)
            elapsed = ended - started
            status = exchange.head.status if exchange.head else answered
            if metrics is not None:
                metrics.request_done(request.method, status, elapsed)
            if logged and status:  # no line for a client that left before any answer
                record(service, environ, exchange, status, elapsed)
    if service.post_request is not None:
        service.post_request(request, environ, exchange)
    if transport.body_error is not None:  # the app swallowed it: the framing is lost all the same
        return After.REFUSE
    return After.NEXT if exchange.keep_alive else After.CLOSE


HEALTH_METHODS = ("GET", "HEAD")


def answer_health(connection: Connection, request: Request, health: Health) -> After:
    """--health-path: 200 while serving; 503 and close once the master has begun a graceful stop."""
    service, transport = connection.service, connection.transport
    transport.start(False)
    if health.stopping():
        status, body, keep = b"503 Service Unavailable", b"stopping\n", False
    else:
        status, body = b"200 OK", b"OK\n"
        keep = request.keep_alive and service.keepalive > 0 and not connection.host.closing
    head = b"HTTP/1.1 %s\r\n%sContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n" % (
        status,
        service.server_headers(),
        len(body),
        b"keep-alive" if keep else b"close",
    )
    try:
        transport.send(head if request.method == "HEAD" else head + body)
    except ClientGone:
        return After.GONE
    return After.NEXT if keep else After.CLOSE


def judge_underscored(
    service: Service, trusted: bool, environ: dict[str, Any], headers: list[tuple[str, str]]
) -> None:
    """Header names with "_": refused (header_map), or a trusted proxy's forwarder headers."""
    if service.refuse_underscored:
        raise BadRequest(f"header name {headers[0][0]!r} contains '_'")
    if trusted:
        apply_forwarder_headers(environ, headers, service.proxy)  # type: ignore[arg-type]


def log_aborted(service: Service, peer: str, request: Request) -> None:
    service.log.error("%s: %s %s aborted past the timeout", peer, request.method, request.target)


def record(
    service: Service, environ: dict[str, Any], exchange: Exchange, status: int, duration: float
) -> None:
    """The access log line and the StatsD request metrics, whichever are on."""
    if service.access_log is not None:
        line = logs.access_line(
            service.access_format, environ, status, exchange.sent, duration, exchange.headers
        )
        service.access_log.info(line)
    if service.statsd is not None:
        service.statsd.request(status, duration)


def internal_error(transport: Transport, service: Service) -> int:
    return send_error(transport, service, 500, "Internal Server Error", b"Internal Server Error\n")


def send_error(transport: Transport, service: Service, status: int, phrase: str, body: bytes) -> int:
    """Answer with an error status, if the client still listens; the status, or 0 if it did not."""
    with contextlib.suppress(ClientGone, OSError):
        transport.send(simple_response(status, phrase, body, service.server_headers()))
        return status
    return 0
