"""The master's worker lifecycle as a table: every allowed move, and nothing else (no processes)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from forkserve.lifecycle import TRANSITIONS, Event, LifecycleError, Record, State


def record(*events: Event, born: float = 100.0) -> Record:
    worker: Any = SimpleNamespace(pid=4242)  # only the pid is read
    entry = Record(worker, generation=1, born=born)
    for event in events:
        entry.move(event)
    return entry


def test_every_state_but_gone_can_exit_and_gone_is_final():
    for state in (State.BOOTING, State.READY, State.RETIRING):
        assert TRANSITIONS[(state, Event.EXITED)] is State.GONE
    assert not [key for key in TRANSITIONS if key[0] is State.GONE]


@pytest.mark.parametrize(("state", "event"), list(itertools.product(State, Event)))
def test_moves_outside_the_table_are_refused(state, event):
    entry = record()
    entry.state = state
    if (state, event) in TRANSITIONS:
        assert entry.move(event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(LifecycleError, match="worker 4242: no move from"):
            entry.move(event)
        assert entry.state is state  # a refused move changes nothing


def test_only_a_worker_that_never_served_failed_to_boot():
    assert record().failed_to_boot()
    assert record(Event.RETIRE).failed_to_boot()  # retired while booting (a superseded reload)
    assert not record(Event.BOOTED).failed_to_boot()  # sys.exit(4) in a request is a crash
    assert not record(Event.BOOTED, Event.LEAVING).failed_to_boot()
    assert not record(Event.BOOTED, Event.RETIRE).failed_to_boot()


def test_boot_deadline_applies_to_booting_workers_only():
    assert record(born=100.0).boot_overdue(timeout=30, now=131.0)
    assert not record(born=100.0).boot_overdue(timeout=30, now=129.0)
    assert not record(born=100.0).boot_overdue(timeout=0, now=10_000.0)  # --timeout 0: no deadline
    assert not record(Event.BOOTED, born=100.0).boot_overdue(timeout=30, now=131.0)
