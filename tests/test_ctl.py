"""forkserve ctl against real running servers: every command, the errors, who may ask, and top in tmux."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import TESTS, Server, http_exchange, wait_until

APP = "basic:app"


def ctl(sock: Path | None, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    where = ["--control-socket", str(sock)] if sock else []
    return subprocess.run(
        [sys.executable, "-m", "forkserve", "ctl", *where, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(TESTS.parent), **(env or {})},
    )


def status(sock: Path) -> dict:
    result = ctl(sock, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def slow_requests(server: Server, seconds: float, count: int = 1) -> list[threading.Thread]:
    """``count`` requests to /sleep?seconds, each in its own thread (join them before the test ends)."""

    def one() -> None:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"{server.url}/sleep?{seconds}", timeout=seconds + 30)

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def busy_worker(sock: Path) -> dict | None:
    return next((w for w in status(sock)["workers"] if w["request"]), None)


def in_flight(server: Server, seconds: float) -> socket.socket:
    """A request to /sleep?seconds, sent on a connection the kernel has accepted (close it after)."""
    client = server.connect(timeout=seconds + 30)
    client.sendall(f"GET /sleep?{seconds} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return client


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "ctl.sock"


def test_status_shows_the_master_and_each_worker(serve, sock):
    server = serve(APP, "--workers", "2", "--control-socket", str(sock), workers=2)
    assert sock.stat().st_mode & 0o777 == 0o600
    text = ctl(sock, "status")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"master {server.pid} (basic:app, forkserve ")
    assert "generation 0  workers 2 (2 wanted)" in lines[0]
    assert lines[1] == f"listening: {server.url}"
    assert lines[2].split() == ["PID", "STATE", "GEN", "AGE", "SERVED", "RSS", "USS", "REQUEST"]
    for pid in server.workers():
        row = rf"^\s*{pid}\s+ready\s+0\s+\d+\.\ds\s+-\s+\d+\.\dM\s+\d+\.\d[MK]$"
        assert re.search(row, text.stdout, re.M), text.stdout


def test_status_counts_requests_served_with_metrics_on(serve, sock):
    server = serve(APP, "--control-socket", str(sock), "--metrics-bind", "127.0.0.1:0")
    for _ in range(5):
        assert requests.get(server.url + "/hello", timeout=10).status_code == 200
    assert wait_until(lambda: [w["served"] for w in status(sock)["workers"]] == [5], 5), status(sock)


def test_status_shows_the_request_a_busy_worker_serves(serve, sock):
    server = serve(APP, "--workers", "2", "--control-socket", str(sock), workers=2)
    threads = slow_requests(server, 3)
    try:
        assert wait_until(lambda: busy_worker(sock), 10), status(sock)
        worker = busy_worker(sock)
        assert worker is not None
        request = worker["request"]
        assert (request["method"], request["path"]) == ("GET", "/sleep?3")
        assert request["client"].startswith("127.0.0.1")
        assert 0 <= request["elapsed"] < 10
        text = ctl(sock, "status")
        assert re.search(r"GET /sleep\?3\s+127\.0\.0\.1:\d+\s+\d+\.\ds", text.stdout), text.stdout
    finally:
        for thread in threads:
            thread.join(30)


def test_status_json_parses_with_every_worker(serve, sock):
    server = serve(APP, "--workers", "2", "--control-socket", str(sock), workers=2)
    answer = status(sock)
    assert answer["ok"] is True
    assert answer["master"]["pid"] == server.pid
    assert answer["master"]["listening"] == [server.url]
    workers = answer["workers"]
    assert sorted(w["pid"] for w in workers) == sorted(server.workers())
    for worker in workers:
        assert worker["state"] == "ready" and worker["generation"] == 0
        memory = worker["memory"]
        assert memory["resident"] > 4 * 1024 * 1024  # a Python process holds megabytes
        assert 0 < memory["unique"] < memory["resident"]
        assert worker["served"] is None  # counted only with --metrics-bind
        assert worker["request"] is None


def test_reload_starts_a_new_generation_of_workers(serve, sock):
    server = serve(APP, "--workers", "2", "--control-socket", str(sock), workers=2)
    old = {w["pid"] for w in status(sock)["workers"]}
    result = ctl(sock, "reload")
    assert result.returncode == 0, result.stderr
    assert "generation 1" in result.stdout
    assert server.wait_for_log("Reload complete", 20)

    def replaced() -> bool:
        workers = status(sock)["workers"]
        return len(workers) == 2 and all(w["generation"] == 1 for w in workers)

    assert wait_until(replaced, 20), status(sock)
    assert not old & {w["pid"] for w in status(sock)["workers"]}
    assert status(sock)["master"]["generation"] == 1
    assert "Control: reload (from pid" in server.log()


def test_add_and_remove_change_the_worker_count(serve, sock):
    server = serve(APP, "--control-socket", str(sock))
    result = ctl(sock, "add", "2")
    assert (result.returncode, result.stdout.strip()) == (0, "workers wanted: 3"), result.stderr
    assert wait_until(lambda: len(server.workers()) == 3, 15)
    result = ctl(sock, "remove", "1")
    assert (result.returncode, result.stdout.strip()) == (0, "workers wanted: 2"), result.stderr
    assert wait_until(lambda: len(server.workers()) == 2, 15)
    assert len(status(sock)["workers"]) == 2 or wait_until(lambda: len(status(sock)["workers"]) == 2, 10)
    bad = ctl(sock, "add", "0")
    assert bad.returncode == 1 and "1 to 256" in bad.stderr
    assert server.wait_for_log(r"SIGTTIN: 3 workers wanted") and server.wait_for_log(r"SIGTTOU: 2 workers")


def test_reopen_logs_writes_to_a_new_file(serve, sock, tmp_path):
    access = tmp_path / "access.log"
    server = serve(APP, "--access-logfile", str(access), "--control-socket", str(sock))
    requests.get(server.url + "/hello?first", timeout=10)
    assert wait_until(lambda: access.exists() and "first" in access.read_text(), 5)
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    result = ctl(sock, "reopen-logs")
    assert (result.returncode, result.stdout.strip()) == (0, "log files reopened"), result.stderr
    assert server.wait_for_log("reopening log files")

    def in_new_file() -> bool:
        requests.get(server.url + "/hello?second", timeout=10)
        return access.exists() and "second" in access.read_text()

    assert wait_until(in_new_file, 10, interval=0.3)
    assert "first" not in access.read_text()


def test_stop_is_graceful_and_removes_the_socket(serve, sock):
    server = serve(APP, "--control-socket", str(sock))
    with in_flight(server, 1.5) as client:
        result = ctl(sock, "stop")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"master {server.pid} stopping (graceful)"
        assert server.proc.wait(20) == 0
        assert client.recv(65536).startswith(b"HTTP/1.1 200 OK")  # the request in flight finished
    assert "Control: stop (from pid" in server.log()
    assert "Handling SIGTERM: graceful stop" in server.log()
    assert not sock.exists()


def test_stop_quick_does_not_wait_for_requests(serve, sock):
    server = serve(APP, "--control-socket", str(sock), "--graceful-timeout", "60")
    with in_flight(server, 20):
        time.sleep(0.5)  # the worker takes it up
        started = time.monotonic()
        result = ctl(sock, "stop", "--quick")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"master {server.pid} stopping (quick)"
        assert server.proc.wait(15) == 0
        assert time.monotonic() - started < 10  # not the 20 s request, nor the 60 s grace
    assert "Handling SIGINT: quick stop" in server.log()
    assert not sock.exists()


def test_config_says_where_each_setting_came_from(serve, sock, tmp_path):
    config = tmp_path / "conf.py"
    config.write_text("workers = 2\nkeepalive = 7\n")
    serve(APP, "-c", str(config), "--control-socket", str(sock), workers=2)
    result = ctl(sock, "config")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"workers = 2  # config file {config}" in lines
    assert f"keepalive = 7.0  # config file {config}" in lines
    assert f'control_socket = "{sock}"  # command line' in lines
    assert "timeout = 30.0  # default" in lines
    settings = {s["name"]: s for s in json.loads(ctl(sock, "config", "--json").stdout)["settings"]}
    assert settings["workers"] == {"name": "workers", "value": 2, "source": f"config file {config}"}


def test_help_lists_the_commands_and_usage_errors_exit_2(tmp_path):
    helped = ctl(None, "--help")
    assert helped.returncode == 0
    for command in ("status", "top", "reload", "add", "remove", "reopen-logs", "stop", "config"):
        assert re.search(rf"^    {command}\s", helped.stdout, re.M), helped.stdout
    for wrong in (["add"], ["add", "two"], ["bogus"], ["top", "--json"]):
        result = ctl(tmp_path / "unused.sock", *wrong)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (wrong, result.stderr)


def test_a_missing_socket_is_one_line_and_an_error(tmp_path):
    result = ctl(tmp_path / "nothing.sock", "status")
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "no control socket at" in result.stderr and "is forkserve running?" in result.stderr


def test_a_stale_socket_says_the_server_is_not_running_and_is_replaced(serve, sock):
    dead = serve(APP, "--control-socket", str(sock))
    dead.kill()  # SIGKILL: no clean stop, the file stays
    assert sock.exists()
    result = ctl(sock, "status")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "is stale: the server that made it is not running" in result.stderr
    alive = serve(APP, "--control-socket", str(sock))
    assert status(sock)["master"]["pid"] == alive.pid


def test_a_live_server_keeps_its_socket_from_a_second_one(serve, sock):
    first = serve(APP, "--control-socket", str(sock))
    second = serve(APP, "--control-socket", str(sock), ready=False)
    assert second.proc.wait(20) == 1
    assert f"the forkserve master {first.pid} is serving it" in second.log()
    assert status(sock)["master"]["pid"] == first.pid


def test_the_default_socket_is_found_and_never_taken_from_a_live_server(serve, tmp_path):
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": ""}
    first = serve(APP, env=env)
    default = tmp_path / ".forkserve" / "forkserve.ctl"
    assert default.exists() and (default.parent.stat().st_mode & 0o777) == 0o700
    found = ctl(None, "status", "--json", env=env)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["master"]["pid"] == first.pid
    second = serve(APP, env=env)
    assert second.wait_for_log(rf"No control socket: {default} belongs to the running server {first.pid}")
    assert first.stop() == 0
    assert not default.exists()
    assert second.proc.poll() is None


def test_no_control_socket(serve, tmp_path):
    server = serve(APP, "--no-control-socket", env={"HOME": str(tmp_path), "XDG_RUNTIME_DIR": ""})
    assert not (tmp_path / ".forkserve").exists()
    assert "Control socket" not in server.log()


def ask_as_nobody(path: Path) -> bytes:
    """Connect as user nobody from a forked child and return what the server answers."""
    nobody = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(str(path))
                os.write(write_end, http_exchange(client, b'{"command": "stop"}\n'))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0
    return answer


def test_another_user_is_refused_and_logged(serve, shared_dir):
    path = shared_dir / "ctl.sock"
    server = serve(APP, "--control-socket", str(path), "--control-socket-mode", "0o666")
    answer = json.loads(ask_as_nobody(path))
    uid = pwd.getpwnam("nobody").pw_uid
    assert answer == {
        "ok": False,
        "error": f"refused: uid {uid} is neither the server's user (uid 0) nor root",
    }
    assert server.wait_for_log(rf"Control socket: refused pid \d+ \(uid {uid}\)")
    assert server.proc.poll() is None  # the stop was not obeyed
    assert status(path)["master"]["pid"] == server.pid  # root still is


def test_upgrade_hands_the_socket_to_the_new_master(serve, sock, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = serve(APP, "--control-socket", str(sock), "--pid", str(pidfile))
    server.send_signal(signal.SIGUSR2)
    oldbin = Path(f"{pidfile}.oldbin")
    assert wait_until(lambda: oldbin.exists() and pidfile.exists(), 20), server.log()
    new_master = int(pidfile.read_text())
    try:
        assert wait_until(lambda: status(sock)["master"]["pid"] == new_master, 20), server.log()
        server.send_signal(signal.SIGWINCH)
        assert server.stop() == 0  # the old master leaves ...
        assert status(sock)["master"]["pid"] == new_master  # ... and the path stays the new one's
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(new_master, signal.SIGTERM)
        assert wait_until(lambda: not server.survivors(), 20)
    assert not sock.exists()


def test_a_failed_upgrade_gives_the_socket_back_to_the_old_master(serve, sock, tmp_path):
    (tmp_path / "changing.py").write_text("def app(environ, start_response):\n    return []\n")
    server = serve("changing:app", "--pythonpath", str(tmp_path), "--control-socket", str(sock))
    (tmp_path / "changing.py").write_text("def app(:\n")  # the new master cannot load it
    server.send_signal(signal.SIGUSR2)
    assert server.wait_for_log(r"New master \d+ exited", 30), server.log()
    assert server.wait_for_log(f"Control socket: {sock} again")
    assert status(sock)["master"]["pid"] == server.pid


# -- top, as a person uses it: in a terminal ---------------------------


TMUX = shutil.which("tmux")


@contextlib.contextmanager
def top_in_tmux(
    sock: Path, tmp_path: Path
) -> Iterator[tuple[Callable[[], str], Callable[[str], None], Path]]:
    """``forkserve ctl top`` in a 160x40 tmux pane on a private tmux server: (screen, keys, exit file)."""
    name = f"ctl-top-{os.getpid()}-{tmp_path.name}"
    tmux = [str(TMUX), "-L", name]  # a private tmux server: no other session is touched
    done = tmp_path / "top.exited"
    command = (
        f"env PYTHONPATH={TESTS.parent} TERM=screen {sys.executable} -m forkserve ctl "
        f"--control-socket {sock} top; echo $? > {done}"
    )
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "160", "-y", "40", command], check=True)

    def screen() -> str:
        return subprocess.run(
            [*tmux, "capture-pane", "-p", "-t", name], capture_output=True, text=True, timeout=10
        ).stdout

    def keys(key: str) -> None:
        subprocess.run([*tmux, "send-keys", "-t", name, key], check=True, timeout=10)

    try:
        yield screen, keys, done
    finally:
        subprocess.run([*tmux, "kill-session", "-t", name], capture_output=True, timeout=10)


def uptime(screen: str) -> float:
    match = re.search(r" up (\d+\.\d)s ", screen)
    return float(match.group(1)) if match else -1.0


NEEDS_TMUX = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (tests/install.sh installs it)")


@NEEDS_TMUX
def test_top_in_a_terminal_refreshes_every_second_and_quits_on_q(serve, sock, tmp_path):
    server = serve(APP, "--workers", "2", "--control-socket", str(sock), workers=2)
    with top_in_tmux(sock, tmp_path) as (screen, keys, done):
        pids = server.workers()
        assert wait_until(lambda: all(str(pid) in screen() for pid in pids), 15), screen()
        shown = screen()
        assert f"master {server.pid} (basic:app" in shown and "requests/s" in shown
        assert re.search(r"PID\s+STATE\s+GEN\s+AGE\s+SERVED\s+RSS\s+USS\s+REQUEST", shown)
        first = uptime(shown)
        assert wait_until(lambda: uptime(screen()) >= first + 1, 5), screen()  # a new screen each second
        keys("q")
        assert wait_until(done.exists, 10), screen()
        assert done.read_text().strip() == "0"


@NEEDS_TMUX
def test_top_quits_on_ctrl_c(serve, sock, tmp_path):
    server = serve(APP, "--control-socket", str(sock))
    with top_in_tmux(sock, tmp_path) as (screen, keys, done):
        assert wait_until(lambda: f"master {server.pid}" in screen(), 15), screen()
        keys("C-c")
        assert wait_until(done.exists, 10), screen()
        assert done.read_text().strip() == "0"


@NEEDS_TMUX
def test_top_shows_the_request_a_busy_worker_serves(serve, sock, tmp_path):
    server = serve(APP, "--workers", "2", "--control-socket", str(sock), workers=2)
    threads = slow_requests(server, 6)
    try:
        with top_in_tmux(sock, tmp_path) as (screen, keys, done):
            busy = re.compile(r"GET /sleep\?6\s+127\.0\.0\.1:\d+\s+(\d+\.\d)s")
            assert wait_until(lambda: busy.search(screen()), 15), screen()
            first = busy.search(screen())
            assert first and re.search(r"busy 1/2", screen())
            assert wait_until(  # the elapsed time moves on
                lambda: (
                    (m := busy.search(screen())) is not None
                    and float(m.group(1)) >= float(first.group(1)) + 1
                ),
                5,
            ), screen()
            keys("q")
            assert wait_until(done.exists, 10), screen()
    finally:
        for thread in threads:
            thread.join(30)
