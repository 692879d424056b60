"""The fleet test bed: forkserve hosts in network namespaces behind a real nginx and HAProxy.

A ``Fleet`` owns, and removes at ``close()`` even after a failure:
- a blackhole route for 198.18.0.0/15 (RFC 2544) in the outer namespace,
  added before anything else (and removed only if it added it), so that no
  packet for a test host can follow the default route off the machine when
  a link or a route goes away;
- one network namespace per host (``fs<pid>h<n>``) joined to the outer
  namespace by a veth pair, the host on 198.18.X.(4n+2), the outer end on
  198.18.X.(4n+1), a /30 each; the namespace has no default route;
- per host, a small supervisor (a child subreaper, as systemd is for a
  service) that runs ``ip netns exec NS python -m forkserve`` in a session
  of its own and reaps everything the host leaves behind, upgraded masters
  included;
- nginx (conf/nginx-fleet.conf) and HAProxy (conf/haproxy.cfg) in the outer
  namespace, on loopback sockets the test binds to port 0 and hands over;
- ``Load``: client threads sending GETs and POSTs, keep-alive and not,
  through both balancers, bounded in count and time, counting failures per
  kind.

Only processes started here are ever signalled, by pid or process group.
Links are cut from inside a host's namespace only, never on the outer side.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from procs import group_pids, launch_nginx, wait_until

TESTS = Path(__file__).resolve().parent
CONF = TESTS.parent / "conf"
TEST_RANGE = "198.18.0.0/15"
PORT = 8000
SHUTDOWN_DELAY = 2.0  # above HAProxy's fall x inter (2 x 0.5 s) with room to spare
GRACEFUL_TIMEOUT = 10.0
KEEP_ALIVE = 75.0  # above both balancers' idle timeouts (60 s)
KINDS = ("GET keep-alive", "GET close", "POST keep-alive", "POST close")
FLEETS = itertools.count()
REQUEST_TIMEOUT = 40.0  # above the balancers' 35 s read timeouts: their answer comes first

# The supervisor each host runs under: a child subreaper (as systemd is for a
# service), so a master left behind by a USR2 upgrade is reaped here, not
# left a zombie under this machine's PID 1. forkserve gets a session of its
# own, so killing its process group leaves the supervisor to reap.
SUPERVISOR = """
import ctypes, os, sys
ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
child = os.fork()
if child == 0:
    os.setsid()
    os.execvp(sys.argv[1], sys.argv[1:])
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
    except InterruptedError:
        pass
"""

APP = '''"""The fleet's app: every response says which app version, host and config served it."""
import hashlib
import os

VERSION = "{version}"


def app(environ, start_response):
    body = environ["wsgi.input"].read() if environ["REQUEST_METHOD"] == "POST" else b""
    host = os.environ.get("FLEET_HOST", "?")
    config = os.environ.get("FLEET_CONFIG", "?")
    text = f"{{VERSION}} {{host}} {{config}} {{hashlib.sha256(body).hexdigest()}}\\n".encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", str(len(text))),
            ("X-App-Version", VERSION),
            ("X-Host", host),
            ("X-Config", config),
        ],
    )
    return [text]
