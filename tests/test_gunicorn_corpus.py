"""Gunicorn users switch by changing one word: the corpus proves it.

Every config in ``gunicorn_corpus/configs`` and every command line in
``gunicorn_corpus/cmdlines.txt`` is run first by Gunicorn (the reference) and
then by forkserve, each in its own temporary directory, with the bind forced
to 127.0.0.1 port 0 on the command line. What Gunicorn did is the expectation:

- the listening sockets (only 127.0.0.1, so ``-b`` beat the config's bind);
- whether a "Listening at:" line was logged, and where;
- the number of workers (children of the master, read from /proc);
- four probe requests (plain, X-Forwarded-For + X-Forwarded-Proto,
  X-Forwarded-Ssl, a SCRIPT_NAME forwarder header) answered with the same REMOTE_ADDR, url_scheme,
  SCRIPT_NAME, PATH_INFO and environment variables (proxy trust, raw_env),
  except that a trusted proxy's X-Forwarded-For becomes REMOTE_ADDR
  (``expected_probes``);
- where the access log line and the "Booting worker" line land (stdout,
  stderr, or which file);
- TLS when the config sets certfile/keyfile, the worker timeout where it is
  cheap to see, and a clean stop with no process left.

Started means a listening socket (read from /proc: configs with loglevel
warning or error log no "Listening at:" line) and a served request within a
bounded time. A case Gunicorn cannot start is not a Gunicorn config: ``test_gunicorn_starts``
fails for it, and the forkserve test is skipped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from certs import make_certs
from conftest import TESTS, group_pids, wait_until, workers_of

CORPUS = TESTS / "gunicorn_corpus"
CONFIGS = CORPUS / "configs"
LISTENING = re.compile(r"Listening at: (\S+) \((?:pid )?(\d+)\)")
BOOTING = re.compile(r"Booting worker")
# What the corpus's hooks log: each hook that ran leaves one of these lines (pids become N).
HOOK_LINE = re.compile(r"\b(?:hooks_full|hooks_conditional_alias|corpus_hooks|defaults_globals): [^\n]*")
BIND = "127.0.0.1:0"
APP = "corpus_app:app"
PARALLEL = 4
START_TIMEOUT = 20.0

# Configs served over TLS (certfile/keyfile point at the certificate the test writes).
TLS_CASES = {"tls_files.py"}
# Cases whose worker timeout is cheap to observe: name -> the timeout they set, in seconds.
TIMEOUT_CASES = {"timeout_sync_str.py": 3, "short_flags_t": 2}


@dataclass
class Case:
    name: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd_files: dict[str, Path] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)

    @property
    def tls(self) -> bool:
        return self.name in TLS_CASES


def config_cases() -> list[Case]:
    cases = []
    for path in sorted(CONFIGS.glob("*.py")):
        app = [] if re.search(r"^wsgi_app\s*=\s*['\"]", path.read_text(), re.M) else [APP]
        cases.append(Case(path.name, ["-c", str(path), "-b", BIND, *app], tags=header_tags(path)))
    return cases


def header_tags(path: Path) -> list[str]:
    """The pattern tags a config names in its '# Patterns:' header (which may continue)."""
    tags: list[str] = []
    reading = False
    for line in path.read_text().splitlines():
        if line.startswith("# Patterns:"):
            reading = True
            line = line.removeprefix("# Patterns:")
        elif not (reading and line.startswith("#   ")):
            if reading:
                break
            continue
        tags += [t.strip(" .") for t in line.lstrip("#").split(",") if t.strip(" .")]
    return tags


def cmdline_cases() -> list[Case]:
    cases = []
    for line in (CORPUS / "cmdlines.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, tags, command = (part.strip() for part in line.split("|", 2))
        words = json.loads(command) if command.startswith("[") else shlex.split(command)
        env: dict[str, str] = {}
        cwd_files: dict[str, Path] = {}
        while words[0] != "gunicorn":
            word = words.pop(0)
            if word.startswith("@cwd:"):
                dest, _, src = word.removeprefix("@cwd:").partition("=")
                cwd_files[dest] = CONFIGS / src
            else:
                key, _, value = word.partition("=")
                env[key] = value
        args = words[1:]
        if "{bind}" not in command:
            args += ["-b", "{bind}"]
        cases.append(Case(name, args, env, cwd_files, [t.strip() for t in tags.split(",")]))
    return cases


CASES = config_cases() + cmdline_cases()
BY_NAME = {case.name: case for case in CASES}


# -- observing one server ---------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _hex_addr(text: str) -> tuple[str, int]:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        addr = ".".join(str(b) for b in reversed(raw))
    else:
        words = [raw[i : i + 4][::-1].hex() for i in range(0, 16, 4)]
        addr = ":".join(w[j : j + 4] for w in words for j in (0, 4))
    return addr, int(port, 16)


def listeners(pid: int, cwd: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """The master's listening TCP sockets and unix socket paths (the control sockets aside)."""
    inodes = _socket_inodes(pid)
    inet = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    inet.append(_hex_addr(cols[1]))
    unix = []
    with contextlib.suppress(OSError):
        for row in Path("/proc/net/unix").read_text().splitlines()[1:]:
            cols = row.split()
            if len(cols) >= 8 and cols[6] in inodes and int(cols[3], 16) & 0x10000:
                path = cols[7]
                if "/.gunicorn/" in path or "/.forkserve/" in path:
                    continue  # the control sockets' default places
                unix.append(path.replace(str(cwd), "{dir}"))
    return sorted(inet), sorted(unix)


