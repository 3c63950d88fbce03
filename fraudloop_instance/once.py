"""What a process does once per database: the schema check that every new Dagster instance
repeats (the code server makes one per sensor evaluation, a run one at its start).

A check that passed stays passed for the life of the process: schemas change through
`dagster instance migrate`, not under running processes. A check that raised is tried again by
the next instance.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_done: set[Hashable] = set()


@contextmanager
def once_per_process(key: Hashable) -> Iterator[bool]:
    """Yields whether this process still has to do the work named `key` (True at most until
    one such block ends without an exception)."""
    with _lock:
        todo = key not in _done
    yield todo
    if todo:
        with _lock:
            _done.add(key)
