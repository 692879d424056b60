"""benchmarks/profile_hot_path.py drives the worker's own code: its steps must keep working."""

from __future__ import annotations

import importlib.util
from pathlib import Path

# Loaded by path: putting benchmarks/ on sys.path would shadow tests/fuzz/run.py with benchmarks/run.py.
_spec = importlib.util.spec_from_file_location(
    "profile_hot_path", Path(__file__).resolve().parent.parent / "benchmarks" / "profile_hot_path.py"
)
assert _spec is not None and _spec.loader is not None
profile_hot_path = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(profile_hot_path)


def test_the_new_connection_step_is_served_by_worker_accept_and_answered() -> None:
    one_batch = profile_hot_path.new_connections()
    one_batch()  # raises unless every client of the batch got a 200
    one_batch()


def test_the_floor_beside_it_answers_the_same_clients() -> None:
    profile_hot_path.new_connections(floor=True)()
