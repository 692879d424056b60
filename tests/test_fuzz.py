"""The fuzz targets (tests/fuzz/) in the normal suite, and what the fuzzers found.

* Each target replays its seed corpus and a few hundred mutations of it
  (deterministic, no atheris needed), so a target broken by a change in
  forkserve or in the target itself is noticed here, not in the CI fuzz step.
* Each target starts under atheris and runs a couple hundred inputs.
* Inputs the fuzzers turned up stay here as regression tests.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_chunked  # noqa: E402
import fuzz_parser  # noqa: E402
import fuzz_proxy  # noqa: E402
from harness import CORPUS_DIR, make_input, mutate, read_input  # noqa: E402

from forkserve.proxy import ProxyTrust, apply_forwarded  # noqa: E402

TARGETS: dict[str, Callable[[bytes], None]] = {
    "parser": fuzz_parser.check,
    "chunked": fuzz_chunked.check,
    "proxy": fuzz_proxy.check,
}


def seeds(target: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted((CORPUS_DIR / target).iterdir())]


def test_input_format_round_trips():
    fuzz = read_input(make_input(b"GET / HTTP/1.1\r\n", 0x05, (3, 70000 % 65536)))
    assert (fuzz.options, fuzz.payload, fuzz.cuts) == (0x05, b"GET / HTTP/1.1\r\n", (3, 70000 % 65536))
    assert read_input(b"") == read_input(b"\x00") == read_input(b"\x00\x00")
    assert read_input(b"\x00\x03\x01").payload == b""  # a truncated cut list is no payload


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_holds_on_its_seeds_and_their_mutations(target):
    corpus = seeds(target)
    assert len(corpus) >= 20, f"the {target} seed corpus is missing (python tests/fuzz/make_corpus.py)"
    check = TARGETS[target]
    rng = random.Random(f"forkserve-{target}")
    for data in corpus + [mutate(rng.choice(corpus), rng) for _ in range(300)]:
        try:
            check(data)
        except Exception as exc:
            raise AssertionError(f"{target} fails on {data!r}") from exc


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_target_runs_under_atheris(target, tmp_path):
    pytest.importorskip("atheris")
    done = subprocess.run(
        [sys.executable, str(FUZZ_DIR / f"fuzz_{target}.py"), "-runs=300", "-seed=1", str(tmp_path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Done 300 runs" in done.stderr, done.stderr[-2000:]


def test_runner_reports_a_crash_with_exit_1(tmp_path, monkeypatch):
    """run.py must fail the CI step when a target crashes: a target that always crashes shows it."""
    pytest.importorskip("atheris")
    import run

    crashing = tmp_path / "fuzz_crashing.py"
    crashing.write_text(
        f"import sys\nsys.path.insert(0, {str(FUZZ_DIR)!r})\nfrom harness import fuzz_main\n"
        "def check(data):\n    raise AssertionError('boom')\n"
        "fuzz_main('crashing', check)\n"
    )
    monkeypatch.setattr(run, "FUZZ_DIR", tmp_path)
    monkeypatch.setattr(run, "TARGETS", ("crashing",))
    monkeypatch.setenv("FORKSERVE_FUZZ_WORK", str(tmp_path / "work"))
    monkeypatch.chdir(tmp_path)
    assert run.main(["--runs", "10"]) == 1


# -- what the fuzzers found ------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("HTTP_FORWARDED", "for=un+known"),
        ("HTTP_FORWARDED", 'for="1.2.3.4=5"'),
        ("HTTP_X_FORWARDED_FOR", "hello world"),
        ("HTTP_X_FORWARDED_FOR", "<script>"),
        ("HTTP_X_FORWARDED_FOR", "[junk]:1"),
        ("HTTP_X_FORWARDED_FOR", 'for="_hidden:_port"'),
        ("HTTP_X_FORWARDED_FOR", "1.2.3.4 5.6.7.8"),
        ("HTTP_X_FORWARDED_FOR", "0, [::%"),  # an IPv6 zone with no name
        ("HTTP_FORWARDED", 'for="[::%]:80"'),
    ],
)
def test_fuzz_finding_remote_addr_from_a_trusted_proxy_is_an_address(header, value):
    """Found by the proxy target: text that is no IP address became REMOTE_ADDR."""
    environ = {"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "4000", header: value}
    apply_forwarded(environ, ProxyTrust(["127.0.0.1", "::1"]))
    assert environ["REMOTE_ADDR"] == "127.0.0.1"  # nothing in the header is an address: keep the peer's
