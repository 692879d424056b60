"""The heartbeat region shared by the master and the workers (no servers: two processes and a page)."""

from __future__ import annotations

import os
import time

from forkserve.heartbeat import SLOTS, Heartbeats


def test_a_beat_is_never_read_half_written():
    """A worker beating while the master reads must never look like a stamp of 0 (a false timeout)."""
    heartbeat = Heartbeats().claim()
    child = os.fork()
    if child == 0:  # the worker: beat as fast as it can for a second
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            heartbeat.beat()
        os._exit(0)
    reads = torn = 0
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        reads += 1
        if heartbeat.age() > 60:
            torn += 1
    os.waitpid(child, 0)
    assert reads > 10_000 and torn == 0


def test_slots_are_shared_across_fork_and_reused():
    pool = Heartbeats()
    first, second = pool.claim(), pool.claim()
    assert first.slot != second.slot
    child = os.fork()
    if child == 0:
        pool.at(second.slot).mark_ready()  # as a template builds its workers' heartbeats
        pool.at(second.slot).set_busy(True)
        os._exit(0)
    os.waitpid(child, 0)
    assert second.ready and second.busy and not first.ready
    pool.release(second)
    again = pool.claim()
    assert again.slot == second.slot and not again.ready and not again.busy  # a fresh slot is clean
    assert len({pool.claim().slot for _ in range(SLOTS - 2)}) == SLOTS - 2
