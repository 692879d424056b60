"""Several forkserve hosts behind a real nginx and a real HAProxy: failover, upgrades, reloads.

The test bed (tests/fleet.py) runs three hosts in network namespaces, a
fourth listed by both balancers but down until scenario 6, and keeps load
flowing through both balancers at once (GET and POST, keep-alive and
Connection: close) while one thing happens to the fleet. Every scenario
reports its failed requests per balancer and kind; the table is printed at
the end of the run. Needs root and iproute2, nginx and haproxy
(tests/install.sh); without them the tests fail, they never skip.

Expected: no failed request when a host is stopped gracefully, upgraded,
reloaded or joins. When a host is killed or its link is cut, only requests
that were in flight on it may fail, and no GET does: both balancers retry
idempotent requests on another host.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet import (
    SHUTDOWN_DELAY,
    Fleet,
    FleetUnavailable,
    Load,
    alive,
    failover_table,
    fleet,
    require_test_bed,
    wait_until,
)

CUT_SECONDS = 4.0
RESULTS: dict[str, Load] = {}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    try:
        require_test_bed()
    except FleetUnavailable as error:
        pytest.fail(f"the fleet test bed cannot run here: {error}")
    with fleet(tmp_path_factory.mktemp("fleet")) as built:
        yield built
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None and RESULTS:  # the table is the point of the run: show it even when all pass
        with capture.global_and_fixture_disabled():
            print("\n" + "\n".join(failover_table(RESULTS)))


@pytest.fixture
def hosts(bed: Fleet) -> Fleet:
    """The fleet as each scenario starts it: h1-h3 serving, h4 down, every link up."""
    bed.heal()
    return bed


def failed(load: Load) -> dict[tuple[str, str], int]:
    return {key: tally.failed for key, tally in load.tallies.items() if tally.failed}


def assert_none_failed(load: Load) -> None:
    """Not one request failed, of any kind, through either balancer.

    nginx does not probe the health path, so a host that stops must refuse
    new connections the moment it stops accepting (the workers and the
    master close their listening sockets): nginx then tries the next host
    even for a POST, which it could not retry once sent.
    """
    lost = failed(load)
    assert not lost, f"failed requests: {lost}; reasons: {load.failures()}"


def assert_only_in_flight(load: Load) -> None:
    """No GET failed (the balancers retry them); a POST only if it was in flight (one per client)."""
    for (balancer, kind), count in failed(load).items():
        assert kind.startswith("POST"), f"{balancer} lost {count} {kind}: {load.failures()}"
        assert count <= 1, f"{balancer} lost {count} {kind}, more than were in flight: {load.failures()}"


def hosts_served(load: Load, since: float) -> Counter[tuple[str, str]]:
    return Counter((s.balancer, s.host) for s in load.since(since))


def test_1_graceful_stop_is_taken_out_of_rotation_first(hosts: Fleet) -> None:
    h1 = hosts.host("h1")
    with hosts.load() as load:
        RESULTS["1 SIGTERM (graceful)"] = load
        load.wait_for(200)
        master = h1.master()
        signalled = time.monotonic()
        os.kill(master, signal.SIGTERM)
        # HAProxy's checks see the 503 and take h1 out while it still accepts.
        assert wait_until(lambda: "h1" not in hosts.haproxy_up(), SHUTDOWN_DELAY), "HAProxy kept h1"
        taken_out = time.monotonic() - signalled
        assert "Shutdown delay over" not in h1.log(), f"h1 stopped accepting {taken_out:.2f}s in, too soon"
        assert wait_until(lambda: not alive(master), 20), h1.log()
        stopped = time.monotonic()
        load.wait_for(300)
    after = hosts_served(load, stopped)
    assert not any(host == "h1" for _, host in after), after
    assert {balancer for balancer, _ in after} == {"nginx", "haproxy"}
    assert_none_failed(load)


def test_2_killed_host_loses_only_requests_in_flight(hosts: Fleet) -> None:
    h2 = hosts.host("h2")
    with hosts.load() as load:
        RESULTS["2 SIGKILL"] = load
        load.wait_for(200)
        h2.kill()
        killed = time.monotonic()
        load.wait_for(300)
        assert wait_until(lambda: "h2" not in hosts.haproxy_up(), 5)
        load.wait_for(100)
    assert_only_in_flight(load)
    assert not any(host == "h2" for _, host in hosts_served(load, killed + 0.5))


def test_3_cut_link_loses_only_requests_in_flight(hosts: Fleet) -> None:
    h3 = hosts.host("h3")
    with hosts.load() as load:
        RESULTS["3 link cut"] = load
        load.wait_for(200)
        h3.cut_link()  # asserts the outer route to h3 goes through no gateway
        cut = time.monotonic()
        assert wait_until(lambda: "h3" not in hosts.haproxy_up(), CUT_SECONDS), "HAProxy kept h3"
        load.run_for(CUT_SECONDS - (time.monotonic() - cut))
        during = hosts_served(load, cut + 1.0)
        h3.restore_link()
        load.wait_for(200)
    assert_only_in_flight(load)
    # HAProxy's checks took h3 out, so its clients went on. nginx has no
    # checks: a request it sent on an open connection to h3 gets no answer
    # and no error until the link is back (or proxy_read_timeout), so its
    # clients may all be waiting there; they resume once the link is back.
    assert any(balancer == "haproxy" for balancer, _ in during), f"HAProxy stalled in the cut: {during}"


def test_4_rolling_upgrade_moves_every_response_to_the_new_version(hosts: Fleet) -> None:
    serving = hosts.serving_hosts()
    marks = [0.0]
    with hosts.load() as load:
        RESULTS["4 rolling upgrade"] = load
        load.wait_for(200)
        marks.append(time.monotonic())
        for host in serving:  # the USR2 sequence, host by host
            host.upgrade("v2")
            load.wait_for(100)
        marks.append(time.monotonic())
        load.wait_for(200)
        marks.append(time.monotonic())
        for host in serving:  # a plain stop and start, as under systemd
            host.write_app("v3")
            host.restart()
            load.wait_for(100)
        marks.append(time.monotonic())
        load.wait_for(200)
    marks.append(float("inf"))
    mix = [{s.version for s in load.served if a <= s.at < b} for a, b in itertools.pairwise(marks)]
    # before, during USR2, between, during restarts, after
    assert mix[0] == {"v1"} and mix[1] >= {"v1", "v2"} and mix[2] == {"v2"}, mix
    assert mix[3] >= {"v2", "v3"} and mix[4] == {"v3"}, mix
    assert_none_failed(load)


def test_5_rolling_config_reload(hosts: Fleet) -> None:
    serving = hosts.serving_hosts()
    generation = "c-reload"
    with hosts.load() as load:
        RESULTS["5 rolling reload (HUP)"] = load
        load.wait_for(200)
        started = time.monotonic()
        old = {s.config for s in load.served}
        for host in serving:
            host.reload(generation)
            load.wait_for(100)
        reloaded = time.monotonic()
        load.wait_for(200)
    assert_none_failed(load)
    assert generation not in old
    assert {s.config for s in load.since(started)} >= {generation, *old}
    assert {s.config for s in load.since(reloaded)} == {generation}


def test_6_new_host_joins_while_traffic_flows(hosts: Fleet) -> None:
    h4 = hosts.host("h4")
    with hosts.load() as load:
        RESULTS["6 host joins"] = load
        load.wait_for(200)
        assert not any(host == "h4" for _, host in hosts_served(load, 0))
        h4.start()
        joined = time.monotonic()
        # nginx tries h4 again after its fail_timeout (5 s); HAProxy after rise x inter.
        assert wait_until(
            lambda: {("nginx", "h4"), ("haproxy", "h4")} <= set(hosts_served(load, joined)), 15
        ), hosts_served(load, joined)
        load.wait_for(200)
    assert_none_failed(load)


def test_teardown_leaves_nothing_behind(tmp_path: Path) -> None:
    """A fleet that is closed removes its namespaces, links and processes (the blackhole if it added it)."""
    built = Fleet(tmp_path, hosts=1, spare=0)
    try:
        built.open()
        names = [host.ns for host in built.hosts]
        groups = [group for host in built.hosts for group in host.groups]
    finally:
        leftovers = built.close()
    assert not leftovers
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    assert not any(name in listed for name in names)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
    assert f"fs{built.tag}" not in links
    assert groups
