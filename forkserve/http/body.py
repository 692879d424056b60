"""Request body readers: how many bytes belong to this request, and no more.

Each reader takes bytes out of the parser's buffer and leaves whatever
follows the body there, so a pipelined request is never built from body
bytes. ``read()`` returns None when it needs more input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from . import grammar
from .errors import BadRequest, HeaderFieldsTooLarge, PayloadTooLarge

if TYPE_CHECKING:
    from .parser import Limits


class Body(Protocol):
    complete: bool

    def read(self, buffer: bytearray, size: int) -> bytes | None: ...


class EmptyBody:
    complete = True

    def read(self, buffer: bytearray, size: int) -> bytes | None:
        return b""


class LengthBody:
    """A body framed by Content-Length."""

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.complete = length == 0

    def read(self, buffer: bytearray, size: int) -> bytes | None:
        if self.complete:
            return b""
        if not buffer:
            return None
        n = self.remaining if size < 0 else min(size, self.remaining)
        data = bytes(buffer[:n])
        del buffer[: len(data)]
        self.remaining -= len(data)
        self.complete = self.remaining == 0
        return data


class ChunkedBody:
    """A chunked body (RFC 9112 §7.1), decoded; trailers are checked and dropped.

    Trailers never reach the app's environ: a trailer field could otherwise
    pose as a header that a proxy in front already vetted.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.complete = False
        self.chunk_left = 0  # data bytes left in the current chunk
        self.need_crlf = False  # the CRLF that ends a chunk's data
        self.in_trailers = False
        self.total = 0

    def read(self, buffer: bytearray, size: int) -> bytes | None:
        out = []
        want = size
        while not self.complete and want != 0:
            if self.chunk_left:
                if not buffer:
                    break
                n = self.chunk_left if want < 0 else min(want, self.chunk_left)
                piece = bytes(buffer[:n])
                del buffer[: len(piece)]
                self.chunk_left -= len(piece)
                want = want - len(piece) if want > 0 else want
                out.append(piece)
                self.need_crlf = self.chunk_left == 0
            elif self.need_crlf:
                if len(buffer) < 2:
                    break
                if buffer[:2] != b"\r\n":
                    raise BadRequest("chunk data not followed by CRLF")
                del buffer[:2]
                self.need_crlf = False
            elif self.in_trailers:
                if not self._read_trailers(buffer):
                    break
            elif not self._read_size_line(buffer):
                break
        if out:
            return b"".join(out)
        return b"" if self.complete else None

    def _read_size_line(self, buffer: bytearray) -> bool:
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > self.limits.chunk_ext:
                raise BadRequest("chunk size line too long")
            if b"\n" in buffer:
                raise BadRequest("bare LF in chunk size line")
            return False
        if end > self.limits.chunk_ext:
            raise BadRequest("chunk size line too long")
        match = grammar.CHUNK_SIZE_LINE.fullmatch(bytes(buffer[:end]))
        if match is None:
            raise BadRequest("invalid chunk size line")
        del buffer[: end + 2]
        size = int(match.group(1), 16)
        self.total += size
        if self.limits.max_body and self.total > self.limits.max_body:
            raise PayloadTooLarge("chunked body larger than the limit")
        if size == 0:
            self.in_trailers = True
        self.chunk_left = size
        return True

    def _read_trailers(self, buffer: bytearray) -> bool:
        if buffer[:2] == b"\r\n":
            del buffer[:2]
            self.complete = True
            return True
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > self.limits.trailer_size:
                raise HeaderFieldsTooLarge("trailer section too large")
            if b"\n\n" in buffer or b"\n\r\n" in buffer:
                raise BadRequest("bare LF in trailers")
            return False
        if end > self.limits.trailer_size:
            raise HeaderFieldsTooLarge("trailer section too large")
        for line in bytes(buffer[:end]).split(b"\r\n"):
            if grammar.HEADER_LINE.fullmatch(line) is None:
                raise BadRequest("invalid trailer field")
        del buffer[: end + 4]
        self.complete = True
        return True
