"""The online feature store in Redis: one store shared by every scoring replica.

With the in-process store (:class:`~fraudloop.features.online.OnlineFeatureStore`) each replica
counts only the transactions it scored itself, so with two replicas each undercounts a card's
velocity and the score depends on which replica answered. Here the loaded state and the overlay
of scored transactions live in one Redis, and scoring a transaction is **one** Lua script call
(one round trip, atomic): it reads the card's and the terminal's rows and overlay, then records
the transaction (once per (transaction id, content): a retry, on any replica, counts once). The
features are then computed in Python by the same functions as the in-process store
(:func:`~fraudloop.features.online.customer_sums`, ``terminal_counts``, ``assemble``) on the same
numbers, so both stores give bit-identical features for the same sequence of transactions.

Layout under ``<ns>`` (the namespace: ``fraudloop:<features prefix>``):

- ``<ns>:current`` hash: the version every replica serves (``version``, ``sha256``,
  ``state_hour``, ``first_hour``, ``label_delay_hours``); switched in one script call.
- ``<ns>:v:<n>:c:<card>`` hash: field ``|`` the card's loaded rows (hours and prefix sums, packed
  little-endian int64/float64), one field per terminal the card used (its last hour).
- ``<ns>:v:<n>:t:<terminal>``: the terminal's loaded rows and fraud-label segments, packed.
- ``<ns>:v:<n>:oc:<card>`` list, ``...:op:<card>`` hash, ``...:ot:<terminal>`` hash: the overlay
  (the card's observed transactions; its terminals' last hour and count; the terminal's
  observations per hour).
- ``<ns>:log`` list and ``<ns>:seen`` set: every observed transaction in observation order and
  their identities, across versions: what a newer version replays and what bounds the overlay.

Loading a newer state (:meth:`RedisOnlineStore.load`, by one replica under a lock) writes a new
version number's keys (never reused, so a half-written load never mixes with a served one),
replays the log into it in chunks, and switches in one script call that replays what arrived
meanwhile and moves ``current``: every request runs entirely on the old or the new version. The
old version's keys are deleted afterwards. Bounds: as in the service's in-process overlay, a
newer state drops what it contains (log entries older than its first hour) and beyond
``max_observed`` the oldest observations are forgotten (not while a load is replaying, so the
new version never keeps one the log lost; the excess is drained two per request afterwards).

Not for Redis Cluster: the scripts derive key names from the served version (one node, or a
primary with replicas and Sentinel).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from fraudloop.core.hours import HOUR_NS
from fraudloop.features import online_batch, retries
from fraudloop.features.compute import FEATURE_NAMES
from fraudloop.features.online import (
    NotLoaded,
    OnlineFeatureStore,
    TooOld,
    assemble,
    customer_sums,
    identity,
    terminal_counts,
    tx_time_ns,
)
from fraudloop.features.state import NO_TIME, SMALL_AMOUNT

log = logging.getLogger(__name__)

# Lua helpers shared by the scripts. Values stay strings in Lua (a nanosecond time does not fit
# a Lua double); only hours are compared as numbers. Fields are joined with '|', which no id has.
_LUA_COMMON = """
-- the served version, its first scorable hour (a number or nil) and its label delay
local function served(current)
  local cur = redis.call('HMGET', current, 'version', 'first_hour', 'label_delay_hours')
  return cur[1], tonumber(cur[2]), cur[3]
