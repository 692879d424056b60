"""Property tests of the request parser (hypothesis).

* A valid request parses to the same result whole, split at any byte
  boundaries, and byte by byte.
* Arbitrary and mutated bytes raise nothing but ``HTTPError``, and get the
  same outcome (requests, bodies, final status) however they are split.
* While the parser waits for more bytes, it never holds more than its limits.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent / "fuzz"))
# The fuzz target drives the parser exactly as these properties need: one driver for both.
from fuzz_parser import SMALL, drive

from forkserve.http.body import FORBIDDEN_TRAILERS
from forkserve.http.parser import Limits, Request

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F)) + "\xa0\xe9\xff"
PCHAR = "abcxyzABC0129-._~!$&'()*+,;=:@"
FRAMING = {"HOST", "CONTENT-LENGTH", "TRANSFER-ENCODING", "CONNECTION", "EXPECT"}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# -- valid requests ------------------------------------------------------------


tokens = st.text(TCHAR, min_size=1, max_size=12)
values = st.text(VCHAR + " \t", max_size=30).map(lambda v: v.strip(" \t"))
ows = st.sampled_from(["", " ", "\t", "  ", " \t"])


@st.composite
def header_fields(draw: st.DrawFn) -> list[tuple[str, str, str, str]]:
    """(name, leading OWS, value, trailing OWS) for ordinary fields."""
    names = draw(st.lists(tokens.filter(lambda n: n.upper() not in FRAMING), max_size=6))
    return [(name, draw(ows), draw(values), draw(ows)) for name in names]


@st.composite
def chunked_bodies(draw: st.DrawFn, body: bytes) -> bytes:
    out = b""
    rest = body
    while rest:
        size = draw(st.integers(1, len(rest)))
        ext = draw(st.sampled_from([b"", b";a", b";a=b", b' ; n = "q \\" v"', b";x;y=1"]))
        digits = draw(st.sampled_from(["%x", "%X", "%04x"])) % size
        out += digits.encode() + ext + b"\r\n" + rest[:size] + b"\r\n"
        rest = rest[size:]
    names = tokens.filter(lambda n: n.upper() not in FORBIDDEN_TRAILERS)
    trailers = draw(st.lists(st.tuples(names, values), max_size=2))
    out += b"0\r\n" + b"".join(f"{n}: {v}\r\n".encode("latin-1") for n, v in trailers) + b"\r\n"
    return out


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, object]]:
    """Raw bytes of one valid request, and what the parser must make of it."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]) | tokens)
    path = "/" + draw(st.text(PCHAR + "/", max_size=20))
    query = draw(st.none() | st.text(PCHAR + "/?", max_size=12))
    target = path + ("" if query is None else "?" + query)
    host = draw(st.sampled_from(["example.com", "a.example:8080", "[::1]:80", "localhost"]))
    fields = draw(header_fields())
    body = draw(st.binary(max_size=200))
    framing = (
        draw(st.sampled_from(["length", "chunked"])) if body else draw(st.sampled_from(["none", "length"]))
    )
    head = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{n}:{a}{v}{b}\r\n" for n, a, v, b in fields)
    if framing == "length":
        head += f"Content-Length: {len(body)}\r\n"
        raw_body = body
    elif framing == "chunked":
        head += "Transfer-Encoding: chunked\r\n"
        raw_body = draw(chunked_bodies(body))
    else:
        raw_body = b""
    expected = {
        "method": method,
        "target": target,
        "query": query or "",
        "host": host,
        "fields": [(n.upper(), v) for n, _, v, _ in fields],
        "chunked": framing == "chunked",
        "body": body,
    }
    return (head + "\r\n").encode("latin-1") + raw_body, expected


def check(message: tuple[Request, bytes], expected: dict[str, object]) -> None:
    request, body = message
    assert request.method == expected["method"]
    assert request.target == expected["target"]
    assert request.query == expected["query"]
    assert request.host == expected["host"]
    assert [h for h in request.headers if h[0] not in FRAMING] == expected["fields"]
    assert request.chunked == expected["chunked"]
    assert body == expected["body"]


@BOUNDED
@given(valid_requests(), st.lists(st.integers(min_value=0), max_size=8))
def test_valid_request_parses_the_same_in_any_split(generated, cuts):
    data, expected = generated
    whole = drive([data])
    assert whole.end[0] == "open" and len(whole.messages) == 1
    check(whole.messages[0], expected)
    assert drive(split(data, cuts)) == whole
    assert drive(bytewise(data)) == whole


@BOUNDED
@given(st.lists(valid_requests(), min_size=2, max_size=3), st.lists(st.integers(min_value=0), max_size=8))
def test_pipelined_requests_parse_the_same_in_any_split(generated, cuts):
    data = b"".join(raw for raw, _ in generated)
    whole = drive([data])
    assert len(whole.messages) == len(generated)
    for message, (_, expected) in zip(whole.messages, generated, strict=True):
        check(message, expected)
    assert drive(split(data, cuts)) == whole


