"""Bounded memo tables for checks that give the same answer on every request.

A worker sees the same few Host values, statuses, response header lines and
request header names over and over. Checking each once and remembering the
result takes a regular expression off the per-request path. Only values that
passed their check are remembered, and a table that fills up starts over, so
a client (or an app) sending endless variety costs what the check costs and
never grows memory.

Plain dicts: a lookup or store is atomic under the GIL, so request threads
may share a table without a lock.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

LIMIT = 512  # entries per table
MAX_TEXT = 256  # longer values are rarely repeated; not worth their memory


def remember(table: dict[K, V], key: K, value: V, size: int = 0) -> V:
    """Store ``value`` under ``key`` (emptying a full table first) and return it.

    ``size`` is the length of the text behind the entry; past ``MAX_TEXT``
    the entry is not stored.
    """
    if size <= MAX_TEXT:
        if len(table) >= LIMIT:
            table.clear()
        table[key] = value
    return value