end
local function split(entry)
  local f = {}
  for part in string.gmatch(entry, '([^|]+)') do f[#f + 1] = part end
  return f  -- hour, identity, card, terminal, time, amount, small
end
local function observe(base, cid, tid, hour, t, amount, small)
  redis.call('RPUSH', base .. 'oc:' .. cid, hour .. '|' .. t .. '|' .. amount .. '|' .. small)
  local pk = base .. 'op:' .. cid
  redis.call('HSET', pk, 'h|' .. tid, hour)
  redis.call('HINCRBY', pk, 'n|' .. tid, 1)
  redis.call('HINCRBY', base .. 'ot:' .. tid, hour, 1)
end
-- a row for a first-seen transaction's retries is on its way: an empty marker until the
-- scoring replica's writer puts the row there (ttl in ms; 0: rows are not kept)
local function expect_answer(ns, identity, ttl)
  if tonumber(ttl) > 0 then redis.call('SET', ns .. ':a:' .. identity, '', 'PX', ttl) end
end
local function forget(base, cid, tid, hour)
  redis.call('LPOP', base .. 'oc:' .. cid)
  local pk = base .. 'op:' .. cid
  if redis.call('HINCRBY', pk, 'n|' .. tid, -1) <= 0 then
    redis.call('HDEL', pk, 'n|' .. tid, 'h|' .. tid)
  end
  local tk = base .. 'ot:' .. tid
  if redis.call('HINCRBY', tk, hour, -1) <= 0 then redis.call('HDEL', tk, hour) end
end
local function replay(base, log, from, to, first)
  local entries = redis.call('LRANGE', log, from, to)
  for _, entry in ipairs(entries) do
    local f = split(entry)
    if first == nil or tonumber(f[1]) >= first then
      observe(base, f[3], f[4], f[1], f[5], f[6], f[7])
    end
  end
  return from + #entries
end
"""

# KEYS: current, log, seen, loading. ARGV: namespace, card, terminal, identity, hour, time,
# amount, small, max_observed, observe (1) or only read (0), retry rows' time to live (ms).
# Reads, then observes once per identity, then bounds the overlay; a retry gets its row.
_SCORE = (
    _LUA_COMMON
    + """
local v, first, delay = served(KEYS[1])
if not v then return {'none'} end
local hour = ARGV[5]
if first and tonumber(hour) < first then return {'old', v} end
local base = ARGV[1] .. ':v:' .. v .. ':'
local cid, tid = ARGV[2], ARGV[3]
local c = redis.call('HMGET', base .. 'c:' .. cid, '|', tid)
local term = redis.call('GET', base .. 't:' .. tid)
local oc = redis.call('LRANGE', base .. 'oc:' .. cid, 0, -1)
local op = redis.call('HGET', base .. 'op:' .. cid, 'h|' .. tid)
local ot = redis.call('HGETALL', base .. 'ot:' .. tid)
local fresh = 0
if ARGV[10] == '1' then fresh = redis.call('SADD', KEYS[3], ARGV[4]) end
if fresh == 1 then
  expect_answer(ARGV[1], ARGV[4], ARGV[11])
  observe(base, cid, tid, hour, ARGV[6], ARGV[7], ARGV[8])
  redis.call('RPUSH', KEYS[2], table.concat(
    {hour, ARGV[4], cid, tid, ARGV[6], ARGV[7], ARGV[8]}, '|'))
  if redis.call('EXISTS', KEYS[4]) == 0 then
    local excess = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[9])
    local n = 0
    while excess > 0 and n < 2 do
      local f = split(redis.call('LPOP', KEYS[2]))
      redis.call('SREM', KEYS[3], f[2])
      if not first or tonumber(f[1]) >= first then forget(base, f[3], f[4], f[1]) end
      excess = excess - 1
      n = n + 1
    end
  end
end
local answer = false  -- a retry: the row remembered for its first scoring, if any
if fresh == 0 and ARGV[10] == '1' then answer = redis.call('GET', ARGV[1] .. ':a:' .. ARGV[4]) end
return {v, delay, c[1], c[2], term, table.concat(oc, ';'), op, table.concat(ot, ';'), fresh,
        answer}
"""
)

# KEYS: current, log, seen, loading. ARGV: namespace, max_observed, cards, terminals, pairs, rows;
# the card ids; the terminal ids; per pair its card and terminal (1-based); per row identity,
# card, terminal, hour, time, amount, small; last, retry rows' time to live (ms). A batch: reads
# what its entities held before it, then observes its rows in order (once per identity). 'old'
# (a row older than the served state) and 'full' (the overlay could overflow, forgetting between
# rows) change nothing: the caller goes row by row.
_SCORE_MANY = (
    _LUA_COMMON
    + """
local v, first, delay = served(KEYS[1])
if not v then return {'none'} end
local nc, nt, np, n = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cards, terms = {}, {}
local a = 7
for i = 1, nc do cards[i] = ARGV[a]; a = a + 1 end
for i = 1, nt do terms[i] = ARGV[a]; a = a + 1 end
local pairs_at = a
local rows_at = a + 2 * np
if first then
  for r = 0, n - 1 do
    if tonumber(ARGV[rows_at + 7 * r + 3]) < first then return {'old', v} end
  end
