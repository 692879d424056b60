"""wsgi.input as a file object, fed in awkward pieces (no sockets needed)."""

from __future__ import annotations

import pytest

from forkserve.streams import InputStream

BODY = b"first line\nsecond\n\nlast line without newline"


def stream(body: bytes, piece: int) -> InputStream:
    """An InputStream whose source hands out at most ``piece`` bytes per call."""
    chunks = [body[i : i + piece] for i in range(0, len(body), piece)]

    def receive(size: int) -> bytes:
        if not chunks:
            return b""
        data = chunks.pop(0)
        if 0 <= size < len(data):
            chunks.insert(0, data[size:])
            data = data[:size]
        return data

    return InputStream(receive)


@pytest.mark.parametrize("piece", [1, 3, 7, 64])
def test_read_readline_readlines_and_iteration(piece):
    assert stream(BODY, piece).read() == BODY
    s = stream(BODY, piece)
    assert s.read(5) == b"first"
    assert s.readline() == b" line\n"
    assert s.readline(3) == b"sec"
    assert s.readline() == b"ond\n"
    assert s.readlines() == [b"\n", b"last line without newline"]
    assert s.read() == b"" and s.readline() == b""
    assert list(stream(BODY, piece)) == BODY.splitlines(keepends=True)
    assert stream(BODY, piece).readlines(12) == [b"first line\n", b"second\n"]  # hint: stop once past it


def test_read_never_goes_past_the_body():
    s = stream(b"abc", 2)
    assert s.read(10) == b"abc"
    assert s.read(10) == b""
    assert s.read(None) == b""