@dataclass
class Run:
    server: str
    started: bool = False
    problem: str = ""
    listening_dests: list[str] = field(default_factory=list)
    inet: list[tuple[str, int]] = field(default_factory=list)
    unix: list[str] = field(default_factory=list)
    workers: int = 0
    probes: dict[str, object] = field(default_factory=dict)
    access_dests: list[str] = field(default_factory=list)
    debug_dests: list[str] = field(default_factory=list)
    hook_lines: list[str] = field(default_factory=list)
    booting_dests: list[str] = field(default_factory=list)
    timeout_cut: float | None = None
    exit_code: int | None = None
    leftovers: list[int] = field(default_factory=list)
    output: str = ""


PROBES = {
    "plain": {},
    "forwarded": {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
    "ssl-header": {"X-Forwarded-Ssl": "on"},
    # A forwarder header (Gunicorn's forwarder_headers): believed only from a trusted proxy.
    "script-name": {"SCRIPT_NAME": "/corpus-probe"},
}
OBSERVED = ("REMOTE_ADDR", "wsgi.url_scheme", "SCRIPT_NAME", "PATH_INFO", "env")


def _connection(port: int, tls: bool, timeout: float) -> http.client.HTTPConnection:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def request(port: int, path: str, headers: dict[str, str], tls: bool, timeout: float = 5.0) -> object:
    """One GET: the observed environ values, or the status/error when there is no JSON answer."""
    conn = _connection(port, tls, timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close", **headers})
        resp = conn.getresponse()
        body = resp.read()
    except (OSError, http.client.HTTPException) as exc:
        return f"error: {type(exc).__name__}"
    finally:
        conn.close()
    if resp.status != 200:
        return f"status {resp.status}"
    try:
        data = json.loads(body)
    except ValueError:
        return f"status 200, not JSON: {body[:80]!r}"
    return {key: data.get(key) for key in OBSERVED}


def _outputs(cwd: Path) -> dict[str, str]:
    """Every place a log line can land: stdout, stderr, and the files under the case's directory."""
    found = {}
    for path in sorted(cwd.rglob("*")):
        if not path.is_file() or path.suffix in (".crt", ".key", ".pid", ".sock", ".socket"):
            continue
        name = path.relative_to(cwd).as_posix()
        name = {"_stdout": "stdout", "_stderr": "stderr"}.get(name, name)
        with contextlib.suppress(OSError):
            found[name] = path.read_text(errors="replace")
    return found


def _stable_children(pid: int) -> int:
    counts: list[int] = []

    def settled() -> bool:
        counts.append(len(workers_of(pid)))
        return len(counts) >= 3 and counts[-1] == counts[-2] == counts[-3] and counts[-1] > 0

    wait_until(settled, timeout=5, interval=0.25)
    return counts[-1]


def run_server(server: str, case: Case, root: Path, certs_dir: Path, expect: Run | None) -> Run:
    run = Run(server)
    cwd = root / server / case.name
    cwd.mkdir(parents=True)
    shutil.copy(certs_dir / "server.pem", cwd / "server.crt")
    shutil.copy(certs_dir / "server.key", cwd / "server.key")
    for dest, src in case.cwd_files.items():
        shutil.copy(src, cwd / dest)
    subst = {
        "{app}": APP,
        "{bind}": BIND,
        "{dir}": str(cwd),
        "{configs}": str(CONFIGS),
        "{corpus}": str(CORPUS),
    }

    def fill(text: str) -> str:
        for key, value in subst.items():
            text = text.replace(key, value)
        return text

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN", "FORKSERVE", "CORPUS_"))}
    env.pop("WEB_CONCURRENCY", None)
    env.pop("PORT", None)
    env.update(
        PYTHONPATH=str(CORPUS), PYTHONUNBUFFERED="1", CORPUS_DIR=str(cwd), HOME=str(cwd), TMPDIR=str(cwd)
    )
    env.update({k: fill(v) for k, v in case.env.items()})
    argv = [sys.executable, "-m", server, *(fill(a) for a in case.args)]
    token = uuid.uuid4().hex[:12]
    with open(cwd / "_stdout", "wb") as out, open(cwd / "_stderr", "wb") as err:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        ready = wait_until(
            lambda: proc.poll() is not None or listeners(proc.pid, cwd)[0],
            timeout=START_TIMEOUT,
            interval=0.1,
        )
        run.inet, run.unix = listeners(proc.pid, cwd)
        if proc.poll() is not None or not ready or not run.inet:
            run.problem = "exited before listening" if proc.poll() is not None else "no listening socket"
            return run
        port = run.inet[0][1]
        first: list[object] = []

        def served() -> bool:
            first[:] = [request(port, f"/corpus-probe/{token}/plain", {}, case.tls)]
            return isinstance(first[0], dict)

        if not wait_until(served, timeout=15, interval=0.2):
            run.problem = f"no request served: {first[0] if first else '?'}"
            return run
        run.started = True
        run.probes["plain"] = first[0]
        for probe, headers in PROBES.items():
            if probe != "plain":
                run.probes[probe] = request(port, f"/corpus-probe/{token}/{probe}", headers, case.tls)
        for answer in run.probes.values():
            if isinstance(answer, dict):
                answer["PATH_INFO"] = str(answer["PATH_INFO"]).replace(token, "{token}")
        if expect is not None and expect.started:
            wait_until(lambda: len(workers_of(proc.pid)) == expect.workers, timeout=10)
        run.workers = _stable_children(proc.pid)
        if case.name in TIMEOUT_CASES:
            limit = TIMEOUT_CASES[case.name] + 8
            began = time.monotonic()
            answer = request(port, "/sleep/30", {}, case.tls, timeout=limit)
            elapsed = time.monotonic() - began
            run.timeout_cut = elapsed if not isinstance(answer, dict) and elapsed < limit else None
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            run.exit_code = proc.wait(20)
        except subprocess.TimeoutExpired:
            run.problem = run.problem or "did not stop on SIGTERM within 20 s"
        wait_until(lambda: not group_pids(proc.pid), timeout=5)
        run.leftovers = group_pids(proc.pid)
        for pid in run.leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        outputs = _outputs(cwd)
        run.output = "\n".join(f"--- {name}\n{text[-1500:]}" for name, text in outputs.items() if text)
        run.listening_dests = sorted(n for n, t in outputs.items() if LISTENING.search(t))
        probe_lines = {
            n: [ln for ln in t.splitlines() if f"/corpus-probe/{token}/" in ln] for n, t in outputs.items()
        }
        run.access_dests = sorted(
            n for n, lines in probe_lines.items() if any("DEBUG" not in ln for ln in lines)
        )
        run.debug_dests = sorted(n for n, lines in probe_lines.items() if any("DEBUG" in ln for ln in lines))
        run.hook_lines = sorted(
            {
                re.sub(r"\d+", "N", m.replace(str(cwd), "{dir}"))
                for t in outputs.values()
                for m in HOOK_LINE.findall(t)
            }
        )
        run.booting_dests = sorted(n for n, t in outputs.items() if BOOTING.search(t))
    return run


# -- running the corpus (once, in parallel) ---------------------------------------------------


@pytest.fixture(scope="module")
def corpus_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Run, Run]]:
    root = tmp_path_factory.mktemp("corpus")
    certs = make_certs(root / "certs")

    def both(case: Case) -> tuple[Run, Run]:
        reference = run_server("gunicorn", case, root, certs.cert.parent, None)
        return reference, run_server("forkserve", case, root, certs.cert.parent, reference)

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(zip(BY_NAME, pool.map(both, CASES), strict=True))
    return results


