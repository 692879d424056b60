"""Readiness and the shutdown sequence: --health-path, --shutdown-delay, and forkserve as PID 1.

Real processes and real sockets. The app (tests/apps/readiness_app.py)
logs every call, so "the app was not called" is a line missing from the log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from conftest import TESTS, ResponseReader, children_of, wait_until

APP = "readiness_app:app"
DELAY_LINE = r"Shutdown delay: readiness says 503; stopping in 2s"


def health(url: str, method: str = "GET", path: str = "/healthz") -> requests.Response:
    """A probe on a new connection, as Kubernetes sends it."""
    return requests.request(method, url + path, timeout=5, headers={"Connection": "close"})


def test_health_path_is_answered_without_the_app(serve):
    server = serve(APP, "--health-path", "/healthz", "--access-logfile", "-", "--max-requests", "2")
    worker = server.workers()
    for _ in range(5):  # more than --max-requests: probes are not requests of the app
        answer = health(server.url, path="/healthz?probe=1")
        assert (answer.status_code, answer.text) == (200, "OK\n")
    head = health(server.url, "HEAD")
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == "3"
    assert server.workers() == worker  # six probes did not recycle a worker that allows two requests
    assert requests.get(server.url + "/hello", timeout=5).text == "Hello, world!"
    assert requests.get(server.url + "/healthz/more", timeout=5).text == "Hello, world!"  # exactly the path
    assert requests.post(server.url + "/healthz", timeout=5).text == "Hello, world!"  # GET and HEAD only
    assert server.wait_for_log('"POST /healthz HTTP/1.1" 200')
    log = server.log()
    assert "app called /hello" in log and "app called /healthz/more" in log
    assert log.count("app called /healthz\n") == 1  # the POST's
    assert '"GET /hello HTTP/1.1" 200' in log  # the access log is on ...
    assert not re.search(r'"(GET|HEAD) /healthz[ ?]', log)  # ... and holds no probe


def test_without_health_path_the_app_gets_the_path(serve):
    server = serve(APP)
    assert requests.get(server.url + "/healthz", timeout=5).text == "Hello, world!"
    assert server.wait_for_log("app called /healthz")


def test_shutdown_delay_says_503_and_keeps_serving(serve):
    server = serve(APP, "--health-path", "/healthz", "--shutdown-delay", "2")
    assert health(server.url).status_code == 200
    kept = server.connect()  # a keep-alive connection opened before the stop
    kept.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ResponseReader(kept).read()[0] == 200
    signalled = time.monotonic()
    server.send_signal(signal.SIGTERM)
    assert wait_until(lambda: health(server.url).status_code == 503, timeout=1)
    probe = health(server.url)
    assert (probe.status_code, probe.text, probe.headers["connection"]) == (503, "stopping\n", "close")
    assert server.wait_for_log(DELAY_LINE, timeout=2)
    served = 0
    while time.monotonic() - signalled < 1.6:  # new connections, all through the delay
        assert requests.get(server.url + "/hello", timeout=5).text == "Hello, world!"
        served += 1
        time.sleep(0.1)
    assert served >= 10
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # an old connection sees it too
    status, headers, body = ResponseReader(kept).read()
    assert (status, headers["connection"], body) == (503, "close", b"stopping\n")
    assert server.proc.poll() is None  # still there, 1.6s into a 2s delay
    assert server.proc.wait(10) == 0
    assert time.monotonic() - signalled >= 2.0
    log = server.log()
    assert (
        log.index(DELAY_LINE) < log.index("Shutdown delay over: graceful stop") < log.index("Shutting down")
    )


def test_without_a_delay_sigterm_finishes_in_flight_and_queued_probes_say_503(serve):
    server = serve(APP, "--health-path", "/healthz", "--workers", "1")
    busy = server.connect()
    busy.sendall(b"GET /sleep?seconds=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert server.wait_for_log("app called /sleep")
    queued = server.connect()  # waits in the backlog behind the one worker's request
    queued.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    server.send_signal(signal.SIGTERM)
    status, headers, body = ResponseReader(busy).read()
    assert (status, body, headers["connection"]) == (200, b"slept", "close")
    status, headers, body = ResponseReader(queued).read()
    assert (status, headers["connection"], body) == (503, "close", b"stopping\n")
    assert server.proc.wait(10) == 0
    assert "Shutdown delay" not in server.log()


@pytest.mark.parametrize(
    ("signum", "line"),
    [
        (signal.SIGTERM, "Handling SIGTERM again during the shutdown delay: graceful stop now"),
        (signal.SIGINT, "Handling SIGINT: quick stop"),
    ],
)
def test_second_stop_signal_during_the_delay_stops_at_once(serve, signum, line):
    server = serve(APP, "--health-path", "/healthz", "--shutdown-delay", "60")
    server.send_signal(signal.SIGTERM)
    assert server.wait_for_log("stopping in 60s")
    assert requests.get(server.url + "/hello", timeout=5).status_code == 200
    signalled = time.monotonic()
    server.send_signal(signum)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - signalled < 5
    assert line in server.log()


def test_gevent_worker_answers_the_health_path(serve):
    server = serve(APP, "-k", "gevent", "--health-path", "/healthz", "--shutdown-delay", "2")
    answer = health(server.url)
    assert (answer.status_code, answer.text) == (200, "OK\n")
    assert requests.get(server.url + "/hello", timeout=5).text == "Hello, world!"
    server.send_signal(signal.SIGTERM)
    assert wait_until(lambda: health(server.url).status_code == 503, timeout=1)
    assert requests.get(server.url + "/hello", timeout=5).text == "Hello, world!"
    assert server.proc.wait(10) == 0
    log = server.log()
    assert "app called /hello" in log and "app called /healthz" not in log


# -- forkserve as PID 1 ---------------------------------------------------


def unshare_works() -> bool:
    """unshare is installed and may create a PID namespace here (root, no seccomp veto)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    return probe.returncode == 0


