"""What the master knows of each worker: a record, and its lifecycle as a table.

Every worker the master forks gets a ``Record``: the ``Worker`` that runs
in the child, the reload generation it belongs to, its state, and when it
was born (for its boot deadline). The states and the only moves between
them::

    state      event     next       trigger
    BOOTING    BOOTED    READY      the heartbeat page says the app is loaded
    BOOTING    RETIRE    RETIRING   a newer reload or a stop no longer wants it (SIGKILL: no clients yet)
    BOOTING    EXITED    GONE       it left before serving: a boot failure, or killed past its boot deadline
    READY      LEAVING   RETIRING   it leaves on its own (max_requests, memory): replace it now
    READY      RETIRE    RETIRING   reload complete, TTOU, WINCH, stop (SIGTERM: it finishes its requests)
    READY      EXITED    GONE       a crash, whatever its exit code: it had booted
    RETIRING   EXITED    GONE       it left, as asked

The rules the master draws from it:

- Only a worker that exits while BOOTING can have failed to boot; an exit
  code 3 or 4 from a worker that was READY (an app calling ``sys.exit(4)``
  in a request) is a crash like any other, and costs only that worker.
- A failed boot stops the master only at first start, before any worker was
  ever ready (a bad app or config: exit code 3 or 4 for the caller). During a
  reload it abandons the reload, and the old workers keep serving; a worker
  of a reload that a newer one superseded is simply gone; a replacement
  that cannot boot while others serve is retried with back-off.
- The workers the master counts towards the wanted number are the BOOTING
  and READY ones of the current generation; RETIRING ones are already being
  replaced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker


class State(Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"
    GONE = "gone"


class Event(Enum):
    BOOTED = "booted"
    LEAVING = "leaving"
    RETIRE = "retire"
    EXITED = "exited"


TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.BOOTING, Event.BOOTED): State.READY,
    (State.BOOTING, Event.RETIRE): State.RETIRING,
    (State.BOOTING, Event.EXITED): State.GONE,
    (State.READY, Event.LEAVING): State.RETIRING,
    (State.READY, Event.RETIRE): State.RETIRING,
    (State.READY, Event.EXITED): State.GONE,
    (State.RETIRING, Event.EXITED): State.GONE,
}


class LifecycleError(RuntimeError):
    """The master tried a move the table does not allow: a bug in the master, not a worker's doing."""


@dataclass
class Record:
    """The master's record of one worker."""

    worker: Worker
    generation: int
    state: State = State.BOOTING
    born: float = field(default_factory=time.monotonic)
    booted_once: bool = False  # it was READY at some point (a RETIRING worker may have been)
    aborted_at: float = 0.0  # when it was sent SIGABRT for a stuck request (inf once killed)
    boot_deadline_missed: bool = False  # killed for not booting in time

    @property
    def pid(self) -> int:
        return self.worker.pid

    def move(self, event: Event) -> State:
        """Apply ``event``; the new state. Raises LifecycleError for a move the table lacks."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise LifecycleError(f"worker {self.pid}: no move from {self.state.name} on {event.name}")
        if new is State.READY:
            self.booted_once = True
        self.state = new
        return new

    def failed_to_boot(self) -> bool:
        """Did it leave without ever serving? (Ask before moving it to GONE.)"""
        return self.state is State.BOOTING or (self.state is State.RETIRING and not self.booted_once)

    def boot_overdue(self, timeout: float, now: float) -> bool:
        return bool(timeout) and self.state is State.BOOTING and now - self.born > timeout
