"""Stopping a process group: the leader, and what it started that outlives it or ignores
SIGTERM (a Dagster code server whose shutdown hangs); zombies do not keep a group alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fraudloop.core.processes import default_interrupts, group_alive, stat_fields, stop_group

# a leader that starts a child (which ignores SIGTERM if told to), prints its pid, then waits
LEADER = """
import signal, subprocess, sys, time
body = "import signal, time\\n"
if sys.argv[1] == "stubborn":
    body += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
body += "print('armed', flush=True)\\ntime.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", body], stdout=subprocess.PIPE, text=True)
child.stdout.readline()
print(child.pid, flush=True)
time.sleep(600)
"""


def start_group(kind: str) -> tuple[subprocess.Popen, int]:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, kind],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_interrupts,  # as the project starts its children (see the last test)
    )
    return leader, int(leader.stdout.readline())


def running(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    leader, child = start_group("stubborn")
    assert group_alive(leader.pid) and running(child)
    stop_group(leader, grace=1.0)
    assert leader.returncode == -signal.SIGTERM  # the leader went at once, politely
    assert not running(child)
    assert not group_alive(leader.pid)


def test_a_polite_group_goes_with_sigterm():
    leader, child = start_group("polite")
    stop_group(leader, grace=30.0)
    assert leader.returncode == -signal.SIGTERM
    assert not running(child)
    assert not group_alive(leader.pid)


def test_a_group_already_gone_is_fine():
    leader = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    leader.wait()
    stop_group(leader, grace=1.0)
    assert not group_alive(leader.pid)


def test_a_zombie_does_not_keep_its_group_alive():
    """An exited process not yet reaped (here: ours, until we wait) holds nothing."""
    zombie = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    deadline = time.monotonic() + 30
    while stat_fields(zombie.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stat_fields(zombie.pid)[0] == "Z"
    assert not group_alive(zombie.pid)
    zombie.wait()


def test_the_stat_fields_survive_a_command_name_with_spaces_and_parens(tmp_path):
    odd = tmp_path / "a (b) c"
    odd.symlink_to(sys.executable)
    proc = subprocess.Popen([str(odd), "-c", "import time; time.sleep(30)"])
    try:
        fields = stat_fields(proc.pid)
        assert fields is not None and fields[0] in ("R", "S") and int(fields[1]) == os.getpid()
    finally:
        proc.kill()
        proc.wait()
    assert stat_fields(10**9) is None


def test_a_dagster_child_of_a_background_shell_answers_sigterm_with_default_interrupts():
    """Started with SIGINT ignored (what `make demo &` or nohup passes on), a Dagster process
    maps SIGTERM onto SIGINT's disposition at start and so ignores it; `default_interrupts`
    before exec gives it back."""
    probe = (
        "import signal\n"
        "from dagster._utils.interrupts import setup_interrupt_handlers\n"
        "setup_interrupt_handlers()\n"
        "print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN)\n"
    )

    def sigterm_ignored(preexec) -> str:
        def start() -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the background shell's doing
            if preexec is not None:
                preexec()

        done = subprocess.run(
            [sys.executable, "-c", probe],
            preexec_fn=start,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return done.stdout.strip()

    assert sigterm_ignored(None) == "True"
    assert sigterm_ignored(default_interrupts) == "False"