def status_of(pid: int) -> dict[str, str]:
    """/proc/PID/status as seen from here (pids of this namespace), {} once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def in_namespace(master: int) -> dict[int, dict[str, str]]:
    """Every process of the master's PID namespace, by its pid out here."""
    namespace = os.readlink(f"/proc/{master}/ns/pid")
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != namespace:
                continue
        except OSError:
            continue
        status = status_of(int(entry))
        if status:
            found[int(entry)] = status
    return found


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed")
def test_pid_1_reaps_orphans_and_stops_cleanly_on_sigterm(tmp_path):
    if not unshare_works():
        pytest.skip("unshare cannot create a PID namespace here (not permitted)")
    log_path = tmp_path / "pid1.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(TESTS / "apps")}
    command = [sys.executable, "-m", "forkserve", APP, "--bind", "127.0.0.1:0"]
    command += ["--workers", "2", "--control-socket", str(tmp_path / "ctl")]
    with open(log_path, "wb") as log_file:
        unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", *command],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        assert wait_until(lambda: len(re.findall("Booting worker", log_path.read_text())) == 2, 15)
        log = log_path.read_text()
        assert "Listening at: http://127.0.0.1:" in log and "(pid 1)" in log  # PID 1 of the namespace
        url = re.search(r"Listening at: (http://\S+)", log).group(1)  # type: ignore[union-attr]
        (master,) = children_of(unshare.pid)
        assert status_of(master)["NSpid"].split()[-1] == "1"
        workers = set(in_namespace(master)) - {master}
        assert len(workers) == 2

        orphans = [int(requests.get(url + "/orphan?seconds=0.5", timeout=5).text) for _ in range(3)]
        # Each grandchild now lives on as an orphan, handed to PID 1: the master.
        outside = {int(s["NSpid"].split()[-1]): pid for pid, s in in_namespace(master).items()}
        for orphan in orphans:
            assert orphan in outside, f"orphan {orphan} already gone: test too slow to observe it"
            assert status_of(outside[orphan])["PPid"] == str(master)
        # ... and reaped when it exits: not even a zombie stays.
        assert wait_until(lambda: not any(status_of(outside[o]) for o in orphans), timeout=5), {
            o: status_of(outside[o]).get("State") for o in orphans
        }
        assert not [s for s in in_namespace(master).values() if s["State"].startswith("Z")]
        assert set(in_namespace(master)) - {master} == workers  # the same two workers serve on
        log = log_path.read_text()
        for orphan in orphans:  # not taken for a worker
            assert f"Worker {orphan} " not in log
        assert "died" not in log and "replacing" not in log
        assert requests.get(url + "/hello", timeout=5).text == "Hello, world!"

        os.kill(master, signal.SIGTERM)
        assert unshare.wait(15) == 0
        log = log_path.read_text()
        assert "Handling SIGTERM: graceful stop" in log and "Shutting down: master 1" in log
    finally:
        if unshare.poll() is None:
            os.killpg(unshare.pid, signal.SIGKILL)
            unshare.wait(5)
