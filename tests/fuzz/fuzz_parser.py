"""Fuzz target: RequestParser on arbitrary bytes in arbitrary splits.

Invariants (a violation is a crash):
* only the parser's own ``HTTPError`` subclasses are raised;
* the outcome (requests, their bodies, and the final error status or state)
  is the same whether the bytes come all at once or in the input's pieces,
  and whatever size the body is read in;
* while it waits for more bytes, the parser holds no more than its limits.

Options byte: bit 0 picks small limits (so the fuzzer reaches every limit),
bits 1-6 a body read size for the split run (0 = all at once), bit 7
byte-by-byte feeding. Run: ``python tests/fuzz/run.py parser``.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness import fuzz_main, instrumented, read_input, same_whole_and_in_pieces

with instrumented(__name__ == "__main__"):
    from forkserve.http.errors import HTTPError
    from forkserve.http.parser import Limits, Request, RequestParser, State

SMALL = Limits(
    request_line=40, fields=4, field_size=30, head_size=120, max_body=50, chunk_ext=12, trailer_size=30
)
DEFAULT = Limits()


@dataclass
class Outcome:
    messages: list[tuple[Request, bytes]]
    end: tuple[object, ...]  # ("error", status) or ("open", state, partial body)


def waiting_bound(limits: Limits) -> int:
    return max(limits.head_size, limits.chunk_ext + 2, limits.trailer_size)


def drive(pieces: list[bytes], limits: Limits | None = None, size: int = -1) -> Outcome:
    """Feed ``pieces`` one by one as a connection does, taking out every head and body byte.

    The parser property tests (tests/test_parser_properties.py) drive it through here too.
    """
    limits = limits or DEFAULT
    parser = RequestParser(limits)
    messages: list[tuple[Request, bytes]] = []
    request: Request | None = None
    body = bytearray()
    for piece in pieces:
        parser.feed(piece)
        try:
            while True:
                if parser.state is State.HEAD:
                    request = parser.next_request()
                    if request is None:
                        break
                    body = bytearray()
                elif parser.state is State.BODY:
                    data = parser.read_body(size)
                    if data is None:
                        break
                    if size > 0 and len(data) > size:
                        raise AssertionError(f"read_body({size}) returned {len(data)} bytes")
                    body += data
                else:
                    assert request is not None
                    if parser.read_body(size) != b"":
                        raise AssertionError("read_body() after the body's end returned bytes")
                    messages.append((request, bytes(body)))
                    parser.start_next()
        except HTTPError as error:
            return Outcome(messages, ("error", error.status))
        if len(parser.buffer) > waiting_bound(limits):
            raise AssertionError(f"parser holds {len(parser.buffer)} bytes, beyond its limits")
    return Outcome(messages, ("open", parser.state, bytes(body)))


def check(data: bytes) -> None:
    same_whole_and_in_pieces(read_input(data), drive, SMALL, DEFAULT)


TestOneInput = check

if __name__ == "__main__":
    fuzz_main("parser", check)
