"""--workers-max: the pool grows one worker at a time under load and shrinks back when quiet."""

from __future__ import annotations

import re
import threading
import time

import requests
from conftest import wait_until
from traffic import PoolSampler, Traffic

SCALING_UP = re.compile(r"Scaling up to (\d+) workers?: ")
SCALING_DOWN = re.compile(r"Scaling down to (\d+) workers?: ")


class LightClient:
    """One client, a quick request every ~50 ms: traffic that never puts the pool under pressure."""

    def __init__(self, url: str, max_seconds: float = 60.0) -> None:
        self.url = url
        self.max_seconds = max_seconds
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LightClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    response = session.get(self.url + "/?0", timeout=10)
                    if response.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"status {response.status_code}")
                except requests.RequestException as exc:
                    self.failures.append(repr(exc))
                self._stop.wait(0.05)


def test_pool_grows_under_a_burst_and_shrinks_when_quiet(serve):
    server = serve("slow_pid:app", "--workers", "1", "--workers-max", "3", "--scale-down-after", "3")
    assert wait_until(lambda: len(server.workers()) == 1, 10)
    with PoolSampler(server) as sampler:
        # A burst: 8 clients, each request sleeping 0.3 s in a worker, for 5 s.
        with Traffic(server.url, clients=8, path="/?0.3") as burst:
            time.sleep(5)
        grown = max(sampler.counts)
        burst_pids = {int(pid) for pid in burst.pids}
        assert server.wait_for_log("Scaling up to 2 workers", timeout=1), server.log()
        # Quiet: one light, paced client goes on while the extra workers are retired.
        with LightClient(server.url) as light:
            shrunk = wait_until(lambda: len(server.workers()) == 1, 20)
            assert wait_until(lambda: light.ok >= 20, 15)
    log = server.log()
    assert burst.failures == [], burst.failures[:5]
    assert burst.ok > 0
    assert grown >= 2, f"the pool never grew during the burst:\n{log}"
    assert len(burst_pids) >= 2, "requests were answered by one worker only"
    assert max(sampler.counts) <= 3, f"the pool held {max(sampler.counts)} workers (max 3)"
    assert shrunk, f"the pool did not shrink back to 1 worker:\n{log}"
    assert light.failures == [], light.failures[:5]
    ups = [int(k) for k in SCALING_UP.findall(log)]
    downs = [int(k) for k in SCALING_DOWN.findall(log)]
    # One worker at a time: up 2, 3, ... then down ..., 2, 1, never past the bounds.
    assert ups == list(range(2, 2 + len(ups))) and max(ups) <= 3, ups
    assert downs == list(range(max(ups) - 1, 0, -1)), (ups, downs)
    assert log.index("Scaling down") > log.rindex("Scaling up")
    assert server.proc.poll() is None


def test_workers_max_below_workers_is_refused(serve):
    server = serve("slow_pid:app", "--workers", "3", "--workers-max", "2", ready=False)
    assert wait_until(lambda: server.proc.poll() is not None, 20), "forkserve did not refuse the settings"
    assert server.proc.returncode == 2
    lines = server.log().strip().splitlines()
    assert len(lines) == 1 and "workers_max" in lines[0], lines


def test_quiet_pool_stays_at_its_minimum(serve):
    server = serve("slow_pid:app", "--workers", "2", "--workers-max", "4", workers=2)
    assert wait_until(lambda: len(server.workers()) == 2, 10)
    with PoolSampler(server) as sampler:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # an occasional request: quiet, not idle
            assert requests.get(server.url + "/?0", timeout=10).ok
            time.sleep(0.3)
    assert sampler.counts and set(sampler.counts) == {2}, sorted(set(sampler.counts))
    assert "Scaling" not in server.log()
