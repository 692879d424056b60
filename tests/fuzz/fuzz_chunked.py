"""Fuzz target: the chunked body decoder (``ChunkedBody``) on arbitrary bytes in arbitrary splits.

Invariants (a violation is a crash):
* only ``HTTPError`` subclasses are raised;
* the outcome (decoded bytes, whether the body ended, the bytes left after
  it for the next request, or the error status) is the same whether the
  bytes come all at once or in the input's pieces, whatever the read size;
* a body the decoder accepts decodes the same with a plain reference
  decoder, and ends with CRLF (no bytes of a pipelined request are eaten);
* while it waits, the decoder holds no more than a size line or the trailers' limit.

Options byte as in ``fuzz_parser``: bit 0 small limits, bits 1-6 read size,
bit 7 byte by byte. Run: ``python tests/fuzz/run.py chunked``.
"""

from __future__ import annotations

from harness import fuzz_main, instrumented, read_input, same_whole_and_in_pieces

with instrumented(__name__ == "__main__"):
    from forkserve.http.body import MAX_CHUNK_SIZE, ChunkedBody
    from forkserve.http.errors import HTTPError
    from forkserve.http.parser import Limits

SMALL = Limits(max_body=50, chunk_ext=12, trailer_size=30)
DEFAULT = Limits()
# (decoded bytes, then ("rest", the bytes after the body) / ("open",) / ("error", status))
Outcome = tuple[bytes, object]


def decode(pieces: list[bytes], limits: Limits, size: int = -1) -> Outcome:
    body = ChunkedBody(limits)
    buffer = bytearray()
    out = bytearray()
    bound = max(limits.chunk_ext + 2, limits.trailer_size)
    for piece in pieces:
        buffer += piece
        if body.complete:
            continue
        try:
            while not body.complete:
                data = body.read(buffer, size)
                if data is None:
                    break
                if size > 0 and len(data) > size:
                    raise AssertionError(f"read({size}) returned {len(data)} bytes")
                out += data
        except HTTPError as error:
            # Bytes handed out before the fault depend on the read calls; only the status counts.
            return b"", ("error", error.status)
        if not body.complete and len(buffer) > bound:
            raise AssertionError(f"decoder holds {len(buffer)} bytes while waiting")
    if body.complete:
        return bytes(out), ("rest", bytes(buffer))
    return bytes(out), ("open",)


def reference(data: bytes) -> bytes:
    """A plain decoder for a body the real one accepted: sizes, data, CRLFs, trailers."""
    out = bytearray()
    at = 0
    while True:
        end = data.index(b"\r\n", at)
        digits = data[at:end].split(b";", 1)[0].strip(b" \t")
        size = int(digits, 16)
        assert all(c in b"0123456789abcdefABCDEF" for c in digits) and size <= MAX_CHUNK_SIZE
        at = end + 2
        if size == 0:
            break
        out += data[at : at + size]
        assert data[at + size : at + size + 2] == b"\r\n", "chunk data not followed by CRLF"
        at += size + 2
    while not data.startswith(b"\r\n", at):  # trailer lines
        at = data.index(b"\r\n", at) + 2
    assert at + 2 <= len(data)
    return bytes(out)


def check(data: bytes) -> None:
    fuzz = read_input(data)
    decoded, end = same_whole_and_in_pieces(fuzz, decode, SMALL, DEFAULT)
    if end[0] == "rest":
        rest = end[1]
        assert isinstance(rest, bytes)
        consumed = fuzz.payload[: len(fuzz.payload) - len(rest)]
        if not consumed.endswith(b"\r\n") or reference(consumed) != decoded:
            raise AssertionError(f"accepted body decodes differently: {consumed!r} -> {decoded!r}")


TestOneInput = check

if __name__ == "__main__":
    fuzz_main("chunked", check)
