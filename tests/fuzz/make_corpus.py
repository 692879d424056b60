"""Writes the seed corpus (tests/fuzz/corpus/<target>/) from the requests the tests use.

Every bytes literal in tests/*.py that starts like a request, a chunked body,
a Forwarded/X-Forwarded-For value or a PROXY header becomes a seed, plus a
few written here; each is stored in the targets' input format (harness.py)
whole, with small limits, and cut in pieces. Names are content hashes, so a
rerun only adds what is new. Run: ``python tests/fuzz/make_corpus.py``.
"""

from __future__ import annotations

import ast
import hashlib
import re
import struct

from harness import CORPUS_DIR, FUZZ_DIR, make_input

TESTS = FUZZ_DIR.parent
REQUEST = re.compile(rb"^(?:\r\n)*[A-Z]+ \S+ HTTP/")
CHUNKED = re.compile(rb"^[0-9A-Fa-f]+(?:;[^\r\n]*)?\r\n")
PROXY_V2 = b"\r\n\r\n\x00\r\nQUIT\n"

EXTRA_CHUNKED = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b'3;ext=1\r\nabc\r\n2 ; q="x y"\r\nde\r\n0\r\nTrailer: v\r\n\r\nGET / HTTP/1.1\r\n',
    b"A\r\n0123456789\r\n0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"0\r\nX: 1\r\nY: 2\r\n\r\n",
]
EXTRA_FORWARDED = [
    "for=192.0.2.60;proto=http;by=203.0.113.43",
    'for="[2001:db8:cafe::17]:4711", for=127.0.0.1',
    "for=unknown, for=_hidden;host=example.com",
    'for=10.1.2.3;proto=https;host="a,b;c", for=127.0.0.1',
]
EXTRA_X_FORWARDED = [
    "203.0.113.7, 10.0.0.1\0https\0example.com\x00443\0on",
    "[::1]:80, 127.0.0.1\0http\0\08080",
    "unknown\0https",
    "1.2.3.4:5678",
]
EXTRA_PROXY = [
    b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 443\r\nGET / HTTP/1.1\r\n",
    b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n",
    b"PROXY UNKNOWN\r\n",
    PROXY_V2 + b"\x21\x11" + struct.pack("!H4s4sHH", 12, b"\n\0\0\1", b"\n\0\0\2", 8080, 443),
    PROXY_V2 + b"\x21\x21" + struct.pack("!H16s16sHH", 36, bytes(15) + b"\1", bytes(15) + b"\2", 80, 443),
    PROXY_V2 + b"\x20\x00" + struct.pack("!H", 0),
]


def literals() -> list[bytes]:
    """Every bytes (and str, encoded) literal of the test files, concatenations folded."""
    found = []
    for path in sorted(TESTS.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.BinOp | ast.Constant):
                try:
                    value = ast.literal_eval(node)
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    continue
                if isinstance(value, str):
                    try:
                        value = value.encode("latin-1")
                    except UnicodeEncodeError:
                        continue
                if isinstance(value, bytes) and 0 < len(value) <= 4096:
                    found.append(value)
    return found


def seeds() -> dict[str, set[bytes]]:
    found = literals()
    requests = {v for v in found if REQUEST.match(v)}
    chunked = {v for v in found if CHUNKED.match(v)} | set(EXTRA_CHUNKED)
    # Chunked bodies that follow a head in the tests' requests.
    chunked |= {r.split(b"\r\n\r\n", 1)[1] for r in requests if b"chunked" in r.lower() and b"\r\n\r\n" in r}
    proxy = {v for v in found if v.startswith((b"PROXY ", PROXY_V2))} | set(EXTRA_PROXY)
    forwarded = {v.decode("latin-1") for v in found if b"for=" in v.lower()} | set(EXTRA_FORWARDED)
    x_forwarded = set(EXTRA_X_FORWARDED)
    proxy_inputs = set()
    for kind, values in ((0, forwarded), (1, x_forwarded)):
        proxy_inputs |= {make_input(v.encode("latin-1"), kind | t << 2) for v in values for t in range(4)}
    proxy_inputs |= {make_input(v, 2 | mode << 2, (len(v) // 2,)) for v in proxy for mode in range(3)}
    return {
        "parser": _variants(requests),
        "chunked": _variants({c for c in chunked if c}),
        "proxy": proxy_inputs,
    }


def _variants(payloads: set[bytes]) -> set[bytes]:
    """Whole with the default limits, and with small limits in a few pieces."""
    out = set()
    for payload in payloads:
        out.add(make_input(payload))
        third = len(payload) // 3
        out.add(make_input(payload, 1, (third, 2 * third)))
    return out


def main() -> None:
    for target, inputs in seeds().items():
        folder = CORPUS_DIR / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in sorted(inputs):
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{target}: {len(inputs)} seeds in {folder.relative_to(TESTS.parent)}")


if __name__ == "__main__":
    main()
