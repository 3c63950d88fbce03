"""Stopping a child and everything it started: its whole process group, stragglers included.

The Dagster daemon, the webserver and the scoring service are started in sessions of their own
(`start_new_session`), so a signal to the group reaches their code servers and run workers too.
Waiting for the group's leader alone is not enough: Dagster's code server catches SIGTERM, and
its shutdown can wait forever (two `make demo` runs of 2026-12-07 each left one behind, 325 MB,
still alive half an hour later: its termination thread waiting, its cleanup thread gone; most
likely it had a run worker that died with the group, and the next demo removed the instance its
cleanup reads). So after the leader, the rest of the group is waited for a little, and what is
left then is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def group_alive(pgid: int) -> bool:
    """Whether a running process of the group is left. Zombies do not count: the group's
    orphans are reaped by PID 1, which on some machines takes its time (a container's or a VM's
    init), and a zombie holds nothing. Without /proc, any process of the group counts."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        fields = stat_fields(entry.name) if entry.name.isdigit() else None
        if fields is not None and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command, the state first (``proc(5)``'s
    third field), or None if there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()  # the command may hold spaces and parens


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB (Linux: ``ru_maxrss`` is in kB). The
    steps of a Dagster run share its process, so the step after which this jumps is the one
    that needs the memory (the training assets report it)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def default_interrupts() -> None:
    """In a child, before exec (``preexec_fn``): SIGINT and SIGTERM back to their default actions.

    A process started from a background shell (``make demo &``, ``nohup``) inherits SIGINT
    ignored, and an ignored signal stays ignored across exec; Python then leaves SIGINT alone,
    and every Dagster process maps SIGTERM onto SIGINT's handler at start. So the daemon, its
    code servers and run workers would ignore the SIGTERM that stops them and the parent-death
    signal that is sent if their parent dies: :func:`stop_group` would wait out its grace and
    SIGKILL them."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_group(
    process: subprocess.Popen,
    grace: float = 30.0,
    sig: int = signal.SIGTERM,
    straggler_grace: float = 3.0,
) -> None:
    """Send ``sig`` to the group ``process`` leads and wait up to ``grace`` seconds for the
    leader; then up to ``straggler_grace`` more for the rest of the group, which got the same
    signal; then SIGKILL whatever is left. A group already gone is fine.

    The stragglers' wait is short on purpose: a Dagster code server answers SIGTERM only when
    its heartbeat times out (20 s after its daemon is gone: every `make demo` waited that long
    with the group's whole grace) or never (above); the leader is what was asked to stop."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    deadline = time.monotonic() + straggler_grace
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 5
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
