"""The master outlives what goes wrong in the pool: broken deploys, apps that exit, hung boots.

A reload that cannot boot keeps the old workers serving, however many HUPs
arrive; an app that leaves through ``sys.exit`` or ``KeyboardInterrupt``
costs at most its own worker; a worker stuck importing the app is killed
past a boot deadline; and a reload re-reads the very config file the
master started with, even after ``--chdir``.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests
from conftest import http_exchange, wait_until

# Written fresh into each test's tmp_path; no stale bytecode may stand in for them.
NO_PYC = {"PYTHONDONTWRITEBYTECODE": "1"}
# A log line about a worker that did not finish booting in time (wording left open).
BOOT_DEADLINE = re.compile(r"(?i)did not boot|boot.*(timed out|deadline|within)")


def versioned_app(version: str) -> str:
    return (
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        f"    return [b'{version}']\n"
    )


BROKEN_AFTER_A_PAUSE = "import time\ntime.sleep(0.5)\nraise RuntimeError('broken deploy, on purpose')\n"
HANGS_ON_IMPORT = "import time\ntime.sleep(60)\ndef app(environ, start_response):\n    raise AssertionError\n"


def rewrite(path: Path, text: str) -> None:
    """Write and move the mtime forward, so even coarse timestamps differ."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, (stat.st_atime + 2, stat.st_mtime + 2))


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def names_boot_deadline(log: str, pid: int) -> bool:
    """Some log line names this worker pid and says it missed its boot deadline."""
    return any(re.search(rf"\b{pid}\b", line) and BOOT_DEADLINE.search(line) for line in log.splitlines())


def answers_during(url: str, seconds: float) -> tuple[list[str], list[str]]:
    """Poll ``url`` for ``seconds``: (bodies of 200 answers, failures)."""
    bodies: list[str] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=5)
            if response.status_code == 200:
                bodies.append(response.text)
            else:
                failures.append(f"status {response.status_code}")
        except requests.RequestException as exc:
            failures.append(repr(exc))
        time.sleep(0.05)
    return bodies, failures


# -- 1. a broken deploy and a second HUP -------------------------------------


def test_broken_deploy_with_a_second_hup_keeps_the_old_workers(serve, tmp_path):
    module = tmp_path / "deployed.py"
    module.write_text(versioned_app("one"))
    server = serve("deployed:app", "--workers", "2", "--pythonpath", str(tmp_path), env=NO_PYC, workers=2)
    old = set(server.workers())
    assert requests.get(server.url + "/", timeout=10).text == "one"

    rewrite(module, BROKEN_AFTER_A_PAUSE)
    server.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    server.send_signal(signal.SIGHUP)

    bodies, failures = answers_during(server.url + "/", 5.0)
    assert failures == [], f"{failures[:5]}\n{server.log()}"
    assert bodies and set(bodies) == {"one"}
    assert server.proc.poll() is None, f"the master stopped:\n{server.log()}"
    assert server.wait_for_log("Reload failed", timeout=10), server.log()
    assert "stopping" not in server.log(), server.log()
    assert old <= set(server.workers())

    rewrite(module, versioned_app("two"))
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload complete", timeout=20), server.log()
    assert wait_until(lambda: requests.get(server.url + "/", timeout=10).text == "two", 10)
    assert server.proc.poll() is None
    assert server.stop() == 0


# -- 2. an app that exits while serving a request ----------------------------