def test_corpus_is_big_enough() -> None:
    assert len(config_cases()) >= 25
    assert len(cmdline_cases()) >= 15


def test_every_pattern_in_sources_is_reproduced() -> None:
    sources = (CORPUS / "SOURCES.md").read_text()
    listed = set(re.findall(r"^- `([a-z0-9-]+)`", sources, re.M))
    used = {tag for case in CASES for tag in case.tags}
    assert listed, "SOURCES.md lists no patterns"
    assert not listed - used, f"patterns no corpus case reproduces: {sorted(listed - used)}"
    assert not used - listed, f"tags used by the corpus but not listed in SOURCES.md: {sorted(used - listed)}"


@pytest.mark.parametrize("name", list(BY_NAME))
def test_gunicorn_starts(name: str, corpus_runs: dict[str, tuple[Run, Run]]) -> None:
    """The corpus holds only real Gunicorn configs: Gunicorn starts each and binds only -b's address."""
    reference, _ = corpus_runs[name]
    assert reference.started, f"not a Gunicorn config ({reference.problem}):\n{reference.output}"
    assert [host for host, _ in reference.inet] == ["127.0.0.1"], reference.inet


def expected_probes(reference: Run) -> dict[str, object]:
    """Gunicorn's answers, with forkserve's one difference on purpose (README, "Coming from Gunicorn").

    From a trusted proxy, forkserve takes REMOTE_ADDR from X-Forwarded-For;
    Gunicorn leaves the proxy's address. Gunicorn showed it trusted the
    proxy when a probe changed the scheme or SCRIPT_NAME.
    """
    probes = dict(reference.probes)
    forwarded, script = probes.get("forwarded"), probes.get("script-name")
    if not isinstance(forwarded, dict):
        return probes
    schemes = {answer.get("wsgi.url_scheme") for answer in probes.values() if isinstance(answer, dict)}
    trusted = isinstance(script, dict) and script.get("SCRIPT_NAME") == "/corpus-probe"
    if trusted or len(schemes) > 1:
        probes["forwarded"] = {**forwarded, "REMOTE_ADDR": PROBES["forwarded"]["X-Forwarded-For"]}
    return probes


