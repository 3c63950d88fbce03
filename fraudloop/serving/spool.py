"""The prediction log's local spool: every decision on disk (fsync'd) before, or within a few
milliseconds of, its answer, so a ``kill -9`` loses none (or only the documented window).

Decisions are appended as JSON lines to a segment file ``<instance>-<seq>.open``: a line per
row, or one record (a line) for a whole batch (:meth:`Spool.append_record`: its request is
answered once the whole line is on disk, so a torn one was never answered). One writer
thread does group commit: it takes everything that arrived while the previous write and fsync
ran, writes it, fsyncs once, then releases every waiter, so the cost per decision falls as the
load rises. :meth:`Spool.rotate` closes the current segment (renamed to ``.done``, an atomic
step) and returns every closed segment, oldest first; the prediction log drains each to the
object store under keys derived from the segment name (a retried drain overwrites, never
duplicates) and then :meth:`Spool.remove` deletes it. At start, ``.open`` segments left by a
killed process are closed and drained like the others; a torn last line (the crash hit mid-write,
its request was never answered) is skipped. One process owns a spool directory at a time (an
exclusive ``flock``); :func:`claim_spool` gives a process the first free ``slot-<n>`` below a
root, so a restarted process takes its killed predecessor's slot (and drains it) while a second
process running beside it takes another.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from fraudloop.core.errors import ConfigError

log = logging.getLogger(__name__)

OPEN, DONE = ".open", ".done"
MAX_SLOTS = 64


class SpoolBusy(ConfigError):
    """The spool directory is owned by another live process."""


def claim_spool(root: str | Path, instance: str, commit_seconds: float = 0.0) -> Spool:
    """The spool in the first ``root/slot-<n>`` no live process owns."""
    for n in range(MAX_SLOTS):
        try:
            return Spool(Path(root) / f"slot-{n}", instance, commit_seconds)
        except SpoolBusy:
            continue
    raise ConfigError(f"all {MAX_SLOTS} prediction-log spool slots under {root} are in use")


class Spool:
    """Append-only, group-committed, crash-safe local log of rows (JSON-serialisable tuples)."""

    def __init__(self, directory: str | Path, instance: str, commit_seconds: float = 0.0):
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.instance = instance
        self.commit_seconds = commit_seconds
        self._lock_file = open(self.directory / "spool.lock", "a")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolBusy(
                f"prediction-log spool {self.directory} is in use by another process"
            ) from None
        for stale in self.directory.glob(f"*{OPEN}"):  # a killed process's: closed as they are
            stale.rename(stale.with_suffix(DONE))
        self._seq = 0
        self._file = None
        self._file_lock = threading.Lock()  # the writer vs rotate
        self._cond = threading.Condition()
        self._pending: list[tuple[list[bytes], int, Future]] = []  # lines, rows, waiter
        self._stop = False
        self.rows_appended = 0
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)
        self._thread.start()

    # ---- request path
    def append(self, rows: list[tuple]) -> Future:
        """Queue ``rows``; the future completes once they are fsync'd (or fails with the error)."""
        lines = [json.dumps(list(r), separators=(",", ":")).encode() + b"\n" for r in rows]
        return self._queue(lines, len(rows))

    def append_record(self, line: bytes, rows: int) -> Future:
        """Queue one record (a JSON line ending in a newline) that holds ``rows`` rows."""
        return self._queue([line], rows)

    def _queue(self, lines: list[bytes], rows: int) -> Future:
        future: Future = Future()
        with self._cond:
            if self._stop:
                raise RuntimeError("the spool is closed")
            self._pending.append((lines, rows, future))
            self._cond.notify()
        return future

    # ---- the writer
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if not self._pending and self._stop:
                    return
            if self.commit_seconds > 0:
                time.sleep(self.commit_seconds)  # let a group gather
            with self._cond:
                batch, self._pending = self._pending, []
            try:
                with self._file_lock:
                    fh = self._current()
                    fh.write(b"".join(line for lines, _, _ in batch for line in lines))
                    fh.flush()
                    os.fdatasync(fh.fileno())
            except Exception as error:
                log.error("prediction-log spool write failed: %s", error)
                for _, _, future in batch:
                    future.set_exception(error)
                continue
            self.commits += 1
            self.rows_appended += sum(rows for _, rows, _ in batch)
            for _, _, future in batch:
                future.set_result(None)

    def _current(self):
        if self._file is None:
            self._seq += 1
            path = self.directory / f"{self.instance}-{self._seq:08d}{OPEN}"
            self._file = open(path, "ab")  # noqa: SIM115 (closed by rotate)
        return self._file

    # ---- draining
    def rotate(self) -> list[Path]:
        """Close the current segment; every closed segment, oldest first."""
        with self._file_lock:
            self._close_segment()
        return sorted(self.directory.glob(f"*{DONE}"), key=lambda p: p.stat().st_mtime_ns)

    @staticmethod
    def read(path: Path) -> list:
        """The records of a closed segment (each line's JSON value); a torn last line (a crash
        mid-write) is skipped."""
        rows = []
        for number, line in enumerate(path.read_bytes().splitlines(keepends=True)):
            if not line.endswith(b"\n"):
                log.warning("spool %s: torn line %d skipped (crash mid-write)", path.name, number)
                continue
            rows.append(json.loads(line))
        return rows

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the segment (still owned: drain it,
        then :meth:`release`)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=30)
        with self._file_lock:
            self._close_segment()

    def _close_segment(self) -> None:
        """The current segment, if any, becomes a closed (``.done``) one (under _file_lock)."""
        if self._file is not None:
            self._file.close()
            path = Path(self._file.name)
            self._file = None
            path.rename(path.with_suffix(DONE))

    def release(self) -> None:
        """Let another process own the directory."""
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