@pytest.mark.parametrize("route", ["/exit4", "/exit3", "/systemexit", "/interrupt"])
def test_app_exiting_during_a_request_costs_at_most_its_worker(serve, route):
    server = serve("lifecycle_app:app", "--workers", "1")
    first = requests.get(server.url + "/", timeout=10).text
    assert first == str(server.workers()[0])

    with server.connect() as sock:
        reply = http_exchange(sock, f"GET {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    assert re.match(rb"HTTP/1\.1 5\d\d ", reply) and b"\r\n\r\n" in reply, (
        f"not a complete error response: {reply[:200]!r}\n{server.log()}"
    )

    def replaced() -> bool:
        if server.proc.poll() is not None:
            return True  # fail below, with the log
        try:
            pid = requests.get(server.url + "/", timeout=5).text
        except requests.RequestException:
            return False
        return pid != first or server.log().count("Booting worker") >= 2

    assert wait_until(replaced, 15)
    assert server.proc.poll() is None, f"the master stopped:\n{server.log()}"
    assert (
        server.log().count("Booting worker") >= 2 or requests.get(server.url + "/", timeout=10).text != first
    )
    for _ in range(5):
        assert requests.get(server.url + "/", timeout=10).status_code == 200
    assert "stopping" not in server.log(), server.log()
    assert server.proc.poll() is None
    assert server.stop() == 0


# -- 3. a worker that hangs while importing the app --------------------------


def test_worker_hanging_at_first_boot_is_killed_past_the_timeout(serve, tmp_path):
    (tmp_path / "hangs.py").write_text(HANGS_ON_IMPORT)
    server = serve(
        "hangs:app",
        "--timeout",
        "2",
        "--graceful-timeout",
        "3",
        "--pythonpath",
        str(tmp_path),
        env=NO_PYC,
        ready=False,
    )
    assert server.wait_for_log("Listening at", timeout=15), server.log()
    assert wait_until(lambda: server.workers(), 10), server.log()
    stuck = server.workers()[0]
    assert wait_until(lambda: gone(stuck), 10), f"worker {stuck} still stuck in its boot:\n{server.log()}"
    assert wait_until(lambda: names_boot_deadline(server.log(), stuck), 2), server.log()


def test_reload_whose_workers_hang_at_boot_fails_and_keeps_the_old_workers(serve, tmp_path):
    module = tmp_path / "hangs_later.py"
    module.write_text(versioned_app("one"))
    server = serve(
        "hangs_later:app",
        "--workers",
        "2",
        "--timeout",
        "2",
        "--graceful-timeout",
        "3",
        "--pythonpath",
        str(tmp_path),
        env=NO_PYC,
        workers=2,
    )
    old = set(server.workers())
    rewrite(module, HANGS_ON_IMPORT)
    server.send_signal(signal.SIGHUP)

    bodies: list[str] = []
    failures: list[str] = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline and "Reload failed" not in server.log():
        more, lost = answers_during(server.url + "/", 0.5)
        bodies += more
        failures += lost
    assert failures == [], failures[:5]
    assert bodies and set(bodies) == {"one"}
    assert "Reload failed" in server.log(), f"no reload failure within 12 s:\n{server.log()}"
    assert BOOT_DEADLINE.search(server.log()), server.log()
    assert old <= set(server.workers())
    assert requests.get(server.url + "/", timeout=10).text == "one"
    assert server.proc.poll() is None


# -- 4. HUP with a relative --config and --chdir -----------------------------


def test_hup_rereads_a_relative_config_after_chdir(serve, tmp_path):
    (tmp_path / "conf.py").write_text("workers = 1\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "chdir_app.py").write_text(versioned_app("from sub"))
    server = serve("chdir_app:app", "-c", "conf.py", "--chdir", "sub", cwd=tmp_path, env=NO_PYC)
    assert requests.get(server.url + "/", timeout=10).text == "from sub"
    assert len(server.workers()) == 1

    (tmp_path / "conf.py").write_text("workers = 3\n")
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload (complete|failed)", timeout=20), server.log()
    assert not re.search(r"Reload failed.*no such file", server.log()), server.log()
    assert "Reload complete" in server.log()
    assert wait_until(lambda: len(server.workers()) == 3, 15), server.log()
    assert requests.get(server.url + "/", timeout=10).text == "from sub"
    assert server.proc.poll() is None
    assert server.stop() == 0
