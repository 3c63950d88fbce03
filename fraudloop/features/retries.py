"""A retried transaction gets the features of its first scoring.

The online stores record each transaction identity once (a retry counts nothing twice), but the
features of the retry itself were computed with its own first observation, and every later one
of its card, already in the windows: ``customer_secs_since_prev_tx`` 0, one more in every count.
That is the signature of card testing, and a model that learnt it flags the retry (day 40 of the
demo's simulation, a one-off script in issue 11's note: 9.0 % flagged on first sight, 26.1 %
when sent again). So every online store
remembers the feature row of each transaction it observes for ``seconds``, and a request for an
identity it has observed is answered with that row: a client's retry, or a balancer's on another
replica, gets the score and decision the first request got (from the model serving then).

With Redis the rows are written off the request path
(:class:`fraudloop.features.redis_store.AnswerWriter`); a retry that arrives before its row
waits for it. An identity older than ``seconds``, or first seen by a replica that died before
writing its row, is scored as the next transaction, as before.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence

import numpy as np

#: how long a scored transaction's features are kept for its retries (FRAUDLOOP_SERVE_RETRY_...)
DEFAULT_SECONDS = 600.0
#: at most this many rows in the in-process memory (0.7 kB each from single requests, measured
#: by bench/serve.py; less from a batch, whose rows share its matrix): a burst of batches forgets
#: its oldest answers before the time is up, not the memory
MAX_ANSWERS = 200_000


def settle(matrix: np.ndarray, keys: Sequence[str], fresh: np.ndarray, exchange) -> np.ndarray:
    """Rows of ``matrix`` whose identity was seen before (``~fresh``) replaced by the rows
    remembered for them; the ``fresh`` rows remembered. A second copy of an identity in the
    same batch takes its first copy's row. ``exchange(keys, matrix, first, wanted)`` remembers
    the rows ``first`` under their keys and returns the row remembered for each of the rows
    ``wanted`` (None: none kept), in that order."""
    first, again = np.flatnonzero(fresh), np.flatnonzero(~fresh)
    if not len(again):
        exchange(keys, matrix, first, again)
        return matrix
    here = {keys[i]: i for i in first.tolist()}
    wanted = np.array([i for i in again.tolist() if keys[i] not in here], dtype=np.int64)
    rows = exchange(keys, matrix, first, wanted)
    recalled = dict(zip(wanted.tolist(), rows, strict=True))
    for i in again.tolist():
        row = matrix[here[keys[i]]] if keys[i] in here else recalled[i]
        if row is not None:
            matrix[i] = row
    return matrix


class RecentAnswers:
    """The in-process store's memory: identity -> (its batch's feature matrix, row) for
    ``seconds`` (a reference, not a copy: a batch's rows are remembered without a copy each; the
    service never writes into a matrix it got, and a recalled row is copied out)."""

    def __init__(
        self, seconds: float = DEFAULT_SECONDS, limit: int = MAX_ANSWERS, clock=time.monotonic
    ):
        self.seconds = seconds
        self.limit = limit
        self._clock = clock
        self._rows: dict[str, tuple[np.ndarray, int]] = {}
        self._expiry: deque[tuple[float, list[str]]] = deque()

    def __len__(self) -> int:
        return len(self._rows)

    def exchange(
        self, keys: Sequence[str], matrix: np.ndarray, first: np.ndarray, again: np.ndarray
    ) -> list[np.ndarray | None]:
        now = self._clock()
        while self._expiry and (self._expiry[0][0] <= now or len(self._rows) > self.limit):
            for key in self._expiry.popleft()[1]:
                self._rows.pop(key, None)
        if self.seconds > 0 and len(first):
            rows, added = self._rows, []
            for i in first.tolist():
                key = keys[i]
                if key not in rows:  # the first answer stays the answer
                    rows[key] = (matrix, i)
                    added.append(key)
            self._expiry.append((now + self.seconds, added))
        out = []
        for i in again.tolist():
            found = self._rows.get(keys[i])
            out.append(None if found is None else found[0][found[1]].copy())
        return out
