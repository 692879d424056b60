"""What the fuzz targets share: how one fuzz input is read, and how a target is run.

An input is ``options, count, cuts..., payload``: the first byte picks the
target's options (limits, read size, byte-by-byte feeding), the second how
many cut points follow (two bytes each, big-endian, taken modulo the
payload's length + 1), and the rest is the payload. The format is the
targets' own, so ``tests/test_fuzz.py`` can replay any input without
atheris, and the seed corpus is written in it (``make_corpus.py``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

MAX_CUTS = 8
FUZZ_DIR = Path(__file__).resolve().parent
CORPUS_DIR = FUZZ_DIR / "corpus"


@dataclass(frozen=True)
class FuzzInput:
    options: int
    payload: bytes
    cuts: tuple[int, ...]

    def pieces(self) -> list[bytes]:
        """The payload cut where the input says (byte by byte when option bit 7 is set)."""
        if self.options & 0x80:
            return [self.payload[i : i + 1] for i in range(len(self.payload))]
        return split(self.payload, self.cuts)


def read_input(data: bytes) -> FuzzInput:
    options = data[0] if data else 0
    count = (data[1] if len(data) > 1 else 0) % (MAX_CUTS + 1)
    header = data[2 : 2 + 2 * count]
    cuts = tuple(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header) - 1, 2))
    return FuzzInput(options, data[2 + 2 * count :], cuts)


def make_input(payload: bytes, options: int = 0, cuts: tuple[int, ...] = ()) -> bytes:
    """The inverse of ``read_input``: used for seeds and regression inputs."""
    assert len(cuts) <= MAX_CUTS
    return bytes([options, len(cuts)]) + b"".join(c.to_bytes(2, "big") for c in cuts) + payload


def split(data: bytes, cuts: tuple[int, ...] | list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def instrumented(fuzzing: bool, *modules: str) -> AbstractContextManager[object]:
    """Around a target's forkserve imports: atheris adds coverage counters to them when fuzzing.

    Only forkserve (and the standard modules named) are instrumented, which
    takes a fraction of a second; the test suite imports the targets plainly.
    """
    if not fuzzing:
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["forkserve", *modules])


def fuzz_main(target: str, test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris (libFuzzer flags in sys.argv), seeded from the corpus.

    With no directory among the arguments, the target's seed corpus is read;
    new inputs then go to a scratch directory, not into the committed corpus.
    """
    import atheris  # only the fuzz runs need it: the test suite replays inputs without it

    argv = list(sys.argv)
    if not any(os.path.isdir(arg) for arg in argv[1:] if not arg.startswith("-")):
        scratch = Path(os.environ.get("FORKSERVE_FUZZ_WORK", "/tmp/forkserve-fuzz")) / target
        scratch.mkdir(parents=True, exist_ok=True)
        argv += [str(scratch), str(CORPUS_DIR / target)]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
