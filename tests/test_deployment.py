"""Operating-system integration: systemd socket activation and sd_notify, privileges."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests
from conftest import TESTS, group_pids, run_forkserve, wait_until


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def wait_for(self, text: str, timeout: float = 15) -> bool:
        return wait_until(lambda: any(text in m for m in self.collect()), timeout)


def socket_activated(
    tmp_path: Path, names: str, *args: str
) -> tuple[subprocess.Popen[bytes], list[int], Path]:
    """Start forkserve the way systemd does: listening sockets at fd 3.., LISTEN_* set for its pid."""
    listeners = []
    for _ in names.split(":"):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        listeners.append(sock)
    ports = [sock.getsockname()[1] for sock in listeners]
    log = tmp_path / "activated.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(TESTS / "apps"),
        "LISTEN_FDS": str(len(listeners)),
        "LISTEN_FDNAMES": names,
        "NOTIFY_SOCKET": str(tmp_path / "notify"),
    }

    def as_systemd_does() -> None:
        for index, sock in enumerate(listeners):
            os.dup2(sock.fileno(), 3 + index)

    # LISTEN_PID must be the pid of the process that takes the sockets: the
    # shell's pid, kept by exec.
    command = 'LISTEN_PID=$$ exec "$0" -m forkserve "$@"'
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["sh", "-c", command, sys.executable, "basic:app", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=as_systemd_does,
            close_fds=False,
            start_new_session=True,
        )
    for sock in listeners:
        sock.close()
    return proc, ports, log


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(30)
    assert wait_until(lambda: not group_pids(proc.pid), 10)
    return code


def test_socket_activation_and_sd_notify(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    proc, ports, log = socket_activated(tmp_path, "web", "--workers", "2")
    try:
        assert notify.wait_for("READY=1"), log.read_text()
        assert f"Listening at: http://127.0.0.1:{ports[0]}" in log.read_text()
        assert requests.get(f"http://127.0.0.1:{ports[0]}/hello", timeout=10).text == "Hello, world!"
        proc.send_signal(signal.SIGHUP)
        assert notify.wait_for("RELOADING=1")
        assert wait_until(lambda: notify.collect().count("READY=1") >= 2, 20)
    finally:
        assert stop(proc) == 0
    assert any("STOPPING=1" in m for m in notify.collect())


def test_socket_activation_picks_sockets_by_name(tmp_path):
    notify = NotifySocket(tmp_path / "notify")
    proc, ports, log = socket_activated(tmp_path, "admin:web", "--bind", "fd://web")
    try:
        assert notify.wait_for("READY=1"), log.read_text()
        text = log.read_text()
        assert f"Listening at: http://127.0.0.1:{ports[1]}" in text
        assert f"127.0.0.1:{ports[0]}" not in text
        assert requests.get(f"http://127.0.0.1:{ports[1]}/hello", timeout=10).ok
    finally:
        assert stop(proc) == 0


def test_workers_drop_privileges(serve):
    nobody = pwd.getpwnam("nobody")
    # --preload: this machine's Python lives under /root, which "nobody" cannot read.
    server = serve(
        "basic:app", "--preload", "--user", "nobody", "--group", str(nobody.pw_gid), cwd=Path("/tmp")
    )
    worker = server.workers()[0]
    status = Path(f"/proc/{worker}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert gid_line.split()[1:] == [str(nobody.pw_gid)] * 4
    assert os.stat(f"/proc/{server.pid}").st_uid == 0  # the master keeps root to manage sockets
    assert requests.get(server.url + "/hello", timeout=10).text == "Hello, world!"


def test_unknown_user_is_a_boot_failure(tmp_path):
    result = run_forkserve("basic:app", "--user", "no-such-user-here", "--bind", "127.0.0.1:0")
    assert result.returncode == 3
    assert "no-such-user-here" in result.stderr


def test_unix_socket_umask_and_stale_file(serve, tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file left behind by a crashed run
    stale.close()
    server = serve("basic:app", "--bind", f"unix:{path}", "--umask", "007")
    assert oct(path.stat().st_mode & 0o777) == oct(0o770)
    server.stop()
    regular = tmp_path / "not-a-socket"
    regular.write_text("precious")
    result = run_forkserve("basic:app", "--bind", f"unix:{regular}")
    assert result.returncode == 1
    assert "exists and is not a socket" in result.stderr
    assert regular.read_text() == "precious"


def unit_setting(path: Path, key: str) -> str:
    return next(line.split("=", 1)[1] for line in path.read_text().splitlines() if line.startswith(key + "="))


def test_conf_unit_files_start_forkserve_under_socket_activation(tmp_path):
    conf = TESTS.parent / "conf"
    service, socket_unit = conf / "forkserve.service", conf / "forkserve.socket"
    assert unit_setting(service, "Type") == "notify"
    assert unit_setting(service, "ExecReload") == "/bin/kill -HUP $MAINPID"
    name = unit_setting(socket_unit, "FileDescriptorName")
    config = tmp_path / "forkserve.conf.py"
    config.write_text("workers = 2\n")
    args = unit_setting(service, "ExecStart").split()[1:]  # what follows the forkserve binary
    args = [
        {
            "/etc/forkserve/forkserve.conf.py": str(config),
            "/run/forkserve/forkserve.pid": str(tmp_path / "pid"),
        }.get(arg, arg)
        for arg in args
    ]
    notify = NotifySocket(tmp_path / "notify")
    proc, ports, log = socket_activated(tmp_path, name, *args)
    try:
        assert notify.wait_for("READY=1"), log.read_text()
        assert (tmp_path / "pid").read_text().strip() == str(proc.pid)
        assert requests.get(f"http://127.0.0.1:{ports[0]}/hello", timeout=10).ok
    finally:
        assert stop(proc) == 0


def test_conf_logrotate_snippet_rotates_without_losing_lines(serve, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    pidfile = tmp_path / "forkserve.pid"
    snippet = (TESTS.parent / "conf" / "forkserve.logrotate").read_text()
    rendered = tmp_path / "logrotate.conf"
    rendered.write_text(
        snippet.replace("/var/log/forkserve", str(logs)).replace("/run/forkserve/forkserve.pid", str(pidfile))
    )
    server = serve("basic:app", "--access-logfile", str(logs / "access.log"), "--pid", str(pidfile))
    for index in range(5):
        requests.get(f"{server.url}/before-{index}", timeout=10)
    access = logs / "access.log"
    assert wait_until(lambda: access.exists() and "/before-4" in access.read_text(), 10)
    result = subprocess.run(
        ["logrotate", "-f", "-s", str(tmp_path / "state"), str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert server.wait_for_log("reopening log files")
    import time

    time.sleep(0.5)  # workers reopen right after the master
    for index in range(5):
        requests.get(f"{server.url}/after-{index}", timeout=10)
    assert wait_until(lambda: access.exists() and "/after-4" in access.read_text(), 10)
    rotated = (logs / "access.log.1").read_text()
    assert all(f"/before-{i}" in rotated for i in range(5))
    assert "/after-" not in rotated and "/before-" not in access.read_text()
