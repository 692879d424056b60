"""The master keeps the pool healthy under traffic: reloads, resizes, recycling, crashes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from conftest import ResponseReader, wait_until
from traffic import Traffic

# Tests that hold for every worker class run under each; the gevent-only ones are in test_gevent.py.
WORKER_CLASSES = ["sync", "gevent"]


def worker_set(server) -> set[int]:
    return set(server.workers())


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_sighup_reload_under_traffic_loses_nothing(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--workers", "2", workers=2)
    before = worker_set(server)
    with Traffic(server.url) as traffic:
        traffic.wait_for(200)
        server.send_signal(signal.SIGHUP)
        assert server.wait_for_log("Reload complete", timeout=20)
        assert wait_until(lambda: len(server.workers()) == 2 and not before & worker_set(server), 20)
        traffic.wait_for(200)
    assert traffic.failures == []
    assert not before & worker_set(server)


def test_ttin_ttou_under_traffic_loses_nothing(serve):
    server = serve("supervised:app", "--workers", "2", workers=2)
    with Traffic(server.url) as traffic:
        traffic.wait_for(100)
        server.send_signal(signal.SIGTTIN)
        assert wait_until(lambda: len(server.workers()) == 3, 15)
        traffic.wait_for(100)
        for expected in (2, 1):  # one at a time: the kernel merges pending signals
            server.send_signal(signal.SIGTTOU)
            assert wait_until(lambda n=expected: len(server.workers()) == n, 15)
        traffic.wait_for(100)
        server.send_signal(signal.SIGTTOU)  # never below one worker
        traffic.wait_for(100)
    assert traffic.failures == []
    assert len(server.workers()) == 1
    assert "SIGTTIN: 3 workers wanted (was 2)" in server.log()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_max_requests_recycles_without_failures(serve, worker_class):
    server = serve(
        "supervised:app",
        "-k",
        worker_class,
        "--workers",
        "2",
        "--max-requests",
        "50",
        "--max-requests-jitter",
        "10",
        workers=2,
    )
    with Traffic(server.url) as traffic:
        traffic.wait_for(600)
    assert traffic.failures == []
    assert server.log().count("leaving after") >= 5
    assert len(traffic.pids) >= 7  # many workers took turns
    assert wait_until(lambda: len(server.workers()) == 2, 10)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_last_response_before_recycling_says_close(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--max-requests", "3")
    sock = server.connect()
    reader = ResponseReader(sock)
    for _ in range(2):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert "connection" not in reader.read()[1]
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, _ = reader.read()
    assert status == 200 and headers["connection"] == "close"
    assert reader.closed()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_memory_limit_recycles_the_worker(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--max-worker-memory", "60")
    first = server.workers()[0]
    for _ in range(10):
        assert requests.get(server.url + "/grow", timeout=10).status_code == 200
    assert server.wait_for_log(r"uses \d+ MiB \(limit 60 MiB\); recycling", timeout=10)
    assert wait_until(lambda: server.workers() and first not in server.workers(), 10)
    assert requests.get(server.url + "/", timeout=10).status_code == 200


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_killed_worker_costs_at_most_its_in_flight_requests(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--workers", "2", workers=2)
    with Traffic(server.url, clients=4) as traffic:
        traffic.wait_for(200)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: len(server.workers()) == 2 and victim not in server.workers(), 10)
        traffic.wait_for(200)
    # Lost: at most the requests that were in that worker at that moment. It held
    # connections from several clients (one request in flight each at most), but
    # never a request the kill happened before or after.
    assert len(traffic.failures) <= traffic.clients, traffic.failures
    assert server.wait_for_log(rf"Worker {victim} died \(signal SIGKILL\)")


def test_repeated_crashes_are_respawned_with_back_off(serve):
    server = serve("basic:app", "--workers", "1")
    for _ in range(5):
        with contextlib.suppress(requests.ConnectionError):
            requests.get(server.url + "/crash", timeout=10)
        assert wait_until(lambda: len(server.workers()) == 1, 20)
    assert server.wait_for_log("Workers keep crashing; next respawn in")
    assert wait_until(lambda: requests.get(server.url + "/hello", timeout=10).ok, 20)
    assert server.proc.poll() is None


def test_timeout_answers_the_stuck_request_and_replaces_the_worker(serve):
    server = serve("supervised:app", "--timeout", "2")
    first = server.workers()[0]
    response = requests.get(server.url + "/sleep?30", timeout=30)
    assert response.status_code == 504
    assert "timed out" in response.text
    assert server.wait_for_log(rf"WORKER TIMEOUT \(pid:{first}\)")
    assert server.wait_for_log(r"GET /sleep\?30")
    assert wait_until(lambda: len(server.workers()) == 1 and first not in server.workers(), 10)
    assert requests.get(server.url + "/", timeout=10).status_code == 200


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_worker_stuck_in_a_busy_loop_is_aborted(serve, worker_class):
    # 3 s, not 1: the boot deadline is --timeout too, and a loaded machine can take
    # more than a second to import gevent and patch it in.
    server = serve("supervised:app", "-k", worker_class, "--timeout", "3")
    first = server.workers()[0]
    response = requests.get(server.url + "/spin?60", timeout=30)
    assert response.status_code == 504
    assert wait_until(lambda: server.workers() and first not in server.workers(), 10)
    # The timeout explains itself: the master names the request, the worker shows its stack.
    log = server.log()
    assert re.search(
        rf"WORKER TIMEOUT \(pid:{first}\) after 3s serving GET /spin\?60 127\.0\.0\.1:\d+ for [\d.]+s", log
    )
    stack = re.search(rf"Worker {first} aborted: .*; where it was:\n(Thread .*?:\n(  .*\n)+)", log)
    assert stack, log
    assert stack.group(1).rstrip().endswith("while time.monotonic() < deadline:")  # the app's loop, last


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_graceful_stop_finishes_a_slow_in_flight_request(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--workers", "1")
    assert server.wait_for_log("Booting worker")
    # A raw socket connects before the signal is sent, so the request cannot
    # race the stop and be refused; the pause lets the worker start the app.
    sock = server.connect()
    sock.sendall(b"GET /sleep?2 HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    server.send_signal(signal.SIGTERM)
    status, headers, body = ResponseReader(sock).read()
    assert (status, body) == (200, b"slept")
    assert headers["connection"] == "close"
    assert server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_graceful_stop_serves_connections_waiting_in_the_backlog(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--workers", "1")
    slow = threading.Thread(target=lambda: requests.get(server.url + "/sleep?1.5", timeout=30))
    slow.start()
    assert server.wait_for_log("Booting worker")
    time.sleep(0.3)  # let the slow request occupy the only worker
    waiting = []
    for _ in range(10):
        sock = server.connect()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        waiting.append(sock)
    server.send_signal(signal.SIGTERM)
    answers = [ResponseReader(sock).read()[0] for sock in waiting]
    slow.join(30)
    assert answers == [200] * 10
    assert server.stop() == 0


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_second_sigterm_makes_the_stop_quick(serve, worker_class):
    server = serve("supervised:app", "-k", worker_class, "--graceful-timeout", "60")
    thread = threading.Thread(target=_swallow, args=(server.url + "/sleep?50",), daemon=True)
    thread.start()

    time.sleep(0.5)
    server.send_signal(signal.SIGTERM)
    assert server.wait_for_log("graceful stop")
    server.send_signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    assert "Second stop signal" in server.log()


def test_stop_signals_arriving_while_the_master_exits_leave_a_clean_exit(serve):
    server = serve("supervised:app", "--workers", "2")
    for _ in range(2000):  # bounded: about 10 s at most
        if server.proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            server.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    assert server.proc.wait(15) == 0
    assert "Shutting down" in server.log()


def _swallow(url: str) -> None:
    with contextlib.suppress(requests.RequestException):
        requests.get(url, timeout=60)


def test_pidfile_is_written_and_removed(serve, tmp_path):
    pidfile = tmp_path / "forkserve.pid"
    server = serve("supervised:app", "--pid", str(pidfile))
    assert pidfile.read_text().strip() == str(server.pid)
    assert server.stop() == 0
    assert not pidfile.exists()


def test_sigusr1_reopens_log_files(serve, tmp_path):
    access = tmp_path / "access.log"
    server = serve("supervised:app", "--access-logfile", str(access))
    requests.get(server.url + "/first", timeout=10)
    assert wait_until(lambda: access.exists() and "/first" in access.read_text(), 5)
    rotated = tmp_path / "access.log.1"
    access.rename(rotated)
    server.send_signal(signal.SIGUSR1)
    assert server.wait_for_log("reopening log files")
    time.sleep(0.3)  # the workers get the signal right after the master logs it
    requests.get(server.url + "/second", timeout=10)
    assert wait_until(lambda: access.exists() and "/second" in access.read_text(), 5)
    assert "/second" not in rotated.read_text()


def test_usr2_upgrade_sequence_loses_nothing(serve, tmp_path):
    pidfile = tmp_path / "app.pid"
    server = serve("supervised:app", "--workers", "2", "--pid", str(pidfile), workers=2)
    old_workers = worker_set(server)
    with Traffic(server.url) as traffic:
        traffic.wait_for(200)
        server.send_signal(signal.SIGUSR2)
        oldbin = Path(str(pidfile) + ".oldbin")
        assert wait_until(lambda: oldbin.exists() and pidfile.exists(), 20), server.log()
        new_master = int(pidfile.read_text())
        assert new_master != server.pid and int(oldbin.read_text()) == server.pid
        assert wait_until(lambda: len(_children(new_master)) == 2, 20)
        assert server.wait_for_log("Booting worker", count=4)
        traffic.wait_for(200)
        server.send_signal(signal.SIGWINCH)
        assert wait_until(lambda: set(server.workers()) == {new_master}, 20)  # only the new master is left
        assert not old_workers & set(_children(new_master))
        traffic.wait_for(200)
        server.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        traffic.wait_for(200)
    assert traffic.failures == []
    assert not oldbin.exists()
    assert int(pidfile.read_text()) == new_master
    answering = {int(pid) for pid in traffic.pids}
    assert answering & set(_children(new_master))
    os.kill(new_master, signal.SIGTERM)
    assert wait_until(lambda: not Path(f"/proc/{new_master}").exists() or _zombie(new_master), 20)


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_reload_with_broken_code_keeps_the_old_workers(serve, tmp_path):
    app_file = tmp_path / "changing.py"
    app_file.write_text(_versioned_app("one"))
    server = serve("changing:app", "--workers", "2", "--pythonpath", str(tmp_path), workers=2)
    old = worker_set(server)
    app_file.write_text("def app(:\n")  # a syntax error
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload failed, keeping the old workers", timeout=20)
    assert worker_set(server) == old or wait_until(lambda: worker_set(server) == old, 10)
    assert requests.get(server.url + "/", timeout=10).text == "one"
    app_file.write_text(_versioned_app("two"))
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Reload complete", timeout=20)
    assert wait_until(lambda: requests.get(server.url + "/", timeout=10).text == "two", 10)
    assert server.proc.poll() is None


def _versioned_app(version: str) -> str:
    return (
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        f"    return [b'{version}']\n"
    )


def test_dev_reload_follows_file_changes_and_survives_syntax_errors(serve, tmp_path):
    for engine in ("poll", "watchfiles"):
        app_file = tmp_path / f"dev_{engine}.py"
        app_file.write_text(_versioned_app("one"))
        server = serve(
            f"dev_{engine}:app",
            "--reload",
            "--reload-engine",
            engine,
            "--pythonpath",
            str(tmp_path),
            "--workers",
            "2",
            workers=2,
        )
        assert server.wait_for_log(
            rf"Watching \d+ files for changes \({'poll' if engine == 'poll' else 'watch'}\)"
        )
        assert requests.get(server.url + "/", timeout=10).text == "one"
        _rewrite(app_file, "def app(:\n")
        assert server.wait_for_log("changed; asking the master to reload", timeout=15)
        assert server.wait_for_log("Reload failed", timeout=15)
        assert requests.get(server.url + "/", timeout=10).text == "one"
        _rewrite(app_file, _versioned_app("two"))
        url = server.url
        assert wait_until(lambda u=url: requests.get(u + "/", timeout=10).text == "two", 20), server.log()
        assert server.stop() == 0


def _rewrite(path: Path, text: str) -> None:
    """Write and move the mtime forward, so even coarse timestamps differ."""
    path.write_text(text)
    stat = path.stat()
    os.utime(path, (stat.st_atime + 2, stat.st_mtime + 2))


def test_hooks_run_and_a_raising_hook_does_not_kill_the_master(serve, tmp_path):
    marks = tmp_path / "marks"
    config = tmp_path / "hooks.conf.py"
    config.write_text(
        f"MARKS = {str(marks)!r}\n"
        "def _mark(name):\n"
        "    with open(MARKS, 'a') as f:\n"
        "        f.write(name + '\\n')\n"
        "def on_starting(server): _mark('on_starting')\n"
        "def when_ready(server): _mark('when_ready')\n"
        "def pre_fork(server, worker): _mark('pre_fork')\n"
        "def post_fork(server, worker): _mark('post_fork')\n"
        "def post_worker_init(worker): _mark('post_worker_init')\n"
        "def child_exit(server, worker): _mark('child_exit')\n"
        "def worker_exit(server, worker): _mark('worker_exit')\n"
        "def nworkers_changed(server, new, old): _mark(f'nworkers_changed {old}->{new}')\n"
        "def on_reload(server): raise RuntimeError('hook bug on purpose')\n"
        "def on_exit(server): _mark('on_exit')\n"
    )
    server = serve("supervised:app", "-c", str(config))
    assert wait_until(lambda: marks.exists() and "when_ready" in marks.read_text(), 10)
    server.send_signal(signal.SIGTTIN)
    assert wait_until(lambda: "nworkers_changed 1->2" in marks.read_text(), 10)
    server.send_signal(signal.SIGHUP)
    assert server.wait_for_log("Hook on_reload raised")
    assert server.wait_for_log("Reload complete", timeout=20)
    assert requests.get(server.url + "/", timeout=10).ok
    assert server.stop() == 0
    seen = marks.read_text().splitlines()
    for name in (
        "on_starting",
        "pre_fork",
        "post_fork",
        "post_worker_init",
        "child_exit",
        "worker_exit",
        "on_exit",
    ):
        assert name in seen, (name, seen)


def test_unknown_signal_numbers_do_not_disturb_the_master(serve):
    server = serve("supervised:app")
    server.send_signal(signal.SIGCHLD)
    assert requests.get(server.url + "/", timeout=10).ok
    assert server.proc.poll() is None
    with socket.create_connection(server.address, timeout=5):
        pass


def test_threads_serve_slow_requests_side_by_side(serve):
    server = serve("supervised:app", "--threads", "4")
    results: list[str] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(requests.get(server.url + "/sleep?1", timeout=30).text)
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    # While four requests sleep in the one worker, its loop still answers others.
    assert requests.get(server.url + "/", timeout=10).text == str(server.workers()[0])
    for thread in threads:
        thread.join(30)
    assert results == ["slept"] * 4
    environ = requests.get(server.url + "/", timeout=10)
    assert environ.ok


def test_threads_time_out_one_request_and_replace_the_worker(serve):
    server = serve("supervised:app", "--threads", "4", "--timeout", "2")
    first = server.workers()[0]
    quick: list[int] = []
    slow = threading.Thread(
        target=lambda: quick.append(requests.get(server.url + "/sleep?1", timeout=30).status_code)
    )
    response_holder: dict[str, requests.Response] = {}
    stuck = threading.Thread(
        target=lambda: response_holder.setdefault("r", requests.get(server.url + "/sleep?60", timeout=30))
    )
    stuck.start()
    time.sleep(0.5)
    slow.start()
    stuck.join(30)
    slow.join(30)
    assert response_holder["r"].status_code == 504
    assert quick == [200]  # the other in-flight request finished normally
    assert server.wait_for_log(r"GET /sleep\?60 aborted past the timeout")
    assert wait_until(lambda: server.workers() and first not in server.workers(), 15)
    assert requests.get(server.url + "/", timeout=10).ok


def test_threads_under_traffic_with_reload(serve):
    server = serve("supervised:app", "--threads", "3", "--workers", "2", workers=2)
    with Traffic(server.url) as traffic:
        traffic.wait_for(200)
        server.send_signal(signal.SIGHUP)
        assert server.wait_for_log("Reload complete", timeout=20)
        traffic.wait_for(200)
    assert traffic.failures == []


def marking_config(tmp_path: Path, *hooks: str) -> tuple[Path, Path]:
    """A config file whose hooks append their name to a marks file."""
    marks = tmp_path / "marks"
    signatures = {
        "worker_int": "worker",
        "worker_abort": "worker",
        "pre_exec": "server",
    }
    lines = [f"MARKS = {str(marks)!r}"]
    for name in hooks:
        lines += [
            f"def {name}({signatures[name]}):",
            "    with open(MARKS, 'a') as f:",
            f"        f.write('{name}\\n')",
        ]
    config = tmp_path / "marks.conf.py"
    config.write_text("\n".join(lines) + "\n")
    return config, marks


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_worker_int_hook_runs_on_a_quick_stop(serve, tmp_path, worker_class):
    config, marks = marking_config(tmp_path, "worker_int")
    server = serve("supervised:app", "-k", worker_class, "-c", str(config), "--workers", "2", workers=2)
    assert server.stop(signal.SIGINT) == 0
    assert marks.read_text().splitlines() == ["worker_int", "worker_int"]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_worker_abort_hook_runs_on_a_timeout(serve, tmp_path, worker_class):
    config, marks = marking_config(tmp_path, "worker_abort")
    server = serve("supervised:app", "-k", worker_class, "-c", str(config), "--timeout", "1")
    assert requests.get(server.url + "/sleep?30", timeout=30).status_code == 504
    assert wait_until(lambda: marks.exists() and marks.read_text() == "worker_abort\n", 10)


def test_pre_exec_hook_and_mainpid_on_upgrade(serve, tmp_path):
    config, marks = marking_config(tmp_path, "pre_exec")
    notify_path = tmp_path / "notify"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.2)
    pidfile = tmp_path / "app.pid"
    server = serve(
        "supervised:app", "-c", str(config), "--pid", str(pidfile), env={"NOTIFY_SOCKET": str(notify_path)}
    )
    server.send_signal(signal.SIGUSR2)
    assert wait_until(lambda: Path(str(pidfile) + ".oldbin").exists() and pidfile.exists(), 20)
    new_master = int(pidfile.read_text())
    messages: list[str] = []

    def heard_mainpid() -> bool:
        with contextlib.suppress(TimeoutError):
            messages.append(notify.recv(4096).decode())
        return any(f"MAINPID={new_master}" in m for m in messages)

    assert wait_until(heard_mainpid, 20), messages
    assert marks.read_text() == "pre_exec\n"
    os.kill(new_master, signal.SIGTERM)
    assert wait_until(lambda: not Path(f"/proc/{new_master}").exists() or _zombie(new_master), 20)
