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
import hashlib
import itertools
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

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


Outcome = TypeVar("Outcome")


def same_whole_and_in_pieces(
    fuzz: FuzzInput, run: Callable[..., Outcome], small: Any, default: Any
) -> Outcome:
    """``run(pieces, limits[, size])`` on the whole payload and on its pieces must agree.

    Options bit 0 picks the ``small`` limits over the ``default`` ones; bits 1-6
    the read size for the pieces (0: all that is buffered). Returns the outcome.
    """
    limits = small if fuzz.options & 1 else default
    size = (fuzz.options >> 1) & 0x3F or -1
    whole = run([fuzz.payload], limits)
    pieces = run(fuzz.pieces(), limits, size)
    if pieces != whole:
        raise AssertionError(f"outcome depends on the split:\n whole:  {whole}\n pieces: {pieces}")
    return whole


def split(data: bytes, cuts: tuple[int, ...] | list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def instrumented(fuzzing: bool) -> AbstractContextManager[object]:
    """Around a target's forkserve imports: atheris adds coverage counters to them when fuzzing.

    Only forkserve is instrumented, which takes a fraction of a second
    (``atheris.instrument_all()`` takes tens of seconds); the test suite
    imports the targets plainly.
    """
    if not fuzzing:
        return contextlib.nullcontext()
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()  # fuzz_main() falls back to random fuzzing
    return atheris.instrument_imports(include=["forkserve"])


def fuzz_main(target: str, test_one_input: Callable[[bytes], None]) -> None:
    """Run ``test_one_input`` under atheris (libFuzzer flags in sys.argv), seeded from the corpus.

    With no file or directory among the arguments, the target's seed corpus
    is read and new inputs go to a scratch directory, not into the committed
    corpus. Files given alone are replayed once (a crash's input).
    """
    try:
        import atheris  # only the fuzz runs need it: the test suite replays inputs without it
    except ImportError:  # no wheel here: the test extra installs atheris on x86-64 Linux only
        random_fuzz(target, test_one_input, sys.argv[1:])
        return
    argv = list(sys.argv)
    if all(arg.startswith("-") for arg in argv[1:]):
        scratch = Path(os.environ.get("FORKSERVE_FUZZ_WORK", "/tmp/forkserve-fuzz")) / target
        scratch.mkdir(parents=True, exist_ok=True)
        argv += [str(scratch), str(CORPUS_DIR / target)]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


INTERESTING = b'\r\n \t:;,="[]\x00\x0b\x7f\x80\xff0aF-_\\%'


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """A seed with a few byte edits, a random options byte and random cuts."""
    payload = bytearray(read_input(seed).payload)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(payload))
        byte = rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randrange(256)
        edit = rng.choice(("insert", "replace", "delete", "repeat"))
        if edit == "insert":
            payload[at:at] = bytes([byte])
        elif edit == "repeat":
            payload[at:at] = payload[at : at + rng.randint(1, 8)] * rng.randint(1, 20)
        elif at < len(payload):
            if edit == "replace":
                payload[at] = byte
            else:
                del payload[at]
    cuts = tuple(rng.randrange(65536) for _ in range(rng.randint(0, MAX_CUTS)))
    return make_input(bytes(payload), rng.randrange(256), cuts)


def random_fuzz(target: str, test_one_input: Callable[[bytes], None], args: list[str]) -> None:
    """Without atheris: mutate the seed corpus at random (no coverage guidance), same flags and exit codes.

    Understands -max_total_time=, -runs=, -seed= and input files to replay;
    a crash prints its traceback, writes the input like libFuzzer does and exits 1.
    """
    flags = dict(arg[1:].split("=", 1) for arg in args if arg.startswith("-") and "=" in arg)
    files = [Path(arg) for arg in args if not arg.startswith("-") and os.path.isfile(arg)]
    corpus = [p.read_bytes() for p in sorted((CORPUS_DIR / target).iterdir())] or [b""]
    rng = random.Random(int(flags.get("seed", "0")) or None)
    deadline = time.monotonic() + float(flags.get("max_total_time", "20"))
    runs = int(flags.get("runs", "-1"))
    inputs = (
        (p.read_bytes() for p in files)
        if files
        else itertools.chain(corpus, (mutate(rng.choice(corpus), rng) for _ in itertools.count()))
    )
    done = 0
    for data in inputs:
        if done == runs or (not files and time.monotonic() > deadline):
            break
        try:
            test_one_input(data)
        except Exception:
            traceback.print_exc()
            crash = Path(flags.get("artifact_prefix", "./") + "crash-" + hashlib.sha1(data).hexdigest())
            crash.write_bytes(data)
            print(f"random fuzzing (no atheris): Test unit written to {crash}", file=sys.stderr)
            sys.exit(1)
        done += 1
    print(f"random fuzzing (no atheris, no coverage): Done {done} runs", file=sys.stderr)
    print(f"stat::number_of_executed_units: {done}", file=sys.stderr)