@pytest.mark.parametrize("name", list(BY_NAME))
def test_forkserve_matches_gunicorn(name: str, corpus_runs: dict[str, tuple[Run, Run]]) -> None:
    reference, run = corpus_runs[name]
    if not reference.started:
        pytest.skip(f"not a Gunicorn config: {reference.problem}")
    problems = []
    if not run.started:
        pytest.fail(f"forkserve did not serve it ({run.problem}):\n{run.output}")
    if [h for h, _ in run.inet] != [h for h, _ in reference.inet] or run.unix != reference.unix:
        problems.append(f"listeners {run.inet} {run.unix}, Gunicorn {reference.inet} {reference.unix}")
    if run.listening_dests != reference.listening_dests:
        problems.append(f"'Listening at:' in {run.listening_dests}, Gunicorn {reference.listening_dests}")
    if run.workers != reference.workers:
        problems.append(f"{run.workers} workers, Gunicorn {reference.workers}")
    for probe, expected in expected_probes(reference).items():
        if run.probes.get(probe) != expected:
            problems.append(f"probe {probe}: {run.probes.get(probe)}, expected {expected}")
    if run.access_dests != reference.access_dests:
        problems.append(f"access log in {run.access_dests}, Gunicorn {reference.access_dests}")
    if run.debug_dests != reference.debug_dests:
        problems.append(f"debug request line in {run.debug_dests}, Gunicorn {reference.debug_dests}")
    if run.hook_lines != reference.hook_lines:
        problems.append(f"hooks logged {run.hook_lines}, Gunicorn {reference.hook_lines}")
    if run.booting_dests != reference.booting_dests:
        problems.append(f"'Booting worker' in {run.booting_dests}, Gunicorn {reference.booting_dests}")
    if reference.timeout_cut is not None and run.timeout_cut is None:
        problems.append(
            f"a request past the timeout was not cut (Gunicorn cut it after {reference.timeout_cut:.1f} s)"
        )
    if run.leftovers or run.exit_code != 0:
        problems.append(f"stop: exit code {run.exit_code}, processes left {run.leftovers}")
    assert not problems, "\n".join(problems) + f"\n{run.output}"