@BOUNDED
@given(
    valid_requests(),
    st.integers(min_value=0),
    st.integers(min_value=0x80, max_value=0xFF),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_non_ascii_byte_in_the_target_is_400_however_split(generated, position, byte, cuts):
    """RFC 9112 §3.2: a request-target is visible ASCII only (percent-encode the rest)."""
    data, expected = generated
    target_start = data.index(b" ") + 1
    target_end = target_start + len(str(expected["target"]))
    at = target_start + 1 + position % (target_end - target_start)  # after the leading "/"
    data = data[:at] + bytes([byte]) + data[at:]
    whole = drive([data])
    assert whole.end == ("error", 400) and not whole.messages
    assert drive(split(data, cuts)) == whole
    assert drive(bytewise(data)) == whole


# -- hostile bytes ---------------------------------------------------------------

INTERESTING = b'\r\n \t:;,\x00\x0b\x7f\x80\xff0aF-"\\'
mutations = st.lists(
    st.tuples(
        st.integers(min_value=0),
        st.sampled_from(["insert", "replace", "delete"]),
        st.sampled_from(INTERESTING),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, edits: list[tuple[int, str, int]]) -> bytes:
    out = bytearray(data)
    for position, op, byte in edits:
        i = position % (len(out) + 1)
        if op == "insert":
            out[i:i] = bytes([byte])
        elif i < len(out):
            if op == "replace":
                out[i] = byte
            else:
                del out[i]
    return bytes(out)


def same_outcome_however_split(data: bytes, cuts: list[int], limits: Limits | None = None) -> None:
    whole = drive([data], limits)  # raises anything but HTTPError straight into the test
    assert drive(split(data, cuts), limits) == whole
    assert drive(bytewise(data), limits) == whole


@BOUNDED
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0), max_size=8))
def test_arbitrary_bytes_only_raise_http_errors(data, cuts):
    same_outcome_however_split(data, cuts)
    same_outcome_however_split(data, cuts, SMALL)


@BOUNDED
@given(valid_requests(), mutations, st.lists(st.integers(min_value=0), max_size=8))
def test_mutated_requests_get_one_answer_however_split(generated, edits, cuts):
    same_outcome_however_split(mutate(generated[0], edits), cuts)


@BOUNDED
@given(valid_requests(), mutations, st.lists(st.integers(min_value=0), max_size=8))
def test_mutated_requests_under_small_limits(generated, edits, cuts):
    same_outcome_however_split(mutate(generated[0], edits), cuts, SMALL)


@BOUNDED
@given(
    st.sampled_from(
        [b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"]
    ),
    st.binary(min_size=1, max_size=50),
    st.integers(1, 200),
)
def test_endless_input_is_cut_off_at_the_limits(prefix, filler, repeat):
    """However long a head, chunk line or trailer grows, the parser either
    refuses it or holds no more than its limits."""
    data = prefix + filler * repeat
    drive(split(data, list(range(0, len(data), 7))), SMALL)
    drive([data], SMALL)


def boundary_case(kind: str, delta: int) -> bytes:
    """A request whose ``kind`` measures exactly its SMALL limit plus ``delta``."""
    get = b"GET / HTTP/1.1\r\nHost: x\r\n"
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    if kind == "request_line":
        line = b"GET /" + b"a" * (SMALL.request_line + delta - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
        return line + b"\r\nHost: x\r\n\r\n"
    if kind == "field":
        return get + b"X: " + b"v" * (SMALL.field_size + delta - 3) + b"\r\n\r\n"
    if kind == "head":
        room = SMALL.head_size + delta - len(get) - 2  # three more fields fill the rest
        sizes = [room // 3, room // 3, room - 2 * (room // 3)]
        return get + b"".join(b"X: " + b"v" * (size - 5) + b"\r\n" for size in sizes) + b"\r\n"
    if kind == "chunk_ext":
        return chunked + b"5;" + b"e" * (SMALL.chunk_ext + delta - 2) + b"\r\nhello\r\n0\r\n\r\n"
    if kind == "trailer":
        trailer = b"X: " + b"v" * (SMALL.trailer_size + delta - 5) + b"\r\n"
        return chunked + b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n"
    assert kind == "max_body"
    size = SMALL.max_body + delta
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"b" * size


@BOUNDED
@given(
    st.sampled_from(["request_line", "field", "head", "chunk_ext", "trailer", "max_body"]),
    st.integers(-3, 3),
    st.lists(st.integers(min_value=0), max_size=8),
)
def test_limits_are_exact_however_split(kind, delta, cuts):
    data = boundary_case(kind, delta)
    whole = drive([data], SMALL)
    assert (whole.end[0] == "open") == (delta <= 0), whole.end
    assert drive(split(data, cuts), SMALL) == whole
    assert drive(bytewise(data), SMALL) == whole
