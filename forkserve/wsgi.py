"""One app call: start_response, exc_info, write(), close(), file_wrapper.

``Exchange`` holds the state of one response and writes it through a
``Transport`` (the connection's socket). The first body bytes leave in the
same send as the head, since separate writes stall on Nagle's algorithm and
delayed ACKs. A one-element body gets a ``Content-Length`` even when the app
gave none, so it can stay on a keep-alive connection.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, Protocol

from .http.errors import InvalidResponse, ProtocolUsageError
from .http.parser import Request
from .http.response import LAST_CHUNK, Framing, ResponseHead, build_head, chunk


class Transport(Protocol):
    @property
    def closing(self) -> bool: ...

    def send(self, data: bytes) -> None: ...

    def sendfile(self, file: IO[bytes], offset: int, count: int) -> int: ...


class FileWrapper:
    """wsgi.file_wrapper: a file the server may send with os.sendfile."""

    def __init__(self, filelike: IO[bytes], blksize: int = 65536) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        while data := self.filelike.read(self.blksize):
            yield data

    def regular_file_span(self) -> tuple[int, int] | None:
        """(offset, bytes left) when the file is a regular file on disk."""
        try:
            fd = self.filelike.fileno()
            offset = self.filelike.tell()
            size = os.fstat(fd).st_size
        except (AttributeError, OSError, ValueError):
            return None
        return offset, max(0, size - offset)


class Exchange:
    """The response to one request: what the app started and what was sent."""

    # One Exchange per request: slots make it cheaper to create and to use.
    __slots__ = (
        "head",
        "headers",
        "keep_alive",
        "overflowed",
        "request",
        "sent",
        "server_headers",
        "status",
        "transport",
    )

    def __init__(
        self, request: Request, transport: Transport, server_headers: bytes, keep_alive: bool
    ) -> None:
        self.request = request
        self.transport = transport
        self.server_headers = server_headers
        self.keep_alive = keep_alive
        self.status: str | None = None
        self.headers: list[tuple[str, str]] = []
        self.head: ResponseHead | None = None
        self.sent = 0  # body bytes sent
        self.overflowed = False  # the app wrote past its Content-Length

    # -- the WSGI callables ----------------------------------------------

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info:
            try:
                if self.head is not None:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status is not None:
            raise ProtocolUsageError("start_response() called twice without exc_info")
        self.status, self.headers = status, list(headers)
        return self.write

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise InvalidResponse(f"the app wrote {type(data).__name__}, not bytes")
        if self.head is None:
            self._send_head(None, data)
        else:
            self._send_body(data)

    # -- driving the app -------------------------------------------------

    def run(self, app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> None:
        """Call the app and send its whole response; the iterable is always closed."""
        result = app(environ, self.start_response)
        try:
            if isinstance(result, FileWrapper) and self._send_file(result):
                return
            if isinstance(result, (list, tuple)) and len(result) == 1 and self.head is None:
                self._send_head(len(result[0]), result[0])
            else:
                for data in result:
                    if data:
                        self.write(data)
            self.finish()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def finish(self) -> None:
        if self.head is None:
            self._send_head(0, b"")
        head = self.head
        assert head is not None
        if head.framing == Framing.CHUNKED:
            self.transport.send(LAST_CHUNK)
        elif head.framing == Framing.LENGTH and self.sent < (head.content_length or 0):
            # Fewer bytes than promised: the client would wait for the rest, so
            # the connection can only end here.
            logging.getLogger("forkserve.error").warning(
                "%s %s: app sent %d of %d body bytes; closing the connection",
                self.request.method,
                self.request.target,
                self.sent,
                head.content_length,
            )
            self.keep_alive = False

    # -- sending ---------------------------------------------------------

    def _build_head(self, body_length: int | None) -> ResponseHead:
        if self.status is None:
            raise ProtocolUsageError("the app returned a body before calling start_response()")
        request = self.request
        head = build_head(
            self.status,
            self.headers,
            version=request.version,
            method=request.method,
            keep_alive=self.keep_alive and not self.transport.closing,
            body_length=body_length,
            extra=self.server_headers,
        )
        self.keep_alive = head.keep_alive
        return head

    def _send_head(self, body_length: int | None, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise InvalidResponse(f"the app returned {type(data).__name__}, not bytes")
        self.head = self._build_head(body_length)
        self.transport.send(self.head.data + self._frame(data))

    def _send_body(self, data: bytes) -> None:
        if data:
            self.transport.send(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        head = self.head
        assert head is not None
        if not data or head.framing == Framing.NONE:
            return b""
        if head.framing == Framing.LENGTH:
            left = (head.content_length or 0) - self.sent
            if len(data) > left:
                if not self.overflowed:
                    # Once per response: an app looping past its length would flood the log.
                    logging.getLogger("forkserve.error").warning(
                        "%s %s: app sent more than its Content-Length (%d); extra bytes dropped",
                        self.request.method,
                        self.request.target,
                        head.content_length,
                    )
                self.overflowed = True
                data = data[:left]
        self.sent += len(data)
        return chunk(data) if head.framing == Framing.CHUNKED else data

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """Send a regular file with os.sendfile; False to fall back to iteration."""
        span = wrapper.regular_file_span()
        if span is None or self.head is not None:
            return False
        offset, size = span
        self.head = self._build_head(size)
        self.transport.send(self.head.data)
        if self.head.framing == Framing.LENGTH:  # else HEAD, 204 or 304: no body
            count = min(size, self.head.content_length or 0)
            self.sent = self.transport.sendfile(wrapper.filelike, offset, count)
        self.finish()
        return True
