"""benchmarks/profile_hot_path.py drives the worker's own code: its steps must keep working."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import profile_hot_path


def test_the_new_connection_step_is_served_by_worker_accept_and_answered() -> None:
    one_batch = profile_hot_path.new_connections()
    one_batch()  # raises unless every client of the batch got a 200
    one_batch()


def test_the_floor_beside_it_answers_the_same_clients() -> None:
    profile_hot_path.new_connections(floor=True)()