end
if redis.call('LLEN', KEYS[2]) + n > tonumber(ARGV[2]) then return {'full', v} end
local base = ARGV[1] .. ':v:' .. v .. ':'
local out = {v, delay}
for i = 1, nc do
  out[#out + 1] = redis.call('HGET', base .. 'c:' .. cards[i], '|')
  out[#out + 1] = table.concat(redis.call('LRANGE', base .. 'oc:' .. cards[i], 0, -1), ';')
end
for i = 1, nt do
  out[#out + 1] = redis.call('GET', base .. 't:' .. terms[i])
  out[#out + 1] = table.concat(redis.call('HGETALL', base .. 'ot:' .. terms[i]), ';')
end
for p = 0, np - 1 do
  local cid = cards[tonumber(ARGV[pairs_at + 2 * p])]
  local tid = terms[tonumber(ARGV[pairs_at + 2 * p + 1])]
  out[#out + 1] = redis.call('HGET', base .. 'c:' .. cid, tid)
  out[#out + 1] = redis.call('HGET', base .. 'op:' .. cid, 'h|' .. tid)
end
local fresh, answers = {}, {}
for r = 0, n - 1 do
  local at = rows_at + 7 * r
  local cid, tid = cards[tonumber(ARGV[at + 1])], terms[tonumber(ARGV[at + 2])]
  local f = redis.call('SADD', KEYS[3], ARGV[at])
  if f == 1 then
    expect_answer(ARGV[1], ARGV[at], ARGV[#ARGV])
    local hour, t, amount, small = ARGV[at + 3], ARGV[at + 4], ARGV[at + 5], ARGV[at + 6]
    observe(base, cid, tid, hour, t, amount, small)
    redis.call('RPUSH', KEYS[2], table.concat({hour, ARGV[at], cid, tid, t, amount, small}, '|'))
  end
  fresh[#fresh + 1] = f
  if f == 0 then answers[#answers + 1] = redis.call('GET', ARGV[1] .. ':a:' .. ARGV[at]) end
end
out[#out + 1] = table.concat(fresh, '')
out[#out + 1] = answers
return out
"""
)

# KEYS: log. ARGV: version base, from, count, first hour. Replays a chunk into a new version.
_REPLAY = (
    _LUA_COMMON
    + """
return replay(ARGV[1], KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[2]) + tonumber(ARGV[3]) - 1,
              tonumber(ARGV[4]))
"""
)

# KEYS: current, log, loading. ARGV: version base, from, version, sha256, state hour, first
# hour, label delay hours, load token. Replays the rest of the log and switches, atomically.
_SWITCH = (
    _LUA_COMMON
    + """
if redis.call('GET', KEYS[3]) ~= ARGV[8] then return {'lost'} end
redis.call('DEL', KEYS[3])
local have = redis.call('HMGET', KEYS[1], 'version', 'sha256', 'state_hour')
if have[2] == ARGV[4] then return {'same', have[1]} end
if have[3] and have[3] > ARGV[5] then return {'older', have[1]} end
replay(ARGV[1], KEYS[2], tonumber(ARGV[2]), -1, tonumber(ARGV[6]))
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'sha256', ARGV[4], 'state_hour', ARGV[5],
           'first_hour', ARGV[6], 'label_delay_hours', ARGV[7])
return {'switched', have[1] or ''}
"""
)

# KEYS: log, seen. ARGV: first hour, count. Drops log entries (from the head) the served
# version contains already.
_PRUNE = """
local n = 0
while n < tonumber(ARGV[2]) do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local hour, identity = string.match(head, '^([^|]+)|([^|]+)|')
  if tonumber(hour) >= tonumber(ARGV[1]) then break end
  redis.call('LPOP', KEYS[1])
  redis.call('SREM', KEYS[2], identity)
  n = n + 1
end
return n
"""

# ARGV: key prefix, time to live (ms), then (identity, feature row) pairs: each row replaces
# its marker (only the replica that saw the transaction first writes its row).
_REMEMBER = """
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do redis.call('SET', prefix .. ARGV[i], ARGV[i + 1], 'PX', ttl) end
return (#ARGV - 2) / 2
"""

#: Rows per batch or replay script call. Redis runs one script at a time, so this bounds what
#: every other call waits, and the scoring path's calls time out at 0.25 s by default. At 2,000
#: rows `bench/balancer.py` had 10,000-row batches through two replicas answered 503 in 2 of 5
#: runs, none in 4 runs at 500 with the same rows/s; a one-off diagnostic with Redis's SLOWLOG
#: (2026-12-07, README known limits) put a 2,000-row script at up to 90-115 ms, so two
#: replicas' back to back plus the reply passed the timeout, and a 500-row one at 38 ms.
BATCH_CHUNK = 500
REPLAY_CHUNK = BATCH_CHUNK
#: fewer rows than this go through the per-row script (cheaper for a handful)
VECTOR_MIN_ROWS = 16
WRITE_CHUNK = 500
LOAD_LOCK_SECONDS = 600


def _pack_customer(rows: tuple) -> bytes:
    hours, n, s, ss, small, last = rows
    ints = np.array([len(hours), last, *hours, *n, *small], dtype="<i8")
    return ints.tobytes() + np.array([*s, *ss], dtype="<f8").tobytes()


def _unpack_customer(blob: bytes | None) -> tuple[tuple, int]:
    if not blob:
        return ([], [], [], [], [], 0, 0), NO_TIME
    m = int(np.frombuffer(blob, "<i8", count=1)[0])
    ints = np.frombuffer(blob, "<i8", count=2 + 3 * m).tolist()
    floats = np.frombuffer(blob, "<f8", offset=8 * (2 + 3 * m)).tolist()
    rows = (ints[2 : 2 + m], ints[2 + m : 2 + 2 * m], floats[:m], floats[m:], ints[2 + 2 * m :])
    return (*rows, 0, m), ints[1]


def _pack_terminal(rows: tuple, frauds: list[tuple[int, int, int]]) -> bytes:
    hours, n = rows
    flat = [x for seg in frauds for x in seg]
    return np.array([len(hours), len(frauds), *hours, *n, *flat], dtype="<i8").tobytes()


def _unpack_terminal(blob: bytes | None) -> tuple[tuple, list[tuple[int, int, int]]]:
    if not blob:
        return ([], [], 0, 0), []
    values = np.frombuffer(blob, "<i8").tolist()
    m, k = values[0], values[1]
    flat = values[2 + 2 * m :]
    frauds = [(flat[3 * i], flat[3 * i + 1], flat[3 * i + 2]) for i in range(k)]
    return (values[2 : 2 + m], values[2 + m : 2 + 2 * m], 0, m), frauds


class AnswerWriter:
    """Remembers the feature rows of scored transactions in Redis for their retries
    (:mod:`fraudloop.features.retries`) off the request path: scoring queues its fresh rows and
    a thread writes what has queued in one script call (every ``interval`` s at most), so a
    scoring request keeps its single round trip. Written before the answer instead, the second
    call doubled the Redis path's features + observation (`bench/serve.py`'s `feature_calls`, A/B
    back to back by a one-off script, 2026-12-06: p50 320-435 us without rows, 720-810 us
    written before the answer, 390-530 us written by this thread; its script calls share the
    GIL, p99 ~x1.5-2).

    The price is a window: a retry may reach Redis before its row. The scoring script leaves an
    empty marker for each first-seen transaction, so a retry that finds the marker looks in
    this replica's queue, then waits for the row (``wait`` s at most, polling): a retry sent at
    once to the other replica gets the first answer all the same. Only when the first replica
    died with the row queued does the retry wait the whole time, then get scored as the next
    transaction, as every retry was before; without a marker (expired) it does not wait."""

    def __init__(
        self,
        client,
        prefix: str,
        seconds: float,
        interval: float = 0.01,
        wait: float = 0.2,
        max_pending: int = 200_000,
    ):
        self.client = client
        self.prefix = prefix
        self.ttl_ms = int(seconds * 1000)
        self.interval = interval
        self.wait = wait
        self.max_pending = max_pending
        self._script = client.register_script(_REMEMBER)
        self._pending: dict[str, bytes] = {}
        self._writing: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def remember(self, keys: list[str], rows: np.ndarray) -> None:
        if self.ttl_ms <= 0 or not keys:
            return
        with self._lock:
            if len(self._pending) + len(keys) > self.max_pending:
                return  # Redis slow or away: these rows are not remembered
            for key, row in zip(keys, rows, strict=True):
                self._pending.setdefault(key, row.tobytes())
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="answers", daemon=True)
                self._thread.start()
        self._wake.set()

    def recall(self, keys: list[str], found: list[bytes | None]) -> list[bytes | None]:
        """``found`` (what the scoring script read for ``keys``: a row, ``b""`` while one is on
        its way, None when none is kept) completed from this replica's queue, then from Redis
        as other replicas' rows arrive (``wait`` s at most); None where no row came."""
        with self._lock:
            found = [
                self._pending.get(k, self._writing.get(k, row)) if row == b"" else row
                for k, row in zip(keys, found, strict=True)
            ]
        deadline = time.monotonic() + self.wait
        while b"" in found and time.monotonic() < deadline:
            time.sleep(self.interval)
            missing = [i for i, row in enumerate(found) if row == b""]
            got = self.client.mget([self.prefix + keys[i] for i in missing])
            for i, row in zip(missing, got, strict=True):
                found[i] = row
        return [row or None for row in found]

    def flush(self) -> int:
        """Write what has queued now; returns the rows written."""
        with self._lock:
            items, self._pending = self._pending, {}
            self._writing = items
        try:
            pairs = list(items.items())
            for start in range(0, len(pairs), WRITE_CHUNK):
                args: list = [self.prefix, self.ttl_ms]
                for key, row in pairs[start : start + WRITE_CHUNK]:
                    args += (key, row)
                self._script(keys=[], args=args, client=self.client)
        finally:
            with self._lock:
                self._writing = {}
        return len(items)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            time.sleep(self.interval)  # gather what the next requests add
            self._wake.clear()
            try:
                self.flush()
            except Exception as error:  # Redis away: scoring answers 503 meanwhile anyway
                log.warning("rows for retries not written to Redis: %s", error)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.flush()
        except Exception as error:
            log.warning("rows for retries not written to Redis at close: %s", error)


class RedisOnlineStore:
    """Features of single transactions from the state loaded into Redis, shared by replicas."""

    def __init__(
        self,
        client,
        namespace: str,
        max_observed: int = 2_000_000,
        retry_answer_seconds: float = retries.DEFAULT_SECONDS,
    ):
        self.client = client
        self.ns = namespace
        self.max_observed = max_observed
        self.keys = {k: f"{namespace}:{k}" for k in ("current", "log", "seen", "loading")}
        self._score = client.register_script(_SCORE)
        self._score_many = client.register_script(_SCORE_MANY)
        self._replay = client.register_script(_REPLAY)
        self._switch = client.register_script(_SWITCH)
        self._prune = client.register_script(_PRUNE)
        self.answers = AnswerWriter(client, f"{namespace}:a:", retry_answer_seconds)

    def close(self) -> None:
        """Write the rows queued for retries; stop their writer."""
        self.answers.close()

    @staticmethod
    def scoring_script(client):
        """The single-transaction scoring script registered on ``client`` (for an asyncio
        client: :meth:`features_and_observe_async`)."""
        return client.register_script(_SCORE)

    # ---- what is served
    def current(self) -> dict[str, str]:
        """The served version's description ({} before the first load)."""
        raw = self.client.hgetall(self.keys["current"])
        return {k.decode(): v.decode() for k, v in raw.items()}

    def observed(self) -> int:
        return int(self.client.llen(self.keys["log"]))

    # ---- scoring
    def features(self, tx: dict[str, Any]) -> dict[str, float]:
        """Features of ``tx`` as if it were the next transaction; nothing is recorded."""
        call = self._args(tx)
        return self._features(call, self._call(self.client, *call, observe=False))

    def observe(self, tx: dict[str, Any]) -> None:
        """Record ``tx`` (once per identity) so that later transactions see it."""
        self.features_and_observe([tx])

    def features_and_observe(self, txs: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
        """Features of each transaction in order, each recorded before the next is read (all
        script calls in one pipeline: one round trip whatever the number of transactions)."""
        calls = [self._args(tx) for tx in txs]
        if len(calls) == 1:
            replies = [self._call(self.client, *calls[0])]
        else:
            pipe = self.client.pipeline(transaction=False)
            for call in calls:
                self._call(pipe, *call)
            replies = pipe.execute()
        matrix = self._replies_matrix(calls, replies)
        return [dict(zip(FEATURE_NAMES, row, strict=True)) for row in matrix.tolist()]

    async def features_and_observe_async(self, script, tx: dict[str, Any]) -> np.ndarray:
        """:meth:`features_and_observe` of one transaction as a (1 x ``FEATURE_NAMES``) matrix,
        its script call awaited on ``script`` (the scoring script registered on an asyncio
        client: the service's event loop serves other requests during the round trip)."""
        call = self._args(tx)
        reply = await script(keys=self._script_keys, args=self._script_args(*call))
        return self._replies_matrix([call], [reply])

    def _replies_matrix(self, calls: list[tuple], replies: list) -> np.ndarray:
        """The features of the script's ``replies`` (one per call, in order), settled for
        retries."""
        out = [self._features(call, reply) for call, reply in zip(calls, replies, strict=True)]
        fresh = np.array([reply[8] == 1 for reply in replies], dtype=bool)
        answers = [reply[9] for reply in replies if reply[8] != 1]
        return self._settle(_matrix(out), [c[-1] for c in calls], fresh, answers)

    def _settle(
        self, matrix: np.ndarray, keys: list[str], fresh: np.ndarray, answers: list
    ) -> np.ndarray:
        """:func:`fraudloop.features.retries.settle` with the rows the scoring script read for
        the retries (``answers``, one per row not ``fresh``, in order); the fresh rows go to the
        writer, off the request path."""
        found = dict(zip(np.flatnonzero(~fresh).tolist(), answers, strict=True))

        def exchange(keys, matrix, first, wanted):
            self.answers.remember([keys[i] for i in first.tolist()], matrix[first])
            wanted = wanted.tolist()
            rows = self.answers.recall([keys[i] for i in wanted], [found[i] for i in wanted])
            return [None if row is None else np.frombuffer(row, dtype=np.float64) for row in rows]

        return retries.settle(matrix, keys, fresh, exchange)

    def features_and_observe_matrix(
        self, txs: online_batch.Rows | Sequence[dict[str, Any]]
    ) -> np.ndarray:
        """:meth:`features_and_observe` as a (transactions x ``FEATURE_NAMES``) matrix (columns
        or dicts), a batch in one script call per :data:`BATCH_CHUNK` rows, its features
        computed as arrays (:mod:`fraudloop.features.online_batch`): what the rows one by one
        would give."""
        if len(txs) < VECTOR_MIN_ROWS:
            dicts = txs.dicts() if isinstance(txs, online_batch.Rows) else txs
            return _matrix(self.features_and_observe(dicts))
        rows = online_batch.as_rows(txs)
        parts = [
            self._batch(rows.part(i, i + BATCH_CHUNK)) for i in range(0, len(rows), BATCH_CHUNK)
        ]
        return parts[0] if len(parts) == 1 else np.vstack(parts)

    def _batch(self, rows: online_batch.Rows) -> np.ndarray:
        ent = online_batch.Entities.of(rows.cids, rows.tids)
        hours = (rows.t // HOUR_NS).tolist()
        keys = rows.identities()
        args: list = [self.ns, self.max_observed, len(ent.cards), len(ent.terms), len(ent.pairs)]
        args += [len(rows), *ent.cards, *ent.terms]
        for c, te in ent.pairs:
            args += (c + 1, te + 1)
        amounts = rows.amounts
        for key, c, te, h, ti, am in zip(
            keys,
            (ent.cu + 1).tolist(),
            (ent.tu + 1).tolist(),
            hours,
            rows.t.tolist(),
            amounts,
            strict=True,
        ):
            args += (key, c, te, h, ti, repr(am), 1 if am < SMALL_AMOUNT else 0)
        args.append(self.answers.ttl_ms)
        reply = self._score_many(keys=self._script_keys, args=args)
        status = reply[0]
        if status == b"none":
            raise NotLoaded("no online feature state is loaded in Redis")
        if status in (b"old", b"full"):  # what the arrays do not model: row by row
            return _matrix(self.features_and_observe(rows.dicts()))
        inputs = _batch_inputs(reply, rows, ent)
        return self._settle(online_batch.features(inputs), keys, inputs.fresh, reply[-1])

    @staticmethod
    def _args(tx: dict[str, Any]) -> tuple:
        t = tx_time_ns(tx["tx_datetime"])
        cid, tid = str(tx["customer_id"]), str(tx["terminal_id"])
        return t, float(tx["amount"]), cid, tid, identity(tx)

    @property
    def _script_keys(self) -> list[str]:
        k = self.keys
        return [k["current"], k["log"], k["seen"], k["loading"]]

    def _script_args(
        self, t: int, amount: float, cid: str, tid: str, key: str, observe: bool = True
    ) -> list:
        """The scoring script's ARGV for one transaction (``_args``'s tuple)."""
        args = [self.ns, cid, tid, key, t // HOUR_NS, t, repr(amount)]
        args += [1 if amount < SMALL_AMOUNT else 0, self.max_observed, 1 if observe else 0]
        args.append(self.answers.ttl_ms)
        return args

    def _call(self, client, t: int, amount: float, cid: str, tid: str, key: str, observe=True):
        args = self._script_args(t, amount, cid, tid, key, observe)
        return self._score(keys=self._script_keys, args=args, client=client)

    def _features(self, call: tuple, reply: list) -> dict[str, float]:
        t, amount = call[:2]
        status = reply[0]
        if status == b"none":
            raise NotLoaded("no online feature state is loaded in Redis")
        if status == b"old":
            raise TooOld("transaction is older than the state this store was loaded from")
        _, delay, c_blob, pair_hour, t_blob, oc, op, ot = reply[:8]
        hour = t // HOUR_NS
        rows, last = _unpack_customer(c_blob)
        obs = []
        if oc:  # the overlay comes joined: one bulk string parses far faster than a list
            for entry in oc.split(b";"):
                oh, ot_, oa, osm = entry.split(b"|")
                obs.append((int(oh), int(ot_), float(oa), int(osm)))
        sums = customer_sums(t, amount, rows, last, obs)
        seen_hour = int(op) if op is not None else (int(pair_hour) if pair_hour else None)
        t_rows, frauds = _unpack_terminal(t_blob)
        flat = ot.split(b";") if ot else []
        t_obs = [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
        counts, tfrauds, fraud_hours = terminal_counts(hour, int(delay), t_rows, t_obs, frauds)
        return assemble(t, hour, amount, sums, seen_hour, counts, tfrauds, fraud_hours)

    # ---- loading a state
    def load(self, online: OnlineFeatureStore, pointer: dict[str, Any]) -> str:
        """Load ``online`` (built from the published state ``pointer`` describes) as a new
        version and switch every replica to it. Returns ``switched``, ``same`` (that state is
        served already), ``older`` (a newer one is), or ``busy`` (another replica is loading)."""
        k, client = self.keys, self.client
        have = self.current()
        if have.get("sha256") == pointer["sha256"]:
            return "same"
        if have.get("state_hour", "") > pointer.get("state_hour", ""):
            return "older"
        token = uuid.uuid4().hex
        if not client.set(k["loading"], token, nx=True, ex=LOAD_LOCK_SECONDS):
            return "busy"
        version = int(client.incr(f"{self.ns}:versions"))
        base = f"{self.ns}:v:{version}:"
        try:
            self._write(base, online.loaded_entities())
            first = online.first_hour
            first_arg = "" if first is None else str(first)
            cursor = 0
            while cursor < self.observed() - REPLAY_CHUNK:
                cursor = int(
                    self._replay(keys=[k["log"]], args=[base, cursor, REPLAY_CHUNK, first_arg])
                )
            state_hour = pointer.get("state_hour") or ""
            args = [base, cursor, version, pointer["sha256"], state_hour, first_arg]
            args += [online.label_delay_hours, token]
            outcome = self._switch(keys=[k["current"], k["log"], k["loading"]], args=args)
        except BaseException:
            client.delete(k["loading"])
            self.drop_versions(keep=have.get("version"))
            raise
        result = outcome[0].decode()
        if result == "switched" and first is not None:
            while int(self._prune(keys=[k["log"], k["seen"]], args=[first, 5_000])) == 5_000:
                pass
        self.drop_versions(keep=self.current().get("version"))
        return result

    def _write(self, base: str, entities: Iterator[tuple[str, str, tuple, Any]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pending = 0
        for kind, eid, rows, extra in entities:
            if kind == "c":
                mapping = {"|": _pack_customer(rows), **{t: h for t, h in extra.items()}}
                pipe.hset(f"{base}c:{eid}", mapping=mapping)
            else:
                pipe.set(f"{base}t:{eid}", _pack_terminal(rows, extra))
            pending += 1
            if pending >= WRITE_CHUNK:
                pipe.execute()
                pending = 0
        pipe.execute()

    def drop_versions(self, keep: str | None) -> int:
        """Delete every version's keys but ``keep``'s (old versions, abandoned loads)."""
        dropped = 0
        mine = f"{self.ns}:v:{keep}:".encode() if keep else None
        batch = []
        for key in self.client.scan_iter(match=f"{self.ns}:v:*", count=1000):
            if mine is None or not key.startswith(mine):
                batch.append(key)
                if len(batch) >= 1000:
                    dropped += self.client.unlink(*batch)
                    batch = []
        if batch:
            dropped += self.client.unlink(*batch)
        return dropped


def _matrix(dicts: list[dict[str, float]]) -> np.ndarray:
    return np.array([list(d.values()) for d in dicts], dtype=np.float64).reshape(
        len(dicts), len(FEATURE_NAMES)
    )


def _batch_inputs(reply, rows: online_batch.Rows, ent: online_batch.Entities):
    """The batch script's reply as the inputs of :func:`online_batch.features`."""
    i8, f8 = np.int64, np.float64
    nc, nt = len(ent.cards), len(ent.terms)
    at = 2
    c_lo, c_hi = np.zeros(nc, i8), np.zeros(nc, i8)
    c_last, c_obs, c_obs_n = np.full(nc, NO_TIME, i8), np.zeros(nc, i8), np.zeros(nc, i8)
    hours, cn, cs, css, csm, co = [], [], [], [], [], []
    size = 0
    for u in range(nc):
        blob, oc = reply[at], reply[at + 1]
        at += 2
        c_lo[u] = size
        if blob:
            m = int(np.frombuffer(blob, "<i8", count=1)[0])
            ints = np.frombuffer(blob, "<i8", count=2 + 3 * m)
            floats = np.frombuffer(blob, "<f8", offset=8 * (2 + 3 * m))
            c_last[u] = ints[1]
            hours.append(ints[2 : 2 + m])
            cn.append(ints[2 + m : 2 + 2 * m])
            csm.append(ints[2 + 2 * m :])
            cs.append(floats[:m])
            css.append(floats[m:])
            size += m
        c_hi[u] = size
        if oc:
            entries = oc.split(b";")
            c_obs[u], c_obs_n[u] = len(co), len(entries)
            co.extend(entry.split(b"|") for entry in entries)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    cards = online_batch.flat(
        c_lo, c_hi - c_lo, cat(hours, i8), cat(cn, i8), cat(cs, f8), cat(css, f8), cat(csm, i8)
    )
    t_lo, t_hi = np.zeros(nt, i8), np.zeros(nt, i8)
    th, tn, to, tf = [], [], [], []
    size = 0
    for u in range(nt):
        blob, ot = reply[at], reply[at + 1]
        at += 2
        t_lo[u] = size
        if blob:
            values = np.frombuffer(blob, "<i8")
            m, k = int(values[0]), int(values[1])
            th.append(values[2 : 2 + m])
            tn.append(values[2 + m : 2 + 2 * m])
            segs = values[2 + 2 * m :].reshape(k, 3)
            tf.extend((u, *seg) for seg in segs.tolist())
            size += m
        t_hi[u] = size
        if ot:
            flat_ot = ot.split(b";")
            to.extend((u, int(flat_ot[i]), int(flat_ot[i + 1])) for i in range(0, len(flat_ot), 2))
    terminals = online_batch.flat(t_lo, t_hi - t_lo, cat(th, i8), cat(tn, i8))
    p_seen = np.full(len(ent.pairs), NO_TIME, i8)
    for p in range(len(ent.pairs)):
        loaded, observed = reply[at], reply[at + 1]
        at += 2
        if observed is not None:
            p_seen[p] = int(observed)
        elif loaded:
            p_seen[p] = int(loaded)
    return online_batch.BatchInputs.from_rows(
        rows,
        ent,
        np.frombuffer(reply[at], dtype=np.uint8) == ord("1"),
        cards=cards,
        c_lo=c_lo,
        c_hi=c_hi,
        c_last=c_last,
        c_obs=c_obs,
        c_obs_n=c_obs_n,
        co=co,
        terminals=terminals,
        t_lo=t_lo,
        t_hi=t_hi,
        to=to,
        tf=tf,
        p_seen=p_seen,
        label_delay_hours=int(reply[1]),
    )


def namespace(features_prefix: str) -> str:
    return f"fraudloop:{features_prefix}"


def first_hour_of(current: dict[str, str]) -> int | None:
    value = current.get("first_hour")
    return int(value) if value else None