'''

HOST_CONFIG = """# forkserve on fleet host {name}, config generation {generation}
import os

bind = ["{address}:{port}"]
workers = 2
health_path = "/healthz"
shutdown_delay = {delay}
graceful_timeout = {graceful}
keepalive = {keepalive}
pidfile = "{dir}/forkserve.pid"
control_socket = "{dir}/forkserve.ctl"
GENERATION = "{generation}"


def post_worker_init(worker):
    # The app tags its responses with the config generation its worker runs.
    os.environ["FLEET_CONFIG"] = GENERATION
"""


class FleetUnavailable(RuntimeError):
    """This machine cannot build the test bed (not root, no ip netns, no balancer)."""


def run(*args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One bounded command; its output in the error when it fails."""
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def in_ns(ns: str, *args: str, timeout: float = 10.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *args, timeout=timeout, check=check)


def require_test_bed() -> None:
    """Raise FleetUnavailable with what is missing; the tests fail on it rather than skip."""
    if os.geteuid() != 0:
        raise FleetUnavailable("the fleet test bed needs root (network namespaces, veth, routes)")
    for tool in ("ip", "tc", "nginx", "haproxy"):
        if shutil.which(tool) is None:
            raise FleetUnavailable(
                f"{tool} is missing: run tests/install.sh (iproute2, nginx-light, haproxy)"
            )
    probe = run("ip", "netns", "list", check=False)
    if probe.returncode != 0:
        raise FleetUnavailable(f"ip netns does not work here: {probe.stderr.strip()}")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# -- the network --------------------------------------------------------------


class Blackhole:
    """The route that keeps every test address on this machine."""

    def __init__(self) -> None:
        self.added = False

    def add(self) -> None:
        done = run("ip", "route", "add", "blackhole", TEST_RANGE, check=False)
        if done.returncode != 0 and "File exists" not in done.stderr:
            raise RuntimeError(f"cannot add the blackhole route for {TEST_RANGE}: {done.stderr.strip()}")
        self.added = done.returncode == 0
        assert "blackhole" in run("ip", "route", "show", TEST_RANGE).stdout

    def remove(self) -> None:
        if self.added:
            run("ip", "route", "del", "blackhole", TEST_RANGE, check=False)
            self.added = False


def free_subnet() -> int:
    """A third octet X with nothing in 198.18.X.0/24 yet (routes or addresses), tried from our pid."""
    for step in range(256):
        octet = (os.getpid() + step) % 256
        prefix = f"198.18.{octet}.0/24"
        if not run("ip", "-4", "route", "show", "root", prefix).stdout.strip() and not (
            run("ip", "-4", "-o", "addr", "show", "to", prefix).stdout.strip()
        ):
            return octet
    raise RuntimeError("no free /24 left in 198.18.0.0/16")


def assert_no_gateway(address: str) -> None:
    """The outer namespace reaches a test address directly or not at all, never via a gateway."""
    route = run("ip", "route", "get", address, check=False)
    text = route.stdout + route.stderr
    assert " via " not in text, f"the route to {address} goes through a gateway: {text.strip()}"


# -- hosts --------------------------------------------------------------------


@dataclass
class Host:
    """One forkserve host: a namespace, a veth pair, and the forkserve runs started in it."""

    name: str
    index: int
    octet: int
    root: Path
    tag: str
    version: str = "v1"
    generation: str = "c1"
    supervisors: list[subprocess.Popen[bytes]] = field(default_factory=list)
    groups: set[int] = field(default_factory=set)  # the process group of every forkserve run
    runs: int = 0
    created: bool = False
    cut: bool = False

    @property
    def ns(self) -> str:
        return f"fs{self.tag}h{self.index}"

    @property
    def outer_if(self) -> str:
        return f"fs{self.tag}o{self.index}"

    @property
    def inner_if(self) -> str:
        return f"fs{self.tag}i{self.index}"

    @property
    def address(self) -> str:
        return f"198.18.{self.octet}.{4 * self.index + 2}"

    @property
    def outer_address(self) -> str:
        return f"198.18.{self.octet}.{4 * self.index + 1}"

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{PORT}"

    @property
    def dir(self) -> Path:
        return self.root / self.name

    # -- the link

    def create(self) -> None:
        """The namespace and its veth pair; the outer end is never touched again until removal."""
        self.dir.mkdir(parents=True, exist_ok=True)
        run("ip", "netns", "add", self.ns)
        self.created = True
        run("ip", "link", "add", self.outer_if, "type", "veth", "peer", "name", self.inner_if)
        run("ip", "link", "set", self.inner_if, "netns", self.ns)
        run("ip", "addr", "add", f"{self.outer_address}/30", "dev", self.outer_if)
        run("ip", "link", "set", self.outer_if, "up")
        in_ns(self.ns, "ip", "link", "set", "lo", "up")
        in_ns(self.ns, "ip", "addr", "add", f"{self.address}/30", "dev", self.inner_if)
        in_ns(self.ns, "ip", "link", "set", self.inner_if, "up")
        assert_no_gateway(self.address)

    def cut_link(self) -> None:
        """Take the link down from inside the host's namespace, as a pulled cable would."""
        self.cut = True
        in_ns(self.ns, "ip", "link", "set", self.inner_if, "down")
        assert_no_gateway(self.address)

    def restore_link(self) -> None:
        in_ns(self.ns, "ip", "link", "set", self.inner_if, "up")
        self.cut = False
        assert_no_gateway(self.address)

    def remove(self) -> None:
        """Deleting the namespace deletes the inner veth and with it the pair."""
        if self.created:
            run("ip", "netns", "del", self.ns, check=False)
            run("ip", "link", "del", self.outer_if, check=False)  # only if the pair outlived its peer
            self.created = False

    # -- forkserve

    def write_app(self, version: str) -> None:
        self.version = version
        (self.dir / "fleet_app.py").write_text(APP.format(version=version))

    def write_config(self, generation: str) -> None:
        self.generation = generation
        (self.dir / "forkserve.conf.py").write_text(
            HOST_CONFIG.format(
                name=self.name,
                generation=generation,
                address=self.address,
                port=PORT,
                delay=SHUTDOWN_DELAY,
                graceful=GRACEFUL_TIMEOUT,
                keepalive=KEEP_ALIVE,
                dir=self.dir,
            )
        )

    @property
    def log_path(self) -> Path:
        return self.dir / f"forkserve-{self.runs}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        """Start forkserve under its supervisor and wait until it answers its health path."""
        self.runs += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLEET_HOST": self.name}
        env.pop("XDG_RUNTIME_DIR", None)
        (self.dir / "forkserve.pid").unlink(missing_ok=True)
        argv = [sys.executable, "-m", "forkserve", "fleet_app:app", "-c", str(self.dir / "forkserve.conf.py")]
        with open(self.log_path, "wb") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-c", SUPERVISOR, "ip", "netns", "exec", self.ns, *argv],
                cwd=self.dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.supervisors.append(supervisor)
        assert wait_until(lambda: self.pidfile_pid() or supervisor.poll() is not None, 15), self.log()
        master = self.pidfile_pid()
        assert master, f"{self.name} did not start:\n{self.log()}"
        self.groups.add(os.getpgid(master))
        self.wait_serving(master)

    def pidfile_pid(self, suffix: str = "") -> int:
        try:
            return int((self.dir / f"forkserve.pid{suffix}").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def master(self) -> int:
        """The master now serving: the pid file's, if that process lives."""
        pid = self.pidfile_pid()
        return pid if pid and alive(pid) else 0

    def workers(self, master: int) -> list[int]:
        """The master's workers: its children, less a new master started by USR2."""
        return [pid for pid in children(master) if alive(pid) and pid != self.pidfile_pid()]

    def booted(self, master: int) -> int:
        log = self.log()
        return sum(f"Booting worker with pid: {pid}\n" in log for pid in self.workers(master))

    def wait_serving(self, master: int, timeout: float = 20.0) -> None:
        """Two workers of this master have booted and the health path says 200."""
        ok = wait_until(
            lambda: (self.booted(master) >= 2 and self.health() == 200) or not alive(master), timeout
        )
        assert ok and alive(master), f"{self.name} (master {master}) is not serving:\n{self.log()[-3000:]}"

    def health(self) -> int:
        """The health path's status as a balancer's check sees it (0: no answer)."""
        try:
            conn = http.client.HTTPConnection(self.address, PORT, timeout=1)
            conn.request("GET", "/healthz", headers={"Connection": "close"})
            status = conn.getresponse().status
            conn.close()
            return status
        except OSError:
            return 0

    def running(self) -> bool:
        return bool(self.master())

    def terminate(self, timeout: float = SHUTDOWN_DELAY + GRACEFUL_TIMEOUT + 5) -> float:
        """SIGTERM to the master (graceful, after the shutdown delay); seconds until it was gone."""
        master = self.master()
        assert master, f"{self.name} has no master to stop"
        began = time.monotonic()
        os.kill(master, signal.SIGTERM)
        assert wait_until(lambda: not alive(master), timeout), f"{self.name} did not stop:\n{self.log()}"
        return time.monotonic() - began

    def kill(self) -> None:
        """SIGKILL to every process of every forkserve run of this host (master and workers at once)."""
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        assert wait_until(lambda: not self.survivors(), 5), (
            f"{self.name}: {self.survivors()} survived SIGKILL"
        )

    def survivors(self) -> list[int]:
        return [pid for pgid in self.groups for pid in group_pids(pgid)]

    def restart(self) -> None:
        """A plain stop and start, as systemd's restart does: the new code and config are read."""
        self.terminate()
        self.start()

    def upgrade(self, version: str) -> None:
        """The USR2 sequence of the README with new code on disk: USR2, wait, WINCH, TERM the old."""
        old = self.master()
        assert old, f"{self.name} has no master to upgrade"
        self.write_app(version)
        os.kill(old, signal.SIGUSR2)
        assert wait_until(lambda: self.pidfile_pid(".oldbin") == old and self.master() not in (0, old), 15), (
            f"{self.name}: no new master after USR2:\n{self.log()[-3000:]}"
        )
        new = self.master()
        self.groups.add(os.getpgid(new))
        self.wait_serving(new)
        old_workers = self.workers(old)
        os.kill(old, signal.SIGWINCH)
        assert wait_until(lambda: not any(alive(pid) for pid in old_workers), GRACEFUL_TIMEOUT + 5), (
            f"{self.name}: old workers {old_workers} did not leave:\n{self.log()[-3000:]}"
        )
        # The old master has no workers left; its shutdown delay and exit
        # happen while the next host upgrades.
        os.kill(old, signal.SIGTERM)

    def reload(self, generation: str) -> None:
        """HUP with a new config file; returns once the new workers serve and the old have left."""
        master = self.master()
        before = set(self.workers(master))
        done = self.log().count("Reload complete")
        self.write_config(generation)
        os.kill(master, signal.SIGHUP)
        assert wait_until(lambda: self.log().count("Reload complete") > done, 20), self.log()[-3000:]
        assert wait_until(lambda: not before & set(self.workers(master)), GRACEFUL_TIMEOUT + 5), (
            f"{self.name}: old workers did not leave after HUP"
        )

    def shutdown(self) -> list[int]:
        """Kill everything this host started (its state is thrown away); the pids that survived."""
        with contextlib.suppress(AssertionError):
            self.kill()
        for supervisor in self.supervisors:
            try:
                supervisor.wait(10)
            except subprocess.TimeoutExpired:
                supervisor.kill()
                supervisor.wait(5)
        return self.survivors()


# -- balancers ----------------------------------------------------------------


@dataclass
class Balancer:
    """nginx or HAProxy, in the outer namespace, with its own prefix for config, pid and logs."""

    name: str
    prefix: Path
    port: int
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

    def logs(self) -> str:
        return "".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.prefix.glob("*.log"))
        )


def render(template: Path, values: dict[str, str], hosts: list[Host]) -> str:
    """Fill the @WORDS@ of a conf file; a line holding @HOST@ is repeated once per host."""
    lines = []
    for line in template.read_text().splitlines():
        if "@HOST@" in line:
            lines += [line.replace("@HOST@", host.endpoint).replace("@NAME@", host.name) for host in hosts]
        else:
            lines.append(line)
    text = "\n".join(lines) + "\n"
    for word, value in values.items():
        text = text.replace(word, value)
    assert not re.search(r"@[A-Z_]+@", text), "a placeholder was left unfilled"
    return text


def listening_socket() -> socket.socket:
    """A loopback socket on a port the kernel picks, to hand to a balancer (no port is guessed)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def start_nginx(prefix: Path, hosts: list[Host]) -> Balancer:
    prefix.mkdir(parents=True)
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = prefix / "nginx.conf"
    config.write_text(
        render(CONF / "nginx-fleet.conf", {"@PREFIX@": str(prefix), "@LISTEN@": f"127.0.0.1:{port}"}, hosts)
    )
    proc = launch_nginx(prefix, config, [sock])
    sock.close()
    return Balancer("nginx", prefix, port, proc)


def start_haproxy(prefix: Path, hosts: list[Host]) -> Balancer:
    prefix.mkdir(parents=True)
    sock = listening_socket()
    port = sock.getsockname()[1]
    config = prefix / "haproxy.cfg"
    config.write_text(
        render(CONF / "haproxy.cfg", {"@PREFIX@": str(prefix), "@LISTEN@": f"fd@{sock.fileno()}"}, hosts)
    )
    with open(prefix / "haproxy.log", "wb") as log:
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=[sock.fileno()],
            start_new_session=True,
        )
    sock.close()
    return Balancer("haproxy", prefix, port, proc)


def haproxy_states(balancer: Balancer) -> dict[str, str]:
    """Each server's status (UP, DOWN, ...) from HAProxy's stats socket."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(balancer.prefix / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
    except OSError:
        return {}
    lines = data.decode().splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    states = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("pxname") == "forkserve" and row.get("svname") not in ("FRONTEND", "BACKEND"):
            states[row["svname"]] = row["status"].split()[0]
    return states


# -- load ---------------------------------------------------------------------


@dataclass
class Tally:
    sent: int = 0
    failed: int = 0
    slowest: float = 0.0  # seconds, the longest a request of this kind took, failed or not
    reasons: list[str] = field(default_factory=list)


@dataclass
class Served:
    at: float
    balancer: str
    version: str
    host: str
    config: str


class Load:
    """Client threads through each balancer, one per kind, until stopped or a bound is hit.

    A request fails when it raises, gets a status other than 200, or a
    body that does not echo what was sent (POSTs send a fresh random body
    and expect its sha256 back).
    """

    def __init__(
        self,
        balancers: list[Balancer],
        clients_per_kind: int = 1,
        pause: float = 0.004,
        max_seconds: float = 90.0,
        max_requests: int = 50_000,
    ) -> None:
        self.pause, self.max_seconds, self.max_requests = pause, max_seconds, max_requests
        self.tallies = {(b.name, kind): Tally() for b in balancers for kind in KINDS}
        self.served: list[Served] = []
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(b.name, b.port, kind), daemon=True)
            for b in balancers
            for kind in KINDS
            for _ in range(clients_per_kind)
        ]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT + 5)

    def ok(self) -> int:
        with self._lock:
            return len(self.served)

    def wait_for(self, count: int, timeout: float = 20.0) -> None:
        """Block until ``count`` more requests succeeded (bounded)."""
        target = self.ok() + count
        assert wait_until(lambda: self.ok() >= target, timeout), f"load stalled: {self.failures()}"

    def run_for(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def failures(self) -> dict[tuple[str, str], list[str]]:
        return {key: tally.reasons for key, tally in self.tallies.items() if tally.failed}

    def since(self, at: float) -> list[Served]:
        with self._lock:
            return [s for s in self.served if s.at >= at]

    def _client(self, balancer: str, port: int, kind: str) -> None:
        method, mode = kind.split()
        tally = self.tallies[(balancer, kind)]
        conn: http.client.HTTPConnection | None = None
        for _ in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() - self.started > self.max_seconds:
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
            body = os.urandom(512) if method == "POST" else b""
            headers = {"Connection": "close"} if mode == "close" else {}
            served, reason = None, ""
            began = time.monotonic()
            try:
                conn.request(method, f"/{kind.replace(' ', '-')}", body=body or None, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.status != 200:
                    reason = f"status {response.status}"
                elif data.split()[-1].decode() != hashlib.sha256(body).hexdigest():
                    reason = f"wrong body {data[:80]!r}"
                else:
                    version, host, config = data.split()[:3]
                    served = Served(
                        time.monotonic(), balancer, version.decode(), host.decode(), config.decode()
                    )
            except (OSError, http.client.HTTPException, IndexError) as exc:
                reason = repr(exc)
                conn.close()
                conn = None
            if mode == "close" and conn is not None:
                conn.close()
                conn = None
            with self._lock:
                tally.sent += 1
                tally.slowest = max(tally.slowest, time.monotonic() - began)
                if served is None:
                    tally.failed += 1
                    if len(tally.reasons) < 5:
                        tally.reasons.append(reason)
                else:
                    self.served.append(served)
            self._stop.wait(self.pause)
        if conn is not None:
            conn.close()


# -- the fleet ----------------------------------------------------------------


class Fleet:
    """Three running hosts, a fourth that joins later, and both balancers listing all four."""

    def __init__(self, root: Path, hosts: int = 3, spare: int = 1) -> None:
        self.root = root
        # Unique per fleet and short: interface names hold 15 bytes at most.
        self.tag = f"{os.getpid()}{'abcdefghij'[next(FLEETS) % 10]}"
        self.blackhole = Blackhole()
        self.hosts: list[Host] = []
        self.balancers: list[Balancer] = []
        self.size, self.spare = hosts, spare

    def open(self) -> Fleet:
        require_test_bed()
        self.blackhole.add()  # before any address of the range exists
        octet = free_subnet()
        self.hosts = [
            Host(f"h{n}", n, octet, self.root, self.tag) for n in range(1, self.size + self.spare + 1)
        ]
        for host in self.hosts:
            host.create()
            host.write_app("v1")
            host.write_config("c1")
        for host in self.serving_hosts():
            host.start()
        self.balancers = [
            start_nginx(self.root / "nginx", self.hosts),
            start_haproxy(self.root / "haproxy", self.hosts),
        ]
        self.wait_balanced()
        return self

    def serving_hosts(self) -> list[Host]:
        return self.hosts[: self.size]

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    def wait_balanced(self, timeout: float = 20.0) -> None:
        """Both balancers answer, and HAProxy's checks see the running hosts UP, the others DOWN."""
        for balancer in self.balancers:
            assert wait_until(lambda b=balancer: self._answers(b) or b.proc.poll() is not None, 15), (
                balancer.logs()
            )
            assert balancer.proc.poll() is None, balancer.logs()
        up = {host.name for host in self.hosts if host.running() and not host.cut}
        assert wait_until(lambda: self.haproxy_up() == up, timeout), (
            f"HAProxy sees {haproxy_states(self.balancers[1])}, want {sorted(up)} UP"
        )

    def haproxy_up(self) -> set[str]:
        return {name for name, state in haproxy_states(self.balancers[1]).items() if state == "UP"}

    def _answers(self, balancer: Balancer) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", balancer.port, timeout=5)
            conn.request("GET", "/")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def heal(self) -> None:
        """Back to the starting shape: links up, the three hosts serving, the spare down."""
        for host in self.hosts:
            if host.cut:
                host.restore_link()
        for host in self.serving_hosts():
            if not host.running():
                host.start()
        self.wait_balanced()

    def load(self, pause: float = 0.004, max_seconds: float = 90.0) -> Load:
        return Load(self.balancers, pause=pause, max_seconds=max_seconds)

    def close(self) -> list[int]:
        """Remove everything, whatever state a failed test left; the pids that had to be killed."""
        leftovers: list[int] = []
        try:
            for balancer in self.balancers:
                balancer.stop()
            for host in self.hosts:
                leftovers += host.shutdown()
        finally:
            for host in self.hosts:
                host.remove()
            self.blackhole.remove()
        return leftovers


@contextlib.contextmanager
def fleet(root: Path) -> Iterator[Fleet]:
    bed = Fleet(root)
    try:
        yield bed.open()
    finally:
        bed.close()


def failover_table(results: dict[str, Load]) -> list[str]:
    """Scenario x balancer rows: failed of sent per kind, and the slowest request in seconds."""
    lines = [f"{'scenario':<24} {'balancer':<8} " + " ".join(f"{kind:>16}" for kind in KINDS) + "  slowest"]
    for scenario, load in results.items():
        for balancer in sorted({name for name, _ in load.tallies}, reverse=True):
            tallies = [load.tallies[(balancer, kind)] for kind in KINDS]
            cells = " ".join(f"{f'{t.failed} of {t.sent}':>16}" for t in tallies)
            slowest = max(t.slowest for t in tallies)
            lines.append(f"{scenario:<24} {balancer:<8} {cells}  {slowest:6.2f}s")
    return lines


def version_mix(served: list[Served], slices: int = 4) -> list[Counter[str]]:
    """The versions served in successive equal slices of the requests, oldest first."""
    size = max(1, len(served) // slices)
    return [Counter(s.version for s in served[i : i + size]) for i in range(0, size * slices, size)]
