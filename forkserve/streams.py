"""wsgi.input: the request body as a file-like object, bounded to the body.

``InputStream`` pulls decoded body bytes from a ``receive(size)`` callable,
which returns b"" once the body is complete (whatever its framing), so the
app can never read past its own request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

CHUNK = 65536


class InputStream:
    __slots__ = ("_buffer", "_done", "_receive")  # one per request: cheaper to create

    def __init__(self, receive: Callable[[int], bytes]) -> None:
        self._receive = receive
        self._buffer = bytearray()
        self._done = False

    def _fill(self, size: int) -> bool:
        """Receive more bytes into the buffer; False at the end of the body."""
        if self._done:
            return False
        data = self._receive(size)
        if not data:
            self._done = True
            return False
        self._buffer += data
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._fill(-1):
                pass
            size = len(self._buffer)
        while len(self._buffer) < size and self._fill(size - len(self._buffer)):
            pass
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        limit = -1 if size is None else size
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                end += 1
                break
            if 0 <= limit <= len(self._buffer):
                end = limit
                break
            start = len(self._buffer)
            if not self._fill(CHUNK):
                end = len(self._buffer)
                break
        if 0 <= limit < end:
            end = limit
        data = bytes(self._buffer[:end])
        del self._buffer[:end]
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


class EmptyInput:
    """wsgi.input of a request without a body: always at its end, so one serves all."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


EMPTY_INPUT = EmptyInput()
